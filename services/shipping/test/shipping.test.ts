// Shipping across the shop: every service on one nats-server (the shipping
// service also as a real child process, to kill -9 it), real PostgreSQL, and
// an SMTP server that keeps every email. A confirmed order's shipment goes to
// DELIVERED with two emails; a cancel is refused once shipped and holds the
// shipment before; carrier failures are retried from the database; a crash
// in the middle of a carrier call resumes after restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect, type JetStreamManager, type KV, type NatsConnection } from 'nats';
import pg from 'pg';
import {
  customers,
  orders,
  products,
  settings as live,
  shipments,
  type Customer,
  type Order,
  type Product,
  type SettingContract,
  type Shipment,
  type ValueOf,
} from '../../../subjects/index.ts';
import { RpcClient, openConfigBucket, putSetting, type RunningService, type ServiceDefinition } from '../../kit/index.ts';
import { CustomerSettings, customerService } from '../../customer/app.ts';
import { ProductSettings, productService } from '../../product/app.ts';
import { OrderSettings, orderService } from '../../order/app.ts';
import { PaymentSettings, paymentService } from '../../payment/app.ts';
import { NotificationSettings, notificationService } from '../../notification/app.ts';
import { ShippingSettings, shippingService } from '../app.ts';
import { startSmtpServer, type TestSmtpServer } from '../../notification/test/smtp.ts';
import { trackingNumberOf } from '../carrier.ts';
import { publishEvent, readEvents, withCode } from '../../../test/messaging.ts';
import {
  dropTestDatabases,
  spawnService,
  startNats,
  startTestService,
  testDatabaseUrl,
  waitFor,
  type ServiceProcess,
  type TestNats,
} from '../../../test/harness.ts';

const SHIPPING_ENV = {
  SHIPPING_SHIP_AFTER_MS: '200',
  SHIPPING_DELIVER_AFTER_MS: '1500',
  SHIPPING_POLL_MS: '50',
  SHIPPING_RETRY_BASE_MS: '50',
  SHIPPING_LEASE_MS: '2000',
};

let nats: TestNats;
let smtp: TestSmtpServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
let kv: KV;
let client: RpcClient;
let shippingDb: pg.Pool;
const running = new Map<string, RunningService>();
let shippingProcess: ServiceProcess | undefined;
const shippingDatabaseUrl = testDatabaseUrl('shipments');

async function start<S>(name: string, definition: ServiceDefinition<S>, settings: object, env: Record<string, string> = {}) {
  running.set(name, await startTestService(definition, nats, { settings: settings as never, env: { RPC_TIMEOUT_MS: '5000', ...env } }));
}

const startShipping = () =>
  startTestService(shippingService, nats, { settings: ShippingSettings, env: SHIPPING_ENV, databaseUrl: shippingDatabaseUrl }).then(
    (service) => void running.set('shipments', service),
  );

before(async () => {
  nats = await startNats();
  smtp = await startSmtpServer();
  await start('customers', customerService, CustomerSettings);
  await start('products', productService, ProductSettings);
  await start('orders', orderService, OrderSettings, { ORDER_DEADLINE_MS: '30000' });
  await start('payments', paymentService, PaymentSettings);
  await start('notifications', notificationService, NotificationSettings, {
    SMTP_HOST: '127.0.0.1',
    SMTP_PORT: String(smtp.port),
    NOTIFY_RETRY_BASE_MS: '50',
  });
  await startShipping();
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  jsm = await nc.jetstreamManager();
  kv = await openConfigBucket(nc);
  client = new RpcClient(nc, { timeoutMs: 10_000 });
  shippingDb = new pg.Pool({ connectionString: shippingDatabaseUrl, max: 2 });
});

after(async () => {
  client?.close();
  await nc?.drain().catch(() => {});
  await shippingProcess?.stop('SIGKILL');
  for (const service of [...running.values()].reverse()) await service.stop();
  await shippingDb?.end();
  await smtp?.close();
  await nats?.cleanup();
  await dropTestDatabases();
});

// --- Helpers -----------------------------------------------------------------------------------

async function newCustomer(): Promise<Customer> {
  return client.call(customers.register, { email: `${randomUUID()}@example.com`, name: 'Grace', password: 'correct horse' });
}

let product: Product | undefined;
async function confirmedOrder(customer: Customer): Promise<Order> {
  product ??= await client.call(products.create, {
    sku: `SHIP-${randomUUID().slice(0, 8)}`,
    name: 'Parcel',
    price: { amount: 1500, currency: 'EUR' },
    initialStock: 1000,
  });
  const placed = await client.call(orders.place, {
    idempotencyKey: randomUUID(),
    customerId: customer.id,
    lines: [{ productId: product.id, quantity: 1 }],
    paymentToken: 'tok_visa',
  });
  return waitFor(
    async () => {
      const order = await client.call(orders.get, { id: placed.id });
      return order.status === 'CONFIRMED' && order;
    },
    { what: `order ${placed.id} to be confirmed`, timeoutMs: 20_000 },
  );
}

async function shipmentOf(orderId: string): Promise<Shipment | null> {
  return (await client.call(shipments.getByOrders, { orderIds: [orderId] })).shipments[0]!;
}

async function untilShipment(orderId: string, status: Shipment['status'], timeoutMs = 20_000): Promise<Shipment> {
  return waitFor(
    async () => {
      const shipment = await shipmentOf(orderId);
      return shipment?.status === status && shipment;
    },
    { what: `the shipment of ${orderId} to be ${status}`, timeoutMs, intervalMs: 50 },
  );
}

async function shipmentEvents(orderId: string): Promise<string[]> {
  return (await readEvents(jsm, 'SHIPMENTS')).filter((event) => event.data.orderId === orderId).map((event) => event.type);
}

/**
 * The shipment's events once `count` of them reached the stream: a step is
 * committed before the outbox relay publishes its event, so the database can
 * be ahead of the stream for a moment.
 */
async function relayedShipmentEvents(orderId: string, count: number): Promise<string[]> {
  return waitFor(
    async () => {
      const events = await shipmentEvents(orderId);
      return events.length >= count && events;
    },
    { what: `${count} shipment events of ${orderId} on SHIPMENTS` },
  );
}

/** Sets a live setting and waits until the shipping service in this process applies it. */
async function setLive<S extends SettingContract>(contract: S, value: ValueOf<S>): Promise<void> {
  await putSetting(kv, contract, value);
  await waitFor(() => running.get('shipments')?.context.settings.get(contract) === value, { what: `${contract.key} = ${value}` });
}

async function resetLive(...contracts: SettingContract[]): Promise<void> {
  for (const contract of contracts) await kv.delete(contract.key);
  await waitFor(
    () =>
      contracts.every(
        (contract) =>
          running.get('shipments')?.context.settings.get(contract) ===
          Number(SHIPPING_ENV[contract.env as keyof typeof SHIPPING_ENV] ?? contract.default),
      ),
    { what: 'the settings back to their start values' },
  );
}

// --- Tests ---------------------------------------------------------------------------------------

test('a confirmed order is shipped and delivered, with an email at each step', async () => {
  const customer = await newCustomer();
  const order = await confirmedOrder(customer);

  const delivered = await untilShipment(order.id, 'DELIVERED');
  assert.equal(delivered.customerId, customer.id);
  assert.equal(delivered.carrier, 'SimPost');
  assert.equal(delivered.trackingNumber, trackingNumberOf(delivered.id));
  assert.deepEqual(
    delivered.history.map((step) => step.status),
    ['LABEL_CREATED', 'SHIPPED', 'DELIVERED'],
  );
  assert.deepEqual(await relayedShipmentEvents(order.id, 3), [
    'shipments.events.created',
    'shipments.events.shipped',
    'shipments.events.delivered',
  ]);

  // The confirmation, then one email when shipped and one when delivered, each naming the tracking number.
  const mails = await waitFor(() => smtp.mailsTo(customer.email).length >= 3 && smtp.mailsTo(customer.email), {
    what: 'three emails',
    timeoutMs: 15_000,
  });
  const shippingMails = mails.filter((mail) => /has shipped|was delivered/.test(mail.subject));
  assert.equal(shippingMails.length, 2, mails.map((mail) => mail.subject).join(' | '));
  assert.match(shippingMails[0]!.subject, /has shipped/);
  assert.match(shippingMails[1]!.subject, /was delivered/);
  for (const mail of shippingMails) assert.match(mail.text, new RegExp(delivered.trackingNumber!));
  // Exactly those: nothing more arrives.
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(smtp.mailsTo(customer.email).length, 3);
});

test('a cancel after the order shipped is refused, saying why, and changes nothing', async () => {
  const customer = await newCustomer();
  const order = await confirmedOrder(customer);
  const shipped = await untilShipment(order.id, 'SHIPPED');

  await assert.rejects(
    client.call(orders.cancel, { id: order.id, customerId: customer.id }),
    (error: Error & { code?: string }) =>
      withCode('ORDER_NOT_CANCELLABLE')(error) && /shipped/.test(error.message) && error.message.includes(shipped.trackingNumber!),
  );
  assert.equal((await client.call(orders.get, { id: order.id })).status, 'CONFIRMED');
  // It goes on to its customer.
  await untilShipment(order.id, 'DELIVERED');
  const orderEvents = (await readEvents(jsm, 'ORDERS')).filter((event) => event.data.orderId === order.id).map((event) => event.type);
  assert.ok(!orderEvents.includes('orders.events.cancelled'), orderEvents.join(', '));
});

test('a cancel before the order shipped holds the shipment: it is cancelled and never ships', async () => {
  await setLive(live.shipments.shipAfterMs, 60_000);
  try {
    const customer = await newCustomer();
    const order = await confirmedOrder(customer);
    await untilShipment(order.id, 'LABEL_CREATED');

    const cancelled = await client.call(orders.cancel, { id: order.id, customerId: customer.id });
    assert.equal(cancelled.status, 'CANCELLED');
    const shipment = await untilShipment(order.id, 'CANCELLED');
    assert.deepEqual(
      shipment.history.map((step) => step.status),
      ['LABEL_CREATED', 'CANCELLED'],
    );
    // Due at the carrier now: it still does not ship.
    await shippingDb.query('UPDATE shipments SET next_step_at = now() WHERE order_id = $1', [order.id]);
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal((await shipmentOf(order.id))?.status, 'CANCELLED');
    assert.deepEqual(await relayedShipmentEvents(order.id, 2), ['shipments.events.created', 'shipments.events.cancelled']);
  } finally {
    await resetLive(live.shipments.shipAfterMs);
  }
});

test('a hold whose cancellation never came is released: the order ships after all', async () => {
  await setLive(live.shipments.shipAfterMs, 60_000);
  let order: Order;
  try {
    const customer = await newCustomer();
    order = await confirmedOrder(customer);
    await untilShipment(order.id, 'LABEL_CREATED');
    // As the order service does before it cancels, but the cancellation is never committed (a crash).
    assert.deepEqual(await client.call(shipments.hold, { orderId: order.id, customerId: customer.id }), { status: 'HELD' });
  } finally {
    await resetLive(live.shipments.shipAfterMs);
  }
  // The hold's wait runs out: the order service says CONFIRMED, so the hold is released.
  await shippingDb.query('UPDATE shipments SET next_step_at = now() WHERE order_id = $1', [order.id]);
  await untilShipment(order.id, 'SHIPPED');
});

test('a cancellation that comes before the shipment leaves none: a late confirmation creates nothing', async () => {
  const orderId = randomUUID();
  const customerId = randomUUID();
  const total = { amount: 1500, currency: 'EUR' };
  // The cancel held it before the confirmation reached shipping (a tombstone, held)...
  assert.deepEqual(await client.call(shipments.hold, { orderId, customerId }), { status: 'HELD' });
  // ...then the cancellation ends the hold, and the confirmation, late, finds the tombstone.
  await publishEvent(nc.jetstream(), orders.cancelled, {
    orderId,
    customerId,
    reasonCode: 'CUSTOMER_CANCELLED',
    reason: 'test',
    previousStatus: 'CONFIRMED',
    total,
  });
  await waitFor(
    async () => {
      const { rows } = await shippingDb.query('SELECT 1 FROM shipments WHERE order_id = $1 AND held_at IS NULL', [orderId]);
      return rows.length === 1;
    },
    { what: 'the hold to end' },
  );
  await publishEvent(nc.jetstream(), orders.confirmed, { orderId, customerId, total });
  // A saga cancellation (no hold) before the confirmation leaves a tombstone too.
  const other = randomUUID();
  await publishEvent(nc.jetstream(), orders.cancelled, {
    orderId: other,
    customerId,
    reasonCode: 'OUT_OF_STOCK',
    reason: 'test',
    previousStatus: 'PENDING',
    total,
  });
  await waitFor(async () => (await shippingDb.query('SELECT 1 FROM shipments WHERE order_id = $1', [other])).rows.length === 1, {
    what: 'the tombstone of the saga cancellation',
  });
  await publishEvent(nc.jetstream(), orders.confirmed, { orderId: other, customerId, total });
  await waitFor(
    async () => {
      const info = await jsm.consumers.info('ORDERS', 'shipments-create-shipment');
      return info.num_pending === 0 && info.num_ack_pending === 0;
    },
    { what: 'the confirmations to be handled' },
  );
  assert.deepEqual((await client.call(shipments.getByOrders, { orderIds: [orderId, other] })).shipments, [null, null]);
  assert.deepEqual(await shipmentEvents(orderId), []);
  // A later hold answers CANCELLED: nothing is left to stop.
  assert.deepEqual(await client.call(shipments.hold, { orderId, customerId }), { status: 'CANCELLED' });
});

test('carrier failures are retried from the database until the step goes through', async () => {
  await setLive(live.shipments.failFirstAttempts, 3);
  try {
    const customer = await newCustomer();
    const order = await confirmedOrder(customer);
    // The failures are recorded on the row (where a restart would find them), with their error.
    const failing = await waitFor(
      async () => {
        const { rows } = await shippingDb.query<{ step_attempts: number; last_error: string | null }>(
          'SELECT step_attempts, last_error FROM shipments WHERE order_id = $1',
          [order.id],
        );
        return rows[0] && rows[0].step_attempts >= 2 && rows[0];
      },
      { what: 'failed carrier calls recorded' },
    );
    assert.match(failing.last_error!, /simulated carrier outage/);
    const delivered = await untilShipment(order.id, 'DELIVERED');
    assert.deepEqual(
      delivered.history.map((step) => step.status),
      ['LABEL_CREATED', 'SHIPPED', 'DELIVERED'],
    );
    assert.deepEqual(await relayedShipmentEvents(order.id, 3), [
      'shipments.events.created',
      'shipments.events.shipped',
      'shipments.events.delivered',
    ]);
  } finally {
    await resetLive(live.shipments.failFirstAttempts);
  }
});

test('a shipping process killed during a carrier call resumes after restart, shipping once', async () => {
  await running.get('shipments')!.stop();
  running.delete('shipments');
  // A slow carrier: the kill lands while the pickup is in flight.
  shippingProcess = await spawnService('shipping', {
    NATS_URL: nats.url,
    DATABASE_URL: shippingDatabaseUrl,
    ...SHIPPING_ENV,
    SHIPPING_CARRIER_DELAY_MS: '5000',
    SHIPPING_LEASE_MS: '6000',
  });
  const customer = await newCustomer();
  const order = await confirmedOrder(customer);
  // Claimed: leased, still LABEL_CREATED, its carrier call under way.
  await waitFor(
    async () => {
      const { rows } = await shippingDb.query<{ claimed: boolean }>(
        `SELECT next_step_at > now() + interval '2 seconds' AS claimed FROM shipments WHERE order_id = $1 AND status = 'LABEL_CREATED'`,
        [order.id],
      );
      return rows[0]?.claimed;
    },
    { what: 'the pickup to be under way' },
  );
  await shippingProcess.stop('SIGKILL');
  shippingProcess = undefined;
  const { rows } = await shippingDb.query<{ status: string }>('SELECT status FROM shipments WHERE order_id = $1', [order.id]);
  assert.equal(rows[0]?.status, 'LABEL_CREATED', 'the pickup was cut off before it was recorded');

  await startShipping();
  // Due again once the dead process's lease runs out; then it ships and is delivered, once.
  await untilShipment(order.id, 'DELIVERED', 30_000);
  assert.deepEqual(await relayedShipmentEvents(order.id, 3), [
    'shipments.events.created',
    'shipments.events.shipped',
    'shipments.events.delivered',
  ]);
});
