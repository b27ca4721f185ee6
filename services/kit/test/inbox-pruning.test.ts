// The inbox pruner against a real PostgreSQL (and, end to end, a real
// nats-server): rows past their consumer's horizon go, younger rows and
// other consumers' rows stay, in batches, with several pruners at once; an
// event delivered again inside the horizon is still skipped.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type JetStreamClient, type JetStreamManager, type NatsConnection } from 'nats';
import { customers, redeliveryHorizonSeconds, streams, type Envelope } from '../../../subjects/index.ts';
import { createLogger, createPool, ensureDatabase, migrate, on, type Pool, type ServiceDefinition } from '../index.ts';
import { applyOnce } from '../consumer/inbox.ts';
import { InboxPruner, pruneInboxBatch } from '../consumer/inbox-pruner.ts';
import { dropTestDatabases, startNats, startTestService, testDatabaseUrl, waitFor, type TestNats } from '../../../test/harness.ts';

const log = createLogger('inbox-pruning-test', 'silent');
let pool: Pool;
let migrations: string;

before(async () => {
  migrations = await mkdtemp(join(tmpdir(), 'shop-inbox-pruning-'));
  await writeFile(join(migrations, '001_applied.sql'), 'CREATE TABLE applied (event_id text NOT NULL);');
  const url = testDatabaseUrl('inbox_pruning');
  await ensureDatabase(url, log);
  pool = createPool(url);
  await migrate(pool, 'inbox-pruning-test', migrations, log);
});

after(async () => {
  await pool?.end();
  await dropTestDatabases();
  await rm(migrations, { recursive: true, force: true });
});

/** Inbox rows of `consumer` handled `ageSeconds` ago, one per id. */
async function handledAgo(consumer: string, ageSeconds: number, count: number): Promise<string[]> {
  const ids = Array.from({ length: count }, () => crypto.randomUUID());
  await pool.query(
    `INSERT INTO inbox (consumer, event_id, handled_at) SELECT $1, id, now() - make_interval(secs => $2) FROM unnest($3::text[]) AS id`,
    [consumer, ageSeconds, ids],
  );
  return ids;
}

async function idsOf(consumer: string): Promise<Set<string>> {
  const { rows } = await pool.query<{ event_id: string }>('SELECT event_id FROM inbox WHERE consumer = $1', [consumer]);
  return new Set(rows.map((row) => row.event_id));
}

test('rows older than the horizon go; younger rows and other consumers stay', async () => {
  const old = await handledAgo('orders-a', 3600, 7);
  const young = await handledAgo('orders-a', 60, 5);
  // Another consumer's rows are as old, but its horizon is longer.
  const otherOld = await handledAgo('orders-b', 3600, 4);
  const pruner = new InboxPruner(
    pool,
    [
      { consumer: 'orders-a', horizonSeconds: 600 },
      { consumer: 'orders-b', horizonSeconds: 7200 },
    ],
    log,
    { intervalMs: 60_000, batchSize: 3 },
  );
  // 7 rows in batches of 3: three DELETEs, the pass goes on until a batch is short.
  assert.equal(await pruner.pruneNow(), 7);
  assert.deepEqual(await idsOf('orders-a'), new Set(young));
  assert.deepEqual(await idsOf('orders-b'), new Set(otherOld));
  assert.ok(old.length > 0);
  assert.equal(await pruner.pruneNow(), 0, 'a second pass finds nothing');
});

test('several pruners at once (instances of one service) delete every old row once, without waiting on each other', async () => {
  const consumer = 'orders-concurrent';
  await handledAgo(consumer, 3600, 500);
  const young = await handledAgo(consumer, 1, 20);
  const pruners = Array.from(
    { length: 4 },
    () => new InboxPruner(pool, [{ consumer, horizonSeconds: 600 }], log, { intervalMs: 60_000, batchSize: 25, pauseMs: 0 }),
  );
  const deleted = await Promise.all(pruners.map((pruner) => pruner.pruneNow()));
  assert.equal(
    deleted.reduce((a, b) => a + b, 0),
    500,
  );
  assert.deepEqual(await idsOf(consumer), new Set(young));
});

test('a batch holds its rows locked only while it runs: a pruner skips rows another holds', async () => {
  const consumer = 'orders-locked';
  await handledAgo(consumer, 3600, 10);
  const holder = await pool.connect();
  try {
    await holder.query('BEGIN');
    // Another instance's DELETE in progress, holding 4 of the rows.
    await holder.query(
      `SELECT 1 FROM inbox WHERE consumer = $1 AND event_id IN (SELECT event_id FROM inbox WHERE consumer = $1 ORDER BY handled_at LIMIT 4) FOR UPDATE`,
      [consumer],
    );
    assert.equal(await pruneInboxBatch(pool, { consumer, horizonSeconds: 600 }, 100), 6, 'the free rows go at once');
    await holder.query('ROLLBACK');
  } finally {
    holder.release();
  }
  assert.equal(await pruneInboxBatch(pool, { consumer, horizonSeconds: 600 }, 100), 4);
});

test('an event delivered again inside the horizon is skipped; past the horizon (and pruned) it would apply again', async () => {
  const consumer = 'orders-redelivered';
  const delivery = { event: { id: crypto.randomUUID() } };
  let applications = 0;
  const apply = async () => {
    applications++;
  };
  const pruner = new InboxPruner(pool, [{ consumer, horizonSeconds: 600 }], log, { intervalMs: 60_000 });
  assert.equal((await applyOnce(pool, consumer, [delivery], apply)).size, 1);
  await pruner.pruneNow();
  assert.equal((await applyOnce(pool, consumer, [delivery], apply)).size, 0, 'inside the horizon: a duplicate');
  assert.equal(applications, 1);
  // The same row, aged past the horizon: the pruner takes it, and the inbox no longer knows the event.
  await pool.query(`UPDATE inbox SET handled_at = now() - interval '1 hour' WHERE consumer = $1`, [consumer]);
  assert.equal(await pruner.pruneNow(), 1);
  assert.equal((await applyOnce(pool, consumer, [delivery], apply)).size, 1);
});

test("the default horizon covers the stream's max age and a dead letter replayed as late as the DLQ keeps it", () => {
  for (const stream of [streams.ORDERS, streams.INVENTORY, streams.PAYMENTS, streams.CUSTOMERS]) {
    assert.ok(redeliveryHorizonSeconds(stream) > stream.maxAgeSeconds + streams.DLQ.maxAgeSeconds, stream.name);
  }
});

// --- End to end: a service's own pruner, with a short retention ------------------------------------------------

let nats: TestNats | undefined;
let nc: NatsConnection | undefined;

after(async () => {
  await nc?.close();
  await nats?.cleanup();
});

test('a service prunes its inbox on its own, and a copy of a recent event published again is skipped', async () => {
  nats = await startNats();
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  const js: JetStreamClient = nc.jetstream();
  const jsm: JetStreamManager = await nc.jetstreamManager();
  const definition: ServiceDefinition = {
    name: 'customers',
    version: '1.0.0',
    description: 'inbox pruning test',
    migrations,
    emits: [],
    build: () => ({
      endpoints: [],
      consumers: [
        on(customers.registered, 'pruned', async (event, tx) => {
          await tx.query('INSERT INTO applied (event_id) VALUES ($1)', [event.id]);
        }),
      ],
    }),
  };
  // The second copy must settle, and the row be counted, inside the horizon: 5 s, ample for a few round trips on a loaded machine.
  const service = await startTestService(definition, nats, { env: { INBOX_RETENTION_SECONDS: '5', INBOX_PRUNE_INTERVAL_MS: '200' } });
  try {
    const publish = async (event: Envelope, msgID: string) =>
      (await js.publish(customers.registered.subject, Buffer.from(JSON.stringify(event)), { msgID })).seq;
    const settled = (seq: number) =>
      waitFor(async () => {
        const info = await jsm.consumers.info('CUSTOMERS', 'customers-pruned');
        return info.ack_floor.stream_seq >= seq && info.num_ack_pending === 0;
      });
    const event: Envelope = {
      id: crypto.randomUUID(),
      type: customers.registered.subject,
      occurredAt: new Date().toISOString(),
      data: { customerId: crypto.randomUUID(), email: 'ann@shop.test', name: 'Ann' },
    };
    const count = async () =>
      (await service.context.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM applied WHERE event_id = $1', [event.id])).rows[0]!
        .n;
    await settled(await publish(event, `${event.id}-1`));
    // A second copy (another Nats-Msg-Id, as after an outbox republished past the duplicate window) inside the horizon.
    await settled(await publish(event, `${event.id}-2`));
    assert.equal(await count(), 1, 'applied once');
    const inboxRows = async () =>
      (await service.context.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM inbox WHERE consumer = $1', ['customers-pruned']))
        .rows[0]!.n;
    assert.equal(await inboxRows(), 1);
    await waitFor(async () => (await inboxRows()) === 0, { what: 'the service to prune its inbox row', timeoutMs: 20_000 });
  } finally {
    await service.stop();
  }
});
