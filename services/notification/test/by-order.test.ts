// notifications.listByOrder against a real nats-server, PostgreSQL, SMTP
// server and customer service: an order's emails, newest first, read through
// an index of their own, and only for the customer the order belongs to.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect, type JetStreamClient, type NatsConnection } from 'nats';
import { customers, notifications, orders, payments, type Customer, type Money } from '../../../subjects/index.ts';
import { RpcClient } from '../../kit/index.ts';
import { CustomerSettings, customerService } from '../../customer/app.ts';
import { NotificationSettings, notificationService } from '../app.ts';
import { dropTestDatabases, startNats, startTestService, waitFor, type TestNats } from '../../../test/harness.ts';
import { rawRequest, withCode } from '../../../test/messaging.ts';
import { publishEvent } from './publish.ts';
import { startSmtpServer, type TestSmtpServer } from './smtp.ts';

let nats: TestNats;
let smtp: TestSmtpServer;
let customerSvc: Awaited<ReturnType<typeof startTestService>>;
let notificationSvc: Awaited<ReturnType<typeof startTestService>>;
let nc: NatsConnection;
let js: JetStreamClient;
let client: RpcClient;

before(async () => {
  nats = await startNats();
  smtp = await startSmtpServer();
  customerSvc = await startTestService(customerService, nats, { settings: CustomerSettings });
  notificationSvc = await startTestService(notificationService, nats, {
    settings: NotificationSettings,
    env: { SMTP_PORT: String(smtp.port), NOTIFY_RETRY_BASE_MS: '100' },
  });
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  js = nc.jetstream();
  client = new RpcClient(nc, { timeoutMs: 3000 });
});

after(async () => {
  client?.close();
  await nc?.drain();
  await notificationSvc?.stop();
  await customerSvc?.stop();
  await smtp?.close();
  await nats?.cleanup();
  await dropTestDatabases();
});

const eur = (amount: number): Money => ({ amount, currency: 'EUR' });

function register(name: string): Promise<Customer> {
  return client.call(customers.register, { email: `${name}-${randomUUID().slice(0, 8)}@example.com`, name, password: 'correct horse battery' });
}

/** The notifications of `orderId` as `customerId` asks for them, once there are `count`. */
function listed(orderId: string, customerId: string, count: number) {
  return waitFor(
    async () => {
      const { items } = await client.call(notifications.listByOrder, { orderId, customerId });
      return items.length === count ? items : undefined;
    },
    { what: `${count} notifications of order ${orderId}` },
  );
}

test("an order's notifications, newest first, and none of its other orders'", async () => {
  const kim = await register('kim');
  const orderId = randomUUID();
  const otherOrderId = randomUUID();
  await publishEvent(js, orders.confirmed, { orderId, customerId: kim.id, total: eur(2500) });
  await listed(orderId, kim.id, 1);
  await publishEvent(js, payments.refunded, { paymentId: randomUUID(), orderId, customerId: kim.id, amount: eur(2500) });
  await publishEvent(js, orders.confirmed, { orderId: otherOrderId, customerId: kim.id, total: eur(100) });

  const items = await listed(orderId, kim.id, 2);
  assert.deepEqual(items.map((n) => n.eventType), ['payments.events.refunded', 'orders.events.confirmed']);
  assert.ok(items.every((n) => n.orderId === orderId && n.customerId === kim.id));
  assert.equal((await listed(otherOrderId, kim.id, 1))[0]!.eventType, 'orders.events.confirmed');
  assert.deepEqual(await client.call(notifications.listByOrder, { orderId: randomUUID(), customerId: kim.id }), { items: [] });
});

test("another customer's id reads nothing of the order", async () => {
  const [ann, bob] = await Promise.all([register('ann'), register('bob')]);
  const orderId = randomUUID();
  await publishEvent(js, orders.confirmed, { orderId, customerId: ann.id, total: eur(700) });
  await listed(orderId, ann.id, 1);
  assert.deepEqual(await client.call(notifications.listByOrder, { orderId, customerId: bob.id }), { items: [] });
});

test('the query reads the by-order index', async () => {
  const { rows } = await notificationSvc.context.pool.query<{ indexdef: string }>(
    "SELECT indexdef FROM pg_indexes WHERE tablename = 'notifications' AND indexname = 'notifications_by_order'",
  );
  assert.match(rows[0]?.indexdef ?? '', /\(order_id, created_at DESC, id DESC\)/);
  // The plan for the endpoint's query, with sequential scans priced out (a test table is small
  // enough that the planner may rightly prefer one): an index made for it must serve it.
  const db = await notificationSvc.context.pool.connect();
  try {
    await db.query('BEGIN');
    await db.query('SET LOCAL enable_seqscan = off');
    const plan = await db.query<{ 'QUERY PLAN': string }>(
      'EXPLAIN SELECT id FROM notifications WHERE order_id = $1 AND customer_id = $2 ORDER BY created_at DESC, id DESC',
      [randomUUID(), randomUUID()],
    );
    const text = plan.rows.map((row) => row['QUERY PLAN']).join('\n');
    assert.match(text, /notifications_by_order/, text);
    assert.doesNotMatch(text, /Sort/, `the index gives the order: ${text}`);
    await db.query('ROLLBACK');
  } finally {
    db.release();
  }
});

test('bad requests answer VALIDATION_FAILED', async () => {
  const refused = { status: '400', code: 'VALIDATION_FAILED' };
  const ask = async (payload: unknown) => {
    const { status, code } = await rawRequest(nc, notifications.listByOrder.subject, JSON.stringify(payload));
    return { status, code };
  };
  assert.deepEqual(await ask({ orderId: randomUUID() }), refused, 'the customer is required');
  assert.deepEqual(await ask({ orderId: 'not-a-uuid', customerId: randomUUID() }), refused);
  assert.deepEqual(await ask({ orderId: randomUUID(), customerId: randomUUID(), first: 5 }), refused);
  await assert.rejects(
    client.call(notifications.listByOrder, { customerId: randomUUID() } as never),
    withCode('VALIDATION_FAILED'),
  );
});
