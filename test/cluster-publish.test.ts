// The outbox through a stream leader's death: a service on a three-node
// cluster (test/nats-cluster.ts), its stream with 3 replicas, writes events
// steadily while the node leading the stream is killed (kill -9). Publishes
// during the election find no leader (no responders, or a timeout); the relay
// keeps the rows and publishes them again under the same Nats-Msg-Id until a
// new leader takes them. Every event written is then on the stream exactly
// once.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { customers, streams } from '../subjects/index.ts';
import { withTransaction, writeEvent } from '../services/kit/index.ts';
import { waitFor } from './harness.ts';
import { startServiceOnCluster, type ServiceOnCluster } from './nats-cluster.ts';

let running: ServiceOnCluster;

before(async () => {
  running = await startServiceOnCluster({
    name: 'customers',
    version: '1.0.0',
    description: 'publishes through a leader election',
    emits: [customers.registered],
    build: () => ({ endpoints: [], consumers: [] }),
  });
});

after(() => running?.close());

test('events written while the stream leader is killed are all published, once each', async () => {
  const { cluster, service, nc } = running;
  const stream = streams.CUSTOMERS.name;
  const jsm = await nc.jetstreamManager();
  assert.equal((await jsm.streams.info(stream)).config.num_replicas, 3, 'the stream lives on all three nodes');
  const written: string[] = [];
  let writing = true;
  const writer = (async () => {
    for (let i = 0; writing; i++) {
      // A transaction that fails (PostgreSQL, shared with other runs, out of connections) wrote nothing: not counted.
      const envelope = await withTransaction(service.context.pool, (tx) =>
        writeEvent(tx, customers.registered, { customerId: crypto.randomUUID(), email: `user${i}@cluster.test`, name: `User ${i}` }),
      ).catch(() => undefined);
      if (envelope) written.push(envelope.id);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  await waitFor(() => written.length >= 20, { timeoutMs: 30_000, what: 'events before the kill' });
  const leader = await cluster.streamLeader(stream);
  await cluster.stop(leader, 'SIGKILL');
  const newLeader = await waitFor(
    async () => ((await cluster.streamLeader(stream)) !== leader ? cluster.streamLeader(stream) : undefined),
    {
      timeoutMs: 60_000,
      intervalMs: 200,
      what: 'a new leader of the stream',
    },
  );
  // Some more after the election, then stop writing.
  const mark = written.length;
  await waitFor(() => written.length >= mark + 20, { timeoutMs: 30_000, what: 'events after the election' });
  writing = false;
  await writer;
  await waitFor(async () => (await service.outbox.backlog()) === 0, { timeoutMs: 60_000, intervalMs: 200, what: 'the outbox to empty' });

  const { state } = await jsm.streams.info(stream);
  const ids: string[] = [];
  for (let seq = state.first_seq; seq <= state.last_seq; seq++) {
    ids.push((await jsm.streams.getMessage(stream, { seq })).header.get('Nats-Msg-Id'));
  }
  assert.notEqual(newLeader, leader);
  assert.equal(ids.length, written.length, `${written.length} events written, ${ids.length} on the stream`);
  assert.deepEqual(new Set(ids), new Set(written), 'every event written is on the stream, and nothing else');
});
