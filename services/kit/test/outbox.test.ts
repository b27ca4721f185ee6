// The outbox against a real nats-server and PostgreSQL: an event exists on the
// bus if and only if its transaction committed, under its own id as
// Nats-Msg-Id; rows survive a NATS outage and are published when it is back;
// a commit wakes the relay without waiting for the sweep; a state never
// replaces a newer one in its bucket.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type JetStreamManager, type NatsConnection, type StoredMsg } from 'nats';
import { trace } from '@opentelemetry/api';
import { ContractViolation, customers, type Customer, type Envelope } from '../../../subjects/index.ts';
import { openStateBucket, startTracing, stopTracing, withTransaction, writeEvent, writeStates, type ServiceDefinition } from '../index.ts';
import { dropTestDatabases, startNats, startTestService, waitFor, type TestNats } from '../../../test/harness.ts';

type Running = Awaited<ReturnType<typeof startTestService>>;

let migrations: string;
let nats: TestNats;
let nc: NatsConnection;
let jsm: JetStreamManager;
/** Relay sweeping every 200 ms (the harness default). */
let sweeping: Running;
/** Relay sweeping once a minute: only a wake-up on commit publishes in time. */
let waking: Running;

function emitter(): ServiceDefinition {
  return {
    name: 'customers',
    version: '1.0.0',
    description: 'kit outbox test',
    migrations,
    emits: [customers.registered],
    states: [customers.profiles],
    build: () => ({ endpoints: [], consumers: [] }),
  };
}

let serial = 0;
function registered() {
  serial++;
  return { customerId: crypto.randomUUID(), email: `user${serial}@shop.test`, name: `User ${serial}` };
}

/** Every message now in `stream`. */
async function streamMessages(stream: string): Promise<StoredMsg[]> {
  const { state } = await jsm.streams.info(stream);
  const messages: StoredMsg[] = [];
  if (state.messages === 0) return messages;
  for (let seq = state.first_seq; seq <= state.last_seq; seq++) messages.push(await jsm.streams.getMessage(stream, { seq }));
  return messages;
}

/** Messages of CUSTOMERS whose Nats-Msg-Id is `id`. */
async function published(id: string): Promise<StoredMsg[]> {
  return (await streamMessages('CUSTOMERS')).filter((m) => m.header?.get('Nats-Msg-Id') === id);
}

before(async () => {
  startTracing('kit-outbox-test');
  migrations = await mkdtemp(join(tmpdir(), 'shop-kit-migrations-'));
  nats = await startNats();
  nc = await connect({ servers: nats.url, noAsyncTraces: true, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
  jsm = await nc.jetstreamManager();
  sweeping = await startTestService(emitter(), nats);
  waking = await startTestService(emitter(), nats, { outbox: { sweepMs: 60_000 } });
});

after(async () => {
  await sweeping?.stop();
  await waking?.stop();
  await nc?.close();
  await nats?.cleanup();
  await dropTestDatabases();
  await stopTracing();
  await rm(migrations, { recursive: true, force: true });
});

test('an event written in a committed transaction is published with Nats-Msg-Id = its id', async () => {
  const data = registered();
  const { envelope, traceId } = await trace.getTracer('kit-test').startActiveSpan('register', async (span) => {
    try {
      const envelope = await withTransaction(sweeping.context.pool, (tx) => writeEvent(tx, customers.registered, data));
      return { envelope, traceId: span.spanContext().traceId };
    } finally {
      span.end();
    }
  });
  assert.equal(envelope.type, 'customers.events.registered');
  assert.deepEqual(envelope.data, data);

  const [message, ...more] = await waitFor(
    async () => {
      const found = await published(envelope.id);
      return found.length > 0 && found;
    },
    { what: 'the event in CUSTOMERS' },
  );
  assert.equal(more.length, 0);
  assert.equal(message!.subject, 'customers.events.registered');
  assert.deepEqual(message!.json<Envelope>(), envelope);
  // The trace of the writer continues on the bus.
  assert.match(message!.header.get('traceparent'), new RegExp(`^00-${traceId}-`));
  await waitFor(async () => (await sweeping.outbox.backlog()) === 0, { what: 'the outbox row to go' });
});

test('a rolled-back transaction publishes nothing', async () => {
  let rolledBack: Envelope | undefined;
  await assert.rejects(
    withTransaction(sweeping.context.pool, async (tx) => {
      rolledBack = await writeEvent(tx, customers.registered, registered());
      throw new Error('the state change failed');
    }),
    /the state change failed/,
  );
  assert.ok(rolledBack);
  // A later commit is published; the rolled-back event, never written, is not.
  const later = await withTransaction(sweeping.context.pool, (tx) => writeEvent(tx, customers.registered, registered()));
  await waitFor(async () => (await published(later.id)).length === 1, { what: 'the later event' });
  assert.equal((await published(rolledBack.id)).length, 0);
  assert.equal(await sweeping.outbox.backlog(), 0);
});

test('an event outside its contract is refused and the transaction writes nothing', async () => {
  const before = (await streamMessages('CUSTOMERS')).length;
  await assert.rejects(
    withTransaction(sweeping.context.pool, (tx) => writeEvent(tx, customers.registered, { customerId: 'nope', email: 'x', name: 'X' })),
    ContractViolation,
  );
  const { rows } = await sweeping.context.pool.query('SELECT count(*) AS n FROM outbox');
  assert.equal(rows[0].n, 0);
  const marker = await withTransaction(sweeping.context.pool, (tx) => writeEvent(tx, customers.registered, registered()));
  await waitFor(async () => (await published(marker.id)).length === 1, { what: 'the marker event' });
  assert.equal((await streamMessages('CUSTOMERS')).length, before + 1);
});

test('an event row that cannot be stored fails the commit it rides with, and the whole transaction rolls back', async () => {
  const pool = sweeping.context.pool;
  await pool.query('CREATE TABLE IF NOT EXISTS outbox_test_marks (mark text NOT NULL)');
  const mark = crypto.randomUUID();
  // Written with COMMIT: an id the uuid column refuses fails there, not at writeEvent.
  await assert.rejects(
    withTransaction(pool, async (tx) => {
      await tx.query('INSERT INTO outbox_test_marks (mark) VALUES ($1)', [mark]);
      await writeEvent(tx, customers.registered, registered(), 'not-a-uuid');
    }),
    /uuid/,
  );
  const { rows } = await pool.query('SELECT count(*)::int AS n FROM outbox_test_marks WHERE mark = $1', [mark]);
  assert.equal(rows[0].n, 0);
  assert.equal(await sweeping.outbox.backlog(), 0);
});

test('an event written in a transaction of the caller’s own making is stored at once and published after its commit', async () => {
  const client = await sweeping.context.pool.connect();
  try {
    await client.query('BEGIN');
    const event = await writeEvent(client, customers.registered, registered());
    const { rows } = await client.query('SELECT count(*)::int AS n FROM outbox WHERE id = $1', [event.id]);
    assert.equal(rows[0].n, 1);
    await client.query('COMMIT');
    await waitFor(async () => (await published(event.id)).length === 1, { what: 'the event' });
  } finally {
    client.release();
  }
});

test('writing the same event id twice publishes it once', async () => {
  const id = crypto.randomUUID();
  await withTransaction(sweeping.context.pool, async (tx) => {
    await writeEvent(tx, customers.registered, registered(), id);
    await writeEvent(tx, customers.registered, registered(), id);
  });
  await waitFor(async () => (await published(id)).length === 1, { what: 'the event' });
  // Written again after publication: JetStream's duplicate window drops it.
  await withTransaction(sweeping.context.pool, (tx) => writeEvent(tx, customers.registered, registered(), id));
  const marker = await withTransaction(sweeping.context.pool, (tx) => writeEvent(tx, customers.registered, registered()));
  await waitFor(async () => (await published(marker.id)).length === 1 && (await sweeping.outbox.backlog()) === 0, {
    what: 'the outbox to empty',
  });
  assert.equal((await published(id)).length, 1);
});

test('the relay is woken by commit, without waiting for its sweep', async () => {
  const envelope = await withTransaction(waking.context.pool, (tx) => writeEvent(tx, customers.registered, registered()));
  // The sweep of this relay is a minute away; the wait is far shorter.
  const found = await waitFor(
    async () => {
      const messages = await published(envelope.id);
      return messages.length > 0 && messages;
    },
    { timeoutMs: 10_000, what: 'the event, published on commit' },
  );
  assert.equal(found.length, 1);
  assert.equal(await waking.outbox.backlog(), 0);
});

test('events written while NATS is down are published once it is back', { timeout: 40_000 }, async () => {
  const { port, storeDir } = nats;
  await nats.stop();

  const written: Envelope[] = [];
  for (let i = 0; i < 3; i++) {
    written.push(await withTransaction(sweeping.context.pool, (tx) => writeEvent(tx, customers.registered, registered())));
  }
  // The state changes committed; their events wait in the outbox.
  assert.equal(await sweeping.outbox.backlog(), 3);

  nats = await startNats({ storeDir, port });
  await waitFor(
    async () => {
      const messages = await streamMessages('CUSTOMERS');
      return written.every((e) => messages.some((m) => m.header.get('Nats-Msg-Id') === e.id));
    },
    { timeoutMs: 30_000, intervalMs: 200, what: 'the events written during the outage' },
  );
  await waitFor(async () => (await sweeping.outbox.backlog()) === 0, { what: 'the outbox to empty' });
  for (const envelope of written) {
    const copies = await published(envelope.id);
    assert.equal(copies.length, 1, `${envelope.id} published once`);
    assert.deepEqual(copies[0]!.json<Envelope>(), envelope);
  }
});

/** A customer of its own for a state test; its states differ by name and version. */
function stateCustomer(email: string): Customer {
  return { id: crypto.randomUUID(), email, name: 'Version 0', role: 'customer', createdAt: new Date().toISOString() };
}

/** Writes one version of the customer's state through the outbox and waits until the relay has put (or skipped) it. */
async function putThroughRelay(customer: Customer, version: number): Promise<void> {
  await withTransaction(sweeping.context.pool, (tx) =>
    writeStates(tx, customers.profiles, [{ ...customer, name: `Version ${version}`, version }]),
  );
  await waitFor(async () => (await sweeping.outbox.backlog()) === 0, { what: `version ${version} through the relay` });
}

test('a state is put over an older one only: published newest first, the bucket keeps the newest', async () => {
  const kv = await openStateBucket(nc, customers.profiles);
  const customer = stateCustomer('cas@shop.test');
  const put = (version: number) => putThroughRelay(customer, version);
  const held = async () => {
    const entry = await kv.get(customer.id);
    return entry && entry.length > 0 ? entry.json<Envelope<Customer>>().data : undefined;
  };

  // Version 2 first, as when another instance's relay took it in an earlier pass; then version 1.
  await put(2);
  assert.equal((await held())?.name, 'Version 2');
  const revision = (await kv.get(customer.id))?.revision;
  await put(1);
  assert.equal((await held())?.name, 'Version 2', 'the older state is not put');
  assert.equal((await kv.get(customer.id))?.revision, revision, 'nor written at all');

  await put(3);
  assert.equal((await held())?.name, 'Version 3', 'a newer state is put');
  // An operator's delete leaves a marker without a version: the next state goes over it.
  await kv.delete(customer.id);
  await put(4);
  assert.equal((await held())?.name, 'Version 4');
});

test('several states of one key in one pass: only the newest is put', async () => {
  const kv = await openStateBucket(nc, customers.profiles);
  const customer = stateCustomer('pass@shop.test');
  const before = (await jsm.streams.info('KV_customers')).state.last_seq;
  // One transaction, so one relay pass takes all five (newest in the middle).
  const versions = [1, 2, 5, 3, 4].map((version) => ({ ...customer, name: `Version ${version}`, version }));
  await withTransaction(sweeping.context.pool, (tx) => writeStates(tx, customers.profiles, versions));
  await waitFor(async () => (await sweeping.outbox.backlog()) === 0, { what: 'the states through the relay' });
  assert.equal((await kv.get(customer.id))?.json<Envelope<Customer>>().data.name, 'Version 5');
  assert.equal((await jsm.streams.info('KV_customers')).state.last_seq, before + 1, 'one message written');
});

test('a put that finds another writer there since its own last put reads the key again, then puts or skips', async () => {
  const kv = await openStateBucket(nc, customers.profiles);
  const js = nc.jetstream();
  const customer = stateCustomer('other@shop.test');
  const subject = `$KV.customers.${customer.id}`;
  const put = (version: number) => putThroughRelay(customer, version);
  /** Another writer (another instance's relay) puts straight into the bucket. */
  const putElsewhere = (version: number) =>
    js.publish(
      subject,
      JSON.stringify({
        id: crypto.randomUUID(),
        type: 'customers',
        occurredAt: new Date().toISOString(),
        data: { ...customer, name: `Version ${version}`, version },
      }),
    );
  const held = async () => (await kv.get(customer.id))?.json<Envelope<Customer>>().data.name;

  await put(1); // the relay remembers its put of the key
  await putElsewhere(2);
  await put(3); // expected its own put, found another: reads, 3 > 2, puts
  assert.equal(await held(), 'Version 3');
  await putElsewhere(5);
  await put(4); // reads, 4 < 5: skipped
  assert.equal(await held(), 'Version 5');
});
