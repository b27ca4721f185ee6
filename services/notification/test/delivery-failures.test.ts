// How the notification service gives up, and when it does not: a recipient
// refused every time is FAILED after NOTIFY_MAX_ATTEMPTS, a permanent SMTP
// refusal at once, and a customer service that is away delays the email
// instead of losing it. Real nats-server, PostgreSQL, SMTP server and
// customer service, as in notification.test.ts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect, type JetStreamClient, type JetStreamManager, type NatsConnection } from 'nats';
import { customers, notifications, orders, type Customer, type Notification } from '../../../subjects/index.ts';
import { RpcClient } from '../../kit/index.ts';
import { CustomerSettings, customerService } from '../../customer/app.ts';
import { NotificationSettings, notificationService } from '../app.ts';
import { dropTestDatabases, startNats, startTestService, waitFor, type TestNats } from '../../../test/harness.ts';
import { publishEvent } from './publish.ts';
import { startSmtpServer, type TestSmtpServer } from './smtp.ts';

const MAX_ATTEMPTS = 3;

let nats: TestNats;
let smtp: TestSmtpServer;
let customerSvc: Awaited<ReturnType<typeof startTestService>>;
let notificationSvc: Awaited<ReturnType<typeof startTestService>>;
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
let client: RpcClient;

before(async () => {
  nats = await startNats();
  smtp = await startSmtpServer();
  customerSvc = await startTestService(customerService, nats, { settings: CustomerSettings });
  notificationSvc = await startTestService(notificationService, nats, {
    settings: NotificationSettings,
    env: { SMTP_PORT: String(smtp.port), NOTIFY_RETRY_BASE_MS: '50', NOTIFY_MAX_ATTEMPTS: String(MAX_ATTEMPTS) },
    // Room for the customer-service-away test: many deliveries, a breaker that recovers quickly.
    consumer: { backoffMs: 50, maxBackoffMs: 200, maxDeliver: 100 },
    client: { breaker: { resetTimeoutMs: 200 } },
  });
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  js = nc.jetstream();
  jsm = await nc.jetstreamManager();
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

function register(name: string): Promise<Customer> {
  return client.call(customers.register, {
    email: `${name.toLowerCase()}-${randomUUID().slice(0, 8)}@example.com`,
    name,
    password: 'correct horse battery',
  });
}

function settled(customerId: string, orderId: string, status: Notification['status']): Promise<Notification> {
  return waitFor(
    async () => {
      const { items } = await client.call(notifications.listByCustomer, { customerId });
      return items.find((n) => n.orderId === orderId && n.status === status);
    },
    { what: `notification of ${orderId} to be ${status}` },
  );
}

function confirmed(customer: Customer) {
  return { orderId: randomUUID(), customerId: customer.id, total: { amount: 4200, currency: 'EUR' } };
}

test('a recipient refused every time is FAILED after the last attempt', async () => {
  const mo = await register('Mo');
  smtp.failNext(mo.email, 1000);
  const order = confirmed(mo);
  await publishEvent(js, orders.confirmed, order);
  const failed = await settled(mo.id, order.orderId, 'FAILED');
  assert.equal(failed.attempts, MAX_ATTEMPTS);
  assert.match(failed.lastError ?? '', /451/);
  assert.equal(failed.sentAt, null);
  assert.deepEqual(
    smtp.attemptsTo(mo.email).map((a) => a.code),
    Array(MAX_ATTEMPTS).fill(451),
  );
  assert.equal(smtp.mailsTo(mo.email).length, 0);
});

test('a permanent refusal (5xx) is FAILED at once', async () => {
  const nia = await register('Nia');
  smtp.rejectAlways(nia.email);
  const order = confirmed(nia);
  await publishEvent(js, orders.confirmed, order);
  const failed = await settled(nia.id, order.orderId, 'FAILED');
  assert.equal(failed.attempts, 1);
  assert.match(failed.lastError ?? '', /550/);
  assert.equal(smtp.attemptsTo(nia.email).length, 1);
  assert.equal(smtp.mailsTo(nia.email).length, 0);
});

test('while the customer service is away the event waits, then sends its email once', async () => {
  const olu = await register('Olu');
  const customerDb = customerSvc.databaseUrl;
  await customerSvc.stop();

  const order = confirmed(olu);
  const { ack } = await publishEvent(js, orders.confirmed, order);
  // Redelivered (nak'd), not recorded as FAILED and not dead-lettered.
  await waitFor(
    async () => {
      const info = await jsm.consumers.info('ORDERS', 'notifications-order-confirmed');
      return info.delivered.stream_seq >= ack.seq && info.num_redelivered > 0;
    },
    { what: 'the event to be redelivered' },
  );
  const { items } = await client.call(notifications.listByCustomer, { customerId: olu.id });
  assert.deepEqual(items, []);

  customerSvc = await startTestService(customerService, nats, { settings: CustomerSettings, databaseUrl: customerDb });
  const sent = await settled(olu.id, order.orderId, 'SENT');
  assert.equal(sent.email, olu.email);
  assert.equal(smtp.mailsTo(olu.email).length, 1);
});
