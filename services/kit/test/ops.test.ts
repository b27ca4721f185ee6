// The operations port of a service, against a real nats-server and
// PostgreSQL: /metrics answers in the Prometheus text format with the named
// series and the counts of what happened; /health/live and /health/ready
// answer, and ready turns 503 while the service's database refuses
// connections and 200 again once it takes them; `nats micro stats` counts the
// time of async handlers and their error answers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection, type ServiceStats } from 'nats';
import pg from 'pg';
import { customers } from '../../../subjects/index.ts';
import { RpcClient, ServiceError, endpoint, on, withTransaction, writeEvent, type ServiceDefinition } from '../index.ts';
import { dropTestDatabases, startNats, startTestService, waitFor, type TestNats } from '../../../test/harness.ts';
import { withCode } from '../../../test/messaging.ts';

type Running = Awaited<ReturnType<typeof startTestService>>;

const SLOW_MS = 25;
let migrations: string;
let nats: TestNats;
let nc: NatsConnection;
let client: RpcClient;
let service: Running;
let base: string;
const welcomed: string[] = [];

/** A small "customers" service: one slow endpoint that always refuses, and one consumer of its own events. */
function definition(): ServiceDefinition {
  return {
    name: 'customers',
    version: '1.0.0',
    description: 'kit ops test',
    migrations,
    emits: [customers.registered],
    build: () => ({
      endpoints: [
        endpoint(customers.get, async ({ id }) => {
          // Stands for a slow query: the answer comes well after the handler returned to nats.js.
          await new Promise((resolve) => setTimeout(resolve, SLOW_MS));
          throw new ServiceError('CUSTOMER_NOT_FOUND', `no customer ${id}`);
        }),
      ],
      consumers: [
        on(customers.registered, 'welcome', async (event) => {
          welcomed.push(event.data.customerId);
        }),
      ],
    }),
  };
}

before(async () => {
  migrations = await mkdtemp(join(tmpdir(), 'shop-kit-migrations-'));
  nats = await startNats();
  service = await startTestService(definition(), nats, { env: { OPS_PORT: '0' } });
  assert.ok(service.ops, 'OPS_PORT=0 starts an operations server');
  base = `http://127.0.0.1:${service.ops.port}`;
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  client = new RpcClient(nc, { timeoutMs: 5000, retries: 0 });
});

after(async () => {
  client?.close();
  await nc?.drain().catch(() => {});
  await service?.stop();
  await nats?.cleanup();
  await dropTestDatabases();
  await rm(migrations, { recursive: true, force: true });
});

/** The value of one series in a Prometheus text exposition, e.g. `shop_outbox_backlog` with labels. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const found = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([key, value]) => found[key] === value)) return Number(match[3]);
  }
  return undefined;
}

async function metrics(): Promise<string> {
  const response = await fetch(`${base}/metrics`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return response.text();
}

test('/health/live and /health/ready answer 200 on a running service', async () => {
  const live = await fetch(`${base}/health/live`);
  assert.equal(live.status, 200);
  assert.deepEqual(await live.json(), { status: 'live' });
  const ready = await fetch(`${base}/health/ready`);
  assert.equal(ready.status, 200);
  assert.deepEqual(await ready.json(), { status: 'ready', checks: { nats: 'ok', database: 'ok', consumers: 'ok' } });
  assert.equal((await fetch(`${base}/nothing-here`)).status, 404);
});

test('/metrics counts requests, errors, latencies, events, the outbox, the consumer lag and the breakers', async () => {
  for (let i = 0; i < 3; i++) {
    await assert.rejects(client.call(customers.get, { id: crypto.randomUUID() }), withCode('CUSTOMER_NOT_FOUND'));
  }
  // Bad input never reaches the handler, and still counts as an answered request with its error.
  await assert.rejects(client.call(customers.get, { id: 'not-a-uuid' } as never), withCode('VALIDATION_FAILED'));
  const raw = await nc.request(customers.get.subject, Buffer.from('{"id":"nope"}'), { timeout: 5000 });
  assert.equal(raw.headers?.get('Nats-Service-Error-Code'), '400');

  const ids = [crypto.randomUUID(), crypto.randomUUID()];
  for (const [index, customerId] of ids.entries()) {
    await withTransaction(service.context.pool, (tx) =>
      writeEvent(tx, customers.registered, { customerId, email: `ops${index}@shop.test`, name: `Ops ${index}` }),
    );
  }
  await waitFor(() => ids.every((id) => welcomed.includes(id)), { what: 'both events handled' });

  // Counters move after the work; poll until the scrape shows all of it.
  const text = await waitFor(
    async () => {
      const body = await metrics();
      return sample(body, 'shop_events_handled_total', { consumer: 'customers-welcome', outcome: 'processed' }) === 2 &&
        sample(body, 'shop_consumer_ack_pending', { consumer: 'customers-welcome' }) === 0
        ? body
        : undefined;
    },
    { what: 'the events in the metrics' },
  );
  const get = { service: 'customers', subject: 'customers.get' };
  assert.equal(sample(text, 'shop_rpc_requests_total', get), 4);
  assert.equal(sample(text, 'shop_rpc_request_errors_total', { ...get, code: 'CUSTOMER_NOT_FOUND' }), 3);
  assert.equal(sample(text, 'shop_rpc_request_errors_total', { ...get, code: 'VALIDATION_FAILED' }), 1);
  assert.equal(sample(text, 'shop_rpc_request_duration_seconds_count', get), 4);
  // Half of what the handlers slept: a timer may fire a little early, and without the async work it would be about 0.
  assert.ok(sample(text, 'shop_rpc_request_duration_seconds_sum', get)! >= (3 * SLOW_MS) / 2 / 1000, 'latency includes the async work');
  assert.equal(sample(text, 'shop_rpc_request_duration_seconds_bucket', { ...get, le: '+Inf' }), 4);
  assert.equal(sample(text, 'shop_events_published_total', { subject: 'customers.events.registered' }), 2);
  assert.equal(sample(text, 'shop_event_handling_duration_seconds_count', { consumer: 'customers-welcome' }), 2);
  assert.equal(sample(text, 'shop_outbox_backlog', { service: 'customers' }), 0);
  assert.equal(sample(text, 'shop_consumer_pending', { consumer: 'customers-welcome', stream: 'CUSTOMERS' }), 0);
  assert.equal(sample(text, 'shop_rpc_breaker_state', { subject: 'orders.place' }), 0);
  assert.equal(sample(text, 'shop_nats_connected'), 1);
  assert.ok(sample(text, 'process_cpu_user_seconds_total') !== undefined, 'process metrics are there too');
  for (const name of ['shop_rpc_requests_total', 'shop_outbox_backlog', 'shop_consumer_pending', 'shop_rpc_breaker_state']) {
    assert.match(text, new RegExp(`^# HELP ${name} .+\\n# TYPE ${name} (counter|gauge)$`, 'm'));
  }
});

test("nats micro stats count the requests; each endpoint's data has the whole time of async handlers and their error answers", async () => {
  let stats: ServiceStats | undefined;
  for await (const answer of await nc.services.client().stats('customers')) {
    stats = answer;
    break;
  }
  assert.ok(stats, 'the service answers $SRV.STATS');
  const get = stats.endpoints?.find((entry) => entry.subject === customers.get.subject);
  assert.ok(get);
  assert.equal(get.num_requests, 4);
  // nats.js times only the synchronous call and counts only a thrown error: the framework's own
  // fields cannot say more. The kit's answers, async time and error replies included, are in data.
  const data = get.data as {
    num_requests: number;
    num_errors: number;
    processing_time: number;
    average_processing_time: number;
    last_error?: string;
  };
  assert.equal(data.num_requests, 4);
  assert.equal(data.num_errors, 4);
  assert.ok(data.processing_time >= (3 * SLOW_MS * 1e6) / 2, `processing_time ${data.processing_time} ns counts the async work`);
  assert.ok(data.average_processing_time > 0);
  assert.match(data.last_error ?? '', /^400 VALIDATION_FAILED/);
});

test('/health/ready turns 503 while the database refuses connections, and 200 when it takes them again', async () => {
  const database = new URL(service.databaseUrl).pathname.slice(1);
  const admin = new pg.Client({ connectionString: new URL('/postgres', service.databaseUrl).toString() });
  await admin.connect();
  try {
    await admin.query(`ALTER DATABASE ${pg.escapeIdentifier(database)} WITH ALLOW_CONNECTIONS false`);
    await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [database]);
    const down = await waitFor(
      async () => {
        const response = await fetch(`${base}/health/ready`);
        return response.status === 503 ? ((await response.json()) as { status: string; checks: Record<string, string> }) : undefined;
      },
      { what: 'ready to turn 503' },
    );
    assert.equal(down.status, 'not ready');
    assert.notEqual(down.checks.database, 'ok');
    assert.equal(down.checks.nats, 'ok');
    // Liveness and metrics do not depend on the database.
    assert.equal((await fetch(`${base}/health/live`)).status, 200);
    assert.equal(sample(await metrics(), 'shop_nats_connected'), 1);
  } finally {
    await admin.query(`ALTER DATABASE ${pg.escapeIdentifier(database)} WITH ALLOW_CONNECTIONS true`);
    await admin.end();
  }
  await waitFor(async () => (await fetch(`${base}/health/ready`)).status === 200, { what: 'ready to turn 200 again' });
});
