// The consumer runner against a real nats-server and PostgreSQL: inbox
// idempotency, nak and retry, and dead letters for poison and for events that
// keep failing, while the service goes on answering requests; events taken
// in batches (several per transaction) keep every one of those rules.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, headers as natsHeaders, type JetStreamClient, type JetStreamManager, type NatsConnection, type StoredMsg } from 'nats';
import { customers, type Customer, type Envelope } from '../../../subjects/index.ts';
import { DeadLetterHeaders, RpcClient, endpoint, leaderElectedSubject, on, type ServiceDefinition } from '../index.ts';
import { dropTestDatabases, startNats, startTestService, waitFor, type TestNats } from '../../../test/harness.ts';

const DURABLE = 'customers-test';
const MAX_DELIVER = 3;

let migrations: string;
let nats: TestNats;
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
let client: RpcClient;
let running: Awaited<ReturnType<typeof startTestService>>;

/** Handler invocations per event id, committed or not. */
const invocations = new Map<string, number>();
/** While set, events named `hold` wait for it: they keep the consumer's transactions busy. */
let holdGate: Promise<void> | undefined;
const BATCH = 4;
const CONCURRENCY = 8;

// The handler's behaviour is chosen by the event's `name`.
const consumerService: ServiceDefinition = {
  name: 'customers',
  version: '1.0.0',
  description: 'kit consumer test',
  migrations: '', // set in before()
  emits: [],
  build: () => ({
    endpoints: [
      endpoint(
        customers.get,
        async ({ id }): Promise<Customer> => ({
          id,
          email: 'ann@shop.test',
          name: 'Ann',
          role: 'customer',
          createdAt: new Date().toISOString(),
        }),
      ),
    ],
    consumers: [
      on(
        customers.registered,
        'test',
        async (event, tx, { delivery }) => {
          invocations.set(event.id, (invocations.get(event.id) ?? 0) + 1);
          if (event.data.name === 'fail-always') throw new Error('broken for good');
          // Written before a possible failure: a failed attempt must leave no trace.
          await tx.query('INSERT INTO applied (event_id, delivery) VALUES ($1, $2)', [event.id, delivery]);
          if (event.data.name === 'fail-once' && delivery === 1) throw new Error('database hiccup');
          if (event.data.name === 'hold') await holdGate;
        },
        { batch: BATCH },
      ),
    ],
  }),
};

function envelope(name: string): Envelope {
  return {
    id: crypto.randomUUID(),
    type: 'customers.events.registered',
    occurredAt: new Date().toISOString(),
    data: { customerId: crypto.randomUUID(), email: 'ann@shop.test', name },
  };
}

/** Publishes raw bytes on the event subject with a header of our own; resolves with the stream sequence. */
async function publish(payload: string | object, msgID: string = crypto.randomUUID()): Promise<number> {
  const headers = natsHeaders();
  headers.set('X-Test', 'carried');
  const data = Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload));
  const ack = await js.publish(customers.registered.subject, data, { msgID, headers });
  assert.equal(ack.duplicate, false);
  return ack.seq;
}

async function applied(eventId: string): Promise<{ delivery: number }[]> {
  const { rows } = await running.context.pool.query<{ delivery: number }>('SELECT delivery FROM applied WHERE event_id = $1', [eventId]);
  return rows;
}

/** Waits until the consumer has acknowledged (or terminated) everything up to `seq`. */
async function settledUpTo(seq: number): Promise<void> {
  await waitFor(
    async () => {
      const info = await jsm.consumers.info('CUSTOMERS', DURABLE);
      return info.ack_floor.stream_seq >= seq && info.num_ack_pending === 0;
    },
    { what: `the consumer to settle up to ${seq}` },
  );
}

async function deadLetterOf(seq: number): Promise<StoredMsg> {
  return waitFor(
    async () => {
      const { state } = await jsm.streams.info('DLQ');
      if (state.messages === 0) return undefined;
      for (let s = state.first_seq; s <= state.last_seq; s++) {
        const message = await jsm.streams.getMessage('DLQ', { seq: s });
        if (message.header.get(DeadLetterHeaders.sequence) === String(seq)) return message;
      }
      return undefined;
    },
    { what: `the dead letter of message ${seq}` },
  );
}

before(async () => {
  migrations = await mkdtemp(join(tmpdir(), 'shop-kit-migrations-'));
  await writeFile(
    join(migrations, '001_applied.sql'),
    // No key on purpose: an event applied twice shows as two rows. `tx` tells which events shared a transaction.
    'CREATE TABLE applied (event_id text NOT NULL, delivery int NOT NULL, tx bigint NOT NULL DEFAULT txid_current());',
  );
  nats = await startNats();
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  js = nc.jetstream();
  jsm = await nc.jetstreamManager();
  client = new RpcClient(nc, { timeoutMs: 2000 });
  running = await startTestService({ ...consumerService, migrations }, nats, {
    // ack_wait far beyond every wait below: a redelivery in time can only come from a nak.
    consumer: { maxDeliver: MAX_DELIVER, ackWaitMs: 60_000, concurrency: CONCURRENCY, backoffMs: 50, maxBackoffMs: 200 },
  });
});

after(async () => {
  client?.close();
  await running?.stop();
  await nc?.close();
  await nats?.cleanup();
  await dropTestDatabases();
  await rm(migrations, { recursive: true, force: true });
});

test('the consumer is durable, named <service>-<handler>, filtered on its subject', async () => {
  assert.deepEqual(
    running.consumers.map((c) => c.durable),
    [DURABLE],
  );
  const info = await jsm.consumers.info('CUSTOMERS', DURABLE);
  assert.equal(info.config.filter_subject, 'customers.events.registered');
  // The runner enforces the delivery limit itself (see consumer.ts), so the server never gives up first.
  assert.equal(info.config.max_deliver, -1);
});

test('an event is applied once, in the same transaction as its inbox record', async () => {
  const event = envelope('ok');
  const seq = await publish(event, event.id);
  await settledUpTo(seq);
  assert.deepEqual(await applied(event.id), [{ delivery: 1 }]);
  const { rows } = await running.context.pool.query('SELECT consumer FROM inbox WHERE event_id = $1', [event.id]);
  assert.deepEqual(rows, [{ consumer: DURABLE }]);
});

test('the same envelope delivered twice (different Nats-Msg-Id) is applied once', async () => {
  const event = envelope('ok');
  await publish(event, `${event.id}-a`);
  const second = await publish(event, `${event.id}-b`);
  await settledUpTo(second);
  assert.equal((await applied(event.id)).length, 1);
  // The second copy was acknowledged without reaching the handler.
  assert.equal(invocations.get(event.id), 1);
});

test('a handler failing transiently is retried with nak and succeeds, its failed attempt undone', async () => {
  const event = envelope('fail-once');
  const seq = await publish(event, event.id);
  await settledUpTo(seq);
  assert.equal(invocations.get(event.id), 2);
  // Only the second attempt's write survived.
  assert.deepEqual(await applied(event.id), [{ delivery: 2 }]);
});

for (const [kind, payload, reason] of [
  ['bad JSON', '{"id": "x", "type": ', /poison: .*JSON/],
  ['an envelope outside the contract', { id: 'e1', type: 'customers.events.registered', data: {} }, /poison: .*envelope/],
  [
    'data outside the contract',
    { ...envelope('ok'), data: { customerId: 'not-a-uuid', email: 'ann@shop.test', name: 'Ann' } },
    /poison: .*event/,
  ],
  ['an envelope of another type', { ...envelope('ok'), type: 'orders.events.placed' }, /poison: .*orders\.events\.placed/],
] as const) {
  test(`a poison event (${kind}) goes to DLQ at once and the service keeps serving`, async () => {
    const invoked = [...invocations.values()].reduce((a, b) => a + b, 0);
    const original = typeof payload === 'string' ? payload : JSON.stringify(payload);
    const seq = await publish(payload);
    const dead = await deadLetterOf(seq);

    assert.equal(dead.subject, `dlq.CUSTOMERS.${DURABLE}`);
    assert.equal(Buffer.from(dead.data).toString(), original);
    assert.match(dead.header.get(DeadLetterHeaders.error), reason);
    assert.equal(dead.header.get(DeadLetterHeaders.subject), 'customers.events.registered');
    assert.equal(dead.header.get(DeadLetterHeaders.stream), 'CUSTOMERS');
    assert.equal(dead.header.get(DeadLetterHeaders.consumer), DURABLE);
    assert.equal(dead.header.get(DeadLetterHeaders.deliveries), '1');
    assert.equal(dead.header.get('X-Test'), 'carried');
    assert.equal(dead.header.get('Nats-Msg-Id'), `${DURABLE}:${seq}`);
    // Retrying cannot help: the handler never saw it, and it is no longer pending.
    await settledUpTo(seq);
    assert.equal(
      [...invocations.values()].reduce((a, b) => a + b, 0),
      invoked,
    );

    const reply = await client.call(customers.get, { id: '00000000-0000-4000-8000-000000000001' });
    assert.equal(reply.name, 'Ann');
    const next = envelope('ok');
    await settledUpTo(await publish(next, next.id));
    assert.equal((await applied(next.id)).length, 1);
  });
}

test('a handler failing every time ends in DLQ after maxDeliver, with its error', async () => {
  const event = envelope('fail-always');
  const seq = await publish(event, event.id);
  const dead = await deadLetterOf(seq);
  assert.equal(dead.subject, `dlq.CUSTOMERS.${DURABLE}`);
  assert.equal(dead.header.get(DeadLetterHeaders.error), 'failed: broken for good');
  assert.equal(dead.header.get(DeadLetterHeaders.deliveries), String(MAX_DELIVER));
  assert.deepEqual(JSON.parse(Buffer.from(dead.data).toString()), event);
  await settledUpTo(seq);
  assert.equal(invocations.get(event.id), MAX_DELIVER);
  assert.equal((await applied(event.id)).length, 0);
  // Not recorded as handled: a replay from DLQ would be applied.
  const { rows } = await running.context.pool.query('SELECT 1 FROM inbox WHERE event_id = $1', [event.id]);
  assert.equal(rows.length, 0);

  const reply = await client.call(customers.get, { id: '00000000-0000-4000-8000-000000000002' });
  assert.equal(reply.id, '00000000-0000-4000-8000-000000000002');
});

test('events arriving together are handled several per transaction, each applied once, a failing one alone', async () => {
  let release!: () => void;
  holdGate = new Promise<void>((resolve) => (release = resolve));
  try {
    // Both transactions the runner may run at once (concurrency / batch) wait on the gate...
    const holds = [envelope('hold'), envelope('hold')];
    for (const hold of holds) {
      await publish(hold, hold.id);
      await waitFor(() => invocations.has(hold.id), { what: 'the held event to be taken' });
    }
    // ...so that these queue up and are taken together once it opens.
    const burst = Array.from({ length: 14 }, () => envelope('ok'));
    const failing = envelope('fail-once');
    const repeated = burst[3]!;
    let last = 0;
    for (const event of [...burst.slice(0, 7), failing, ...burst.slice(7)]) last = await publish(event, event.id);
    last = await publish(repeated, `${repeated.id}-again`);
    await waitFor(async () => (await jsm.consumers.info('CUSTOMERS', DURABLE)).num_ack_pending >= holds.length + CONCURRENCY, {
      what: 'the burst to be delivered while the consumer is busy',
    });
    release();
    await settledUpTo(last);

    for (const event of [...holds, ...burst]) assert.equal((await applied(event.id)).length, 1, `${event.id} applied once`);
    assert.deepEqual(
      (await applied(failing.id)).map((row) => row.delivery),
      [2],
    );
    const { rows } = await running.context.pool.query<{ size: number }>(
      'SELECT count(*)::int AS size FROM applied WHERE event_id = ANY($1) GROUP BY tx',
      [burst.map((event) => event.id)],
    );
    assert.ok(
      rows.some((row) => row.size > 1),
      `some transaction applied several events: ${JSON.stringify(rows)}`,
    );
    assert.ok(
      rows.every((row) => row.size <= BATCH),
      `no transaction applied more than ${BATCH}`,
    );
  } finally {
    release();
    holdGate = undefined;
  }
});

test('the advisory of a new leader of the consumer makes it pull afresh at once; every event is still applied once', async () => {
  // Pulls are requests on the JetStream API: counted here as the server receives them.
  let pulls = 0;
  const watcher = nc.subscribe(`$JS.API.CONSUMER.MSG.NEXT.CUSTOMERS.${DURABLE}`, { callback: () => pulls++ });
  await nc.flush();
  const events: Envelope[] = [];
  let lastSeq = 0;
  for (let round = 0; round < 3; round++) {
    const before = pulls;
    // As the server announces an election (a test's connection may publish it: the test server has no users).
    nc.publish(
      leaderElectedSubject('CUSTOMERS', DURABLE),
      JSON.stringify({ type: 'io.nats.jetstream.advisory.v1.consumer_leader_elected' }),
    );
    // Without the advisory, nats.js would pull again only when its pull expires (30 s).
    await waitFor(() => pulls > before, { timeoutMs: 5_000, what: `a fresh pull after advisory ${round + 1}` });
    const event = envelope('ok');
    lastSeq = await publish(event, event.id);
    events.push(event);
  }
  watcher.unsubscribe();
  await settledUpTo(lastSeq);
  for (const event of events) assert.deepEqual(await applied(event.id), [{ delivery: 1 }]);
});
