// A service's consumer when its leader moves: a service on a three-node
// cluster (test/nats-cluster.ts) consumes events of a stream with 3 replicas;
// the consumer's leader steps down (what a node in lame duck mode does with
// each of its leaderships), then the node of the new leader is killed. The new
// leader answers the pulls waiting at the old one "409 Leadership Change";
// the kit pulls afresh at once (services/kit/consumer.ts, pullAfresh), where
// nats.js alone would wait for two missed idle heartbeats, 30-45 s. Each
// time, an event written after the move is handled well before that. Last,
// the node the service is connected to enters lame duck mode: the service
// moves to another node at once (services/kit/nats.ts), before the node
// closes any of its other clients, and takes events from there.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type JetStreamManager, type NatsConnection } from 'nats';
import { customers, streams } from '../subjects/index.ts';
import { on, withTransaction, writeEvent } from '../services/kit/index.ts';
import { waitFor } from './harness.ts';
import { startServiceOnCluster, type ServiceOnCluster } from './nats-cluster.ts';

const DURABLE = 'customers-moves';
/** Below nats.js's own recovery (two missed idle heartbeats of 15 s): only a fresh pull is this quick. */
const SOON_MS = 20_000;

let running: ServiceOnCluster;
let jsm: JetStreamManager;
const handled = new Set<string>();

before(async () => {
  running = await startServiceOnCluster({
    name: 'customers',
    version: '1.0.0',
    description: 'consumes through leader moves',
    emits: [customers.registered],
    build: () => ({
      endpoints: [],
      consumers: [
        on(customers.registered, 'moves', async (event) => {
          handled.add(event.data.customerId);
        }),
      ],
    }),
  });
  jsm = await running.nc.jetstreamManager();
});

after(() => running?.close());

/** Writes one event through the service's outbox and waits until its consumer has handled it. */
async function handledSoon(what: string): Promise<void> {
  const customerId = crypto.randomUUID();
  await waitFor(
    () =>
      withTransaction(running.service.context.pool, (tx) =>
        writeEvent(tx, customers.registered, { customerId, email: `${customerId}@cluster.test`, name: 'Moved' }),
      ),
    { timeoutMs: 30_000, what: 'an event written' },
  );
  await waitFor(() => handled.has(customerId), { timeoutMs: SOON_MS, intervalMs: 50, what: `the event handled ${what}` });
}

async function consumerLeader(): Promise<string> {
  return waitFor(async () => (await jsm.consumers.info(streams.CUSTOMERS.name, DURABLE)).cluster?.leader || undefined, {
    timeoutMs: 60_000,
    intervalMs: 200,
    what: 'a leader of the consumer',
  });
}

test('a consumer takes events at once after its leader steps down, and after its leader is killed', async () => {
  const { cluster, nc } = running;
  await handledSoon('before any move');

  const first = await consumerLeader();
  // Asked again while the leader stays where it was: on a busy machine the answer can
  // outlast the request's timeout although the step-down happened (the next look tells).
  const second = await waitFor(
    async () => {
      const leader = await consumerLeader();
      if (leader !== first) return leader;
      const answer = await nc
        .request(`$JS.API.CONSUMER.LEADER.STEPDOWN.${streams.CUSTOMERS.name}.${DURABLE}`, '', { timeout: 5_000 })
        .catch(() => undefined);
      if (answer && !/"success":true/.test(answer.string())) assert.fail(`the step-down was refused: ${answer.string()}`);
      return undefined;
    },
    { timeoutMs: 60_000, intervalMs: 200, what: 'another leader of the consumer after a step-down' },
  );
  await handledSoon('after the step-down');

  await cluster.stop(second, 'SIGKILL');
  await waitFor(async () => ((await consumerLeader()) !== second ? true : undefined), {
    timeoutMs: 60_000,
    intervalMs: 200,
    what: 'a leader of the consumer elected after the kill',
  });
  await handledSoon('after its leader was killed');
});

test('a node entering lame duck mode: the service moves off it before the node closes any other client, and consumes on', async () => {
  const { cluster, service } = running;
  // The node the last test killed is back: two of three would lose their quorum with one in lame duck mode.
  for (const name of cluster.names) if (!cluster.running().includes(name)) await cluster.restart(name);
  await handledSoon('with every node back');
  const node = cluster.nodeAt(service.context.nc.getServer())!;
  assert.ok(node, `the service's server ${service.context.nc.getServer()} is a node of the cluster`);

  // Idle clients of that node alone: it closes its clients one by one over its lame duck duration
  // (30 s in nats.conf), in no particular order. A service left to be closed like them would
  // rarely be first of 31; one that moves when told is.
  const idle: { nc: NatsConnection; closed: boolean }[] = [];
  for (let i = 0; i < 30; i++) {
    const nc = await connect({ servers: cluster.urlOf(node), reconnect: false, noAsyncTraces: true });
    const client = { nc, closed: false };
    void nc.closed().then(() => (client.closed = true));
    idle.push(client);
  }
  const exited = cluster.stop(node, 'SIGUSR2');
  try {
    const movedTo = await waitFor(
      () => {
        const now = cluster.nodeAt(service.context.nc.getServer());
        return service.context.nc.isClosed() || now === node ? undefined : now;
      },
      { timeoutMs: 60_000, intervalMs: 20, what: `the service to move off ${node}` },
    );
    const closedBefore = idle.filter((client) => client.closed).length;
    assert.equal(closedBefore, 0, `the service moved to ${movedTo} after ${closedBefore} of the node's 30 idle clients were closed`);
    await handledSoon(`after ${node} entered lame duck mode`);
  } finally {
    await Promise.all(idle.map((client) => client.nc.close().catch(() => {})));
    await exited;
  }
});
