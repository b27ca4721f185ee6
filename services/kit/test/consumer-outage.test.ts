// The consumer runner while its database refuses connections, as during a
// PostgreSQL restart or failover: events taken in batches fail before their
// handler runs (the pool cannot connect), the process lives on, and once the
// database is back every event is applied exactly once.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { connect, type JetStreamClient, type JetStreamManager, type NatsConnection } from 'nats';
import { customers, type Envelope } from '../../../subjects/index.ts';
import { onBatch, type ServiceDefinition } from '../index.ts';
import { dropTestDatabases, startNats, startTestService, waitFor, type TestNats } from '../../../test/harness.ts';

const DURABLE = 'customers-outage';
const EVENTS = 300;
const BATCH = 16;

let migrations: string;
let nats: TestNats;
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
let running: Awaited<ReturnType<typeof startTestService>>;
/** A connection to the server's `postgres` database, to switch the service's database off and on. */
let admin: pg.Client;
let database: string;
/** What would have ended a service process: Node exits on an unhandled rejection. */
const unhandled: unknown[] = [];
const recordUnhandled = (reason: unknown) => unhandled.push(reason);

const service: ServiceDefinition = {
  name: 'customers',
  version: '1.0.0',
  description: 'kit consumer outage test',
  migrations: '', // set in before()
  emits: [],
  build: () => ({
    endpoints: [],
    consumers: [
      onBatch(
        customers.registered,
        'outage',
        async (events, tx) => {
          await tx.query('INSERT INTO applied (event_id) SELECT unnest($1::text[])', [events.map(({ event }) => event.id)]);
        },
        { batch: BATCH },
      ),
    ],
  }),
};

function envelope(): Envelope {
  return {
    id: crypto.randomUUID(),
    type: 'customers.events.registered',
    occurredAt: new Date().toISOString(),
    data: { customerId: crypto.randomUUID(), email: 'ann@shop.test', name: 'Ann' },
  };
}

/** What a PostgreSQL restart does to a database: no new connections, the open ones ended. */
async function refuseConnections(): Promise<void> {
  await admin.query(`ALTER DATABASE ${pg.escapeIdentifier(database)} WITH ALLOW_CONNECTIONS false`);
  await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [database]);
}

async function allowConnections(): Promise<void> {
  await admin.query(`ALTER DATABASE ${pg.escapeIdentifier(database)} WITH ALLOW_CONNECTIONS true`);
}

before(async () => {
  process.on('unhandledRejection', recordUnhandled);
  migrations = await mkdtemp(join(tmpdir(), 'shop-kit-migrations-'));
  // No key on purpose: an event applied twice shows as two rows.
  await writeFile(join(migrations, '001_applied.sql'), 'CREATE TABLE applied (event_id text NOT NULL);');
  nats = await startNats();
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  js = nc.jetstream();
  jsm = await nc.jetstreamManager();
  running = await startTestService({ ...service, migrations }, nats, {
    // Deliveries enough to outlast the outage: nothing may go to DLQ here.
    consumer: { maxDeliver: 1000, ackWaitMs: 60_000, concurrency: 64, backoffMs: 50, maxBackoffMs: 300 },
  });
  database = decodeURIComponent(new URL(running.databaseUrl).pathname.slice(1));
  const adminUrl = new URL(running.databaseUrl);
  adminUrl.pathname = '/postgres';
  admin = new pg.Client({ connectionString: adminUrl.toString() });
  await admin.connect();
});

after(async () => {
  process.off('unhandledRejection', recordUnhandled);
  if (admin) await allowConnections().catch(() => {});
  await admin?.end();
  await running?.stop();
  await nc?.close();
  await nats?.cleanup();
  await dropTestDatabases();
  await rm(migrations, { recursive: true, force: true });
});

test('a database refusing connections during batches: the consumer lives on and applies every event once', async () => {
  await refuseConnections();
  let allowed = false;
  try {
    const events = Array.from({ length: EVENTS }, envelope);
    await Promise.all(events.map((event) => js.publish(customers.registered.subject, JSON.stringify(event), { msgID: event.id })));
    // Batches were taken and failed (their transactions could not start), and their events are being retried.
    await waitFor(async () => (await jsm.consumers.info('CUSTOMERS', DURABLE)).num_redelivered > BATCH, {
      what: 'failed batches to be redelivered',
    });
    // Some seconds of outage under redelivery, as a restart takes.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    await allowConnections();
    allowed = true;

    await waitFor(
      async () => {
        const info = await jsm.consumers.info('CUSTOMERS', DURABLE);
        return info.num_pending === 0 && info.num_ack_pending === 0;
      },
      { what: 'every event to be acknowledged', timeoutMs: 30_000 },
    );
    const { rows } = await running.context.pool.query<{ event_id: string; times: number }>(
      'SELECT event_id, count(*)::int AS times FROM applied GROUP BY event_id',
    );
    assert.equal(rows.length, EVENTS, 'every event applied');
    assert.deepEqual(
      rows.filter((row) => row.times !== 1),
      [],
      'none applied twice',
    );
    assert.deepEqual(new Set(rows.map((row) => row.event_id)), new Set(events.map((event) => event.id)));
    assert.equal(running.consumers[0]!.attached, true, 'the consumer still pulls');
    assert.deepEqual(unhandled.map(String), [], 'no unhandled rejection (it would end the process)');
  } finally {
    if (!allowed) await allowConnections();
  }
});
