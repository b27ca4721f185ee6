// Graceful stop of the real customer process: SIGTERM while registrations are
// in flight; each one is answered and stored, the events leave the outbox, and
// the process exits 0.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { RequestStrategy, connect, type NatsConnection } from 'nats';
import { customers, type Customer, type Envelope } from '../../../subjects/index.ts';
import { RpcClient } from '../../kit/index.ts';
import {
  dropTestDatabases,
  spawnService,
  startNats,
  testDatabaseUrl,
  waitFor,
  type ServiceProcess,
  type TestNats,
} from '../../../test/harness.ts';

const CALLS = 20;

let nats: TestNats;
let nc: NatsConnection;
let client: RpcClient;
let service: ServiceProcess | undefined;
let databaseUrl: string;

before(async () => {
  nats = await startNats();
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  client = new RpcClient(nc, { timeoutMs: 15_000 });
  databaseUrl = testDatabaseUrl('customers');
  service = await spawnService('customer', { NATS_URL: nats.url, DATABASE_URL: databaseUrl, SHUTDOWN_TIMEOUT_MS: '20000' });
});

after(async () => {
  await service?.stop('SIGKILL');
  client?.close();
  await nc?.close();
  await nats?.cleanup();
  await dropTestDatabases();
});

/** Requests the customers.register endpoint has received, per `nats micro stats`. */
async function registerRequestsReceived(): Promise<number> {
  // One instance runs: its answer is the whole answer, no need to wait for others.
  const services = nc.services.client({ strategy: RequestStrategy.Count, maxMessages: 1, maxWait: 1000 });
  for await (const stats of await services.stats('customers')) {
    return stats.endpoints?.find((e) => e.subject === 'customers.register')?.num_requests ?? 0;
  }
  return 0;
}

test('SIGTERM with registrations in flight: every call answered and stored, exit 0', { timeout: 60_000 }, async () => {
  const running = service!;
  let answered = 0;
  const emails = Array.from({ length: CALLS }, (_, i) => `stop${i}@shop.test`);
  const calls = emails.map((email, i) =>
    client.call(customers.register, { email, name: `Stopper ${i}`, password: 'graceful stop' }).finally(() => answered++),
  );

  // Signal once the service holds every request: each costs a scrypt hash, so most are still being worked on.
  await waitFor(async () => (await registerRequestsReceived()) >= CALLS, { intervalMs: 5, what: 'every request to arrive' });
  const answeredBeforeSignal = answered;
  running.child.kill('SIGTERM');
  const code = await running.exited;
  service = undefined;

  assert.ok(answeredBeforeSignal < CALLS, `the signal came while calls were in flight (${answeredBeforeSignal} answered)`);
  const results = await Promise.allSettled(calls);
  const failures = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => String(r.reason));
  assert.deepEqual(failures, [], 'every call got its reply');
  const registered = results.map((r) => (r as PromiseFulfilledResult<Customer>).value);
  assert.deepEqual(
    registered.map((c) => c.email),
    emails,
  );
  assert.equal(code, 0);
  assert.ok(
    running.output.some((line) => line.includes('"service stopped"')),
    'the stop ran to its end',
  );

  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  try {
    const { rows } = await db.query<{ id: string; email: string }>('SELECT id, email FROM customers');
    const byEmail = (a: string[], b: string[]) => (a[0]! < b[0]! ? -1 : 1);
    assert.deepEqual(rows.map((r) => [r.email, r.id]).sort(byEmail), registered.map((c) => [c.email, c.id]).sort(byEmail));
    // The final flush published every event before the process left.
    const outbox = await db.query('SELECT count(*) AS n FROM outbox');
    assert.equal(outbox.rows[0].n, 0);
  } finally {
    await db.end();
  }

  const jsm = await nc.jetstreamManager();
  const { state } = await jsm.streams.info('CUSTOMERS');
  const published = new Set<string>();
  for (let seq = state.first_seq; state.messages > 0 && seq <= state.last_seq; seq++) {
    published.add((await jsm.streams.getMessage('CUSTOMERS', { seq })).json<Envelope<{ customerId: string }>>().data.customerId);
  }
  assert.deepEqual([...published].sort(), registered.map((c) => c.id).sort());
});
