// A service's consumer when its leader moves: a service on a three-node
// cluster (test/nats-cluster.ts) consumes events of a stream with 3 replicas;
// the consumer's leader steps down (what a node in lame duck mode does with
// each of its leaderships), then the node of the new leader is killed. The new
// leader answers the pulls waiting at the old one "409 Leadership Change";
// the kit pulls afresh at once (services/kit/consumer.ts, pullAfresh), where
// nats.js alone would wait for two missed idle heartbeats, 30-45 s. Each
// time, an event written after the move is handled well before that.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { JetStreamManager } from 'nats';
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
