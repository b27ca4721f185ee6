// The order saga across every service: customer, product, order, payment and
// notification in this process on one nats-server (the payment service also as
// a real child process, to kill -9 it), real PostgreSQL, and an SMTP server
// that keeps every email it is given.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { connect, type JetStreamManager, type NatsConnection } from 'nats';
import pg from 'pg';
import { SMTPServer } from 'smtp-server';
import {
  customers,
  notifications,
  orders,
  payments,
  products,
  streams,
  type Customer,
  type Envelope,
  type Order,
  type Payment,
  type Product,
} from '../subjects/index.ts';
import { RpcClient, ServiceError, type RunningService, type ServiceDefinition } from '../services/kit/index.ts';
import { CustomerSettings, customerService } from '../services/customer/app.ts';
import { ProductSettings, productService } from '../services/product/app.ts';
import { OrderSettings, orderService } from '../services/order/app.ts';
import { PaymentSettings, paymentService } from '../services/payment/app.ts';
import { NotificationSettings, notificationService } from '../services/notification/app.ts';
import { ShippingSettings, shippingService } from '../services/shipping/app.ts';
import {
  dropTestDatabases,
  spawnService,
  startNats,
  startTestService,
  testDatabaseUrl,
  waitFor,
  type ServiceProcess,
  type TestNats,
} from './harness.ts';

// --- SMTP: every email handed over, parsed just enough to assert on -----------------------------

interface Mail {
  to: string[];
  subject: string;
  messageId: string;
  body: string;
}

function parseMail(raw: string, to: string[]): Mail {
  const split = raw.indexOf('\r\n\r\n');
  const head = raw.slice(0, split).replace(/\r\n[ \t]+/g, ' ');
  let body = raw.slice(split + 4);
  const header = (name: string) =>
    head
      .split('\r\n')
      .find((line) => line.toLowerCase().startsWith(`${name.toLowerCase()}:`))
      ?.slice(name.length + 1)
      .trim() ?? '';
  if (/quoted-printable/i.test(header('Content-Transfer-Encoding'))) {
    body = body.replace(/=\r\n/g, '').replace(/=([0-9A-F]{2})/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
  }
  return { to, subject: header('Subject'), messageId: header('Message-ID'), body };
}

async function startSmtp(): Promise<{ port: number; mails: Mail[]; close(): Promise<void> }> {
  const mails: Mail[] = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        mails.push(
          parseMail(
            Buffer.concat(chunks).toString('utf8'),
            session.envelope.rcptTo.map((rcpt) => rcpt.address),
          ),
        );
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.server.address() as AddressInfo).port;
  return { port, mails, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

// --- The world ---------------------------------------------------------------------------------

type Running = RunningService & { databaseUrl: string };

let nats: TestNats;
let smtp: Awaited<ReturnType<typeof startSmtp>>;
let nc: NatsConnection;
let jsm: JetStreamManager;
let client: RpcClient;
const running = new Map<string, Running>();
let paymentProcess: ServiceProcess | undefined;
let paymentDatabaseUrl: string;
const databases: Record<string, string> = {};

const serviceEnv = (extra: Record<string, string> = {}) => ({ RPC_TIMEOUT_MS: '5000', ...extra });

async function start<S>(key: string, definition: ServiceDefinition<S>, settings: object, env: Record<string, string> = {}) {
  databases[key] ??= testDatabaseUrl(key);
  const service = await startTestService(definition, nats, {
    settings: settings as never,
    env: serviceEnv(env),
    databaseUrl: databases[key]!,
  });
  running.set(key, service);
  return service;
}

async function stopService(key: string): Promise<void> {
  await running.get(key)?.stop();
  running.delete(key);
}

function startOrders(deadlineMs: number) {
  return start('order', orderService, OrderSettings, {
    ORDER_DEADLINE_MS: String(deadlineMs),
    ORDER_DEADLINE_SWEEP_MS: '100',
  });
}

before(async () => {
  nats = await startNats();
  smtp = await startSmtp();
  await start('customer', customerService, CustomerSettings);
  await start('product', productService, ProductSettings);
  await startOrders(30_000);
  await start('payment', paymentService, PaymentSettings);
  paymentDatabaseUrl = databases.payment!;
  await start('notification', notificationService, NotificationSettings, {
    SMTP_HOST: '127.0.0.1',
    SMTP_PORT: String(smtp.port),
    SMTP_FROM: 'The Shop <shop@example.com>',
    NOTIFY_RETRY_BASE_MS: '50',
  });
  // Cancelling a confirmed order asks it to hold the shipment; nothing ships during these tests (services/shipping/test/shipping.test.ts ships).
  await start('shipping', shippingService, ShippingSettings, { SHIPPING_SHIP_AFTER_MS: '600000' });
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  jsm = await nc.jetstreamManager();
  client = new RpcClient(nc, { timeoutMs: 10_000 });
});

after(async () => {
  client?.close();
  await nc?.drain().catch(() => {});
  await paymentProcess?.stop();
  for (const key of [...running.keys()].reverse()) await stopService(key);
  await smtp?.close();
  await nats?.cleanup();
  await dropTestDatabases();
});

// --- Helpers -----------------------------------------------------------------------------------

async function newCustomer(): Promise<Customer> {
  return client.call(customers.register, { email: `${randomUUID()}@example.com`, name: 'Grace', password: 'correct horse' });
}

async function newProduct(stock: number, amount = 1000): Promise<Product> {
  const sku = `SAGA-${randomUUID().slice(0, 8)}`;
  return client.call(products.create, { sku, name: `Widget ${sku}`, price: { amount, currency: 'EUR' }, initialStock: stock });
}

async function place(customer: Customer, product: Product, quantity = 1, paymentToken = 'tok_visa'): Promise<Order> {
  return client.call(orders.place, {
    idempotencyKey: randomUUID(),
    customerId: customer.id,
    lines: [{ productId: product.id, quantity }],
    paymentToken,
  });
}

async function available(product: Product): Promise<number> {
  return (await client.call(products.get, { id: product.id })).available;
}

async function untilTerminal(id: string, timeoutMs = 20_000): Promise<Order> {
  return waitFor(
    async () => {
      const order = await client.call(orders.get, { id });
      return order.status === 'PENDING' ? undefined : order;
    },
    { timeoutMs, intervalMs: 50, what: `order ${id} to leave PENDING` },
  );
}

async function paymentOf(orderId: string): Promise<Payment | undefined> {
  try {
    return await client.call(payments.getByOrder, { orderId });
  } catch (error) {
    if (error instanceof ServiceError && error.code === 'PAYMENT_NOT_FOUND') return undefined;
    throw error;
  }
}

function mailsTo(customer: Customer): Mail[] {
  return smtp.mails.filter((mail) => mail.to.includes(customer.email));
}

async function untilMails(customer: Customer, count: number): Promise<Mail[]> {
  return waitFor(() => (mailsTo(customer).length >= count ? mailsTo(customer) : undefined), {
    what: `${count} email(s) to ${customer.email}`,
  });
}

const SAGA_STREAMS = [streams.ORDERS.name, streams.INVENTORY.name, streams.PAYMENTS.name];

/** Every event of the saga's streams, oldest first, optionally only those of one order. */
async function sagaEvents(orderId?: string): Promise<{ stream: string; subject: string; envelope: Envelope<{ orderId: string }> }[]> {
  const found = [];
  for (const stream of SAGA_STREAMS) {
    const { state } = await jsm.streams.info(stream);
    for (let seq = state.first_seq; state.messages > 0 && seq <= state.last_seq; seq++) {
      const message = await jsm.streams.getMessage(stream, { seq });
      const envelope = message.json<Envelope<{ orderId: string }>>();
      if (!orderId || envelope.data.orderId === orderId) found.push({ stream, subject: message.subject, envelope });
    }
  }
  return found;
}

async function subjectsOf(orderId: string): Promise<string[]> {
  return (await sagaEvents(orderId)).map((event) => event.subject).sort();
}

async function queryDb<T extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    return (await db.query<T>(sql, params)).rows;
  } finally {
    await db.end();
  }
}

/**
 * Everything has come to rest: every durable consumer of the saga's streams
 * has nothing pending or unacknowledged, every outbox is empty and no email
 * waits, twice in a row with the same stream positions.
 */
async function quiescent(): Promise<void> {
  let previous = '';
  await waitFor(
    async () => {
      const positions: string[] = [];
      for (const stream of SAGA_STREAMS) {
        positions.push(`${stream}:${(await jsm.streams.info(stream)).state.last_seq}`);
        for await (const consumer of jsm.consumers.list(stream)) {
          if (consumer.num_pending > 0 || consumer.num_ack_pending > 0) return undefined;
          positions.push(`${consumer.name}:${consumer.delivered.stream_seq}`);
        }
      }
      for (const [key, url] of Object.entries(databases)) {
        const [{ count }] = (await queryDb<{ count: number }>(url, 'SELECT count(*)::int AS count FROM outbox')) as [{ count: number }];
        if (count > 0) return undefined;
        if (key === 'notification') {
          const [{ pending }] = (await queryDb<{ pending: number }>(
            url,
            `SELECT count(*)::int AS pending FROM notifications WHERE status = 'PENDING'`,
          )) as [{ pending: number }];
          if (pending > 0) return undefined;
        }
      }
      const now = positions.join(',');
      const stable = now === previous;
      previous = now;
      return stable;
    },
    { timeoutMs: 30_000, intervalMs: 100, what: 'the saga to come to rest' },
  );
}

/** Net money the payment provider holds per order: captured charges minus refunds (the simulator's books). */
async function ledger(): Promise<Map<string, number>> {
  const rows = await queryDb<{ order_id: string; net: number }>(
    paymentDatabaseUrl,
    `SELECT charge.idempotency_key AS order_id,
            (charge.amount - coalesce(sum(refund.amount), 0))::bigint AS net
     FROM simulator_ledger charge
     LEFT JOIN simulator_ledger refund ON refund.operation = 'refund' AND refund.charge_reference = charge.reference
     WHERE charge.operation = 'charge' AND charge.outcome = 'captured'
     GROUP BY charge.idempotency_key, charge.amount`,
  );
  return new Map(rows.map((row) => [row.order_id, Number(row.net)]));
}

/** Every order is final, and the money and the stock agree with the outcomes. */
async function assertBooksBalance(placed: Order[], product: Product, initialStock: number): Promise<Order[]> {
  const final: Order[] = [];
  // One order at a time: by the time the first is final most others are too.
  for (const order of placed) final.push(await untilTerminal(order.id, 60_000));
  await quiescent();
  const money = await ledger();
  let sold = 0;
  for (const order of final) {
    const payment = await paymentOf(order.id);
    const net = money.get(order.id) ?? 0;
    if (order.status === 'CONFIRMED') {
      sold += order.lines.reduce((sum, line) => sum + line.quantity, 0);
      assert.equal(payment?.status, 'CAPTURED', `confirmed order ${order.id} is paid`);
      assert.equal(net, order.total.amount, `the provider holds the total of confirmed order ${order.id}`);
    } else {
      assert.notEqual(payment?.status, 'CAPTURED', `cancelled order ${order.id} keeps no captured payment`);
      assert.equal(net, 0, `the provider holds nothing for cancelled order ${order.id}`);
    }
  }
  assert.equal(await available(product), initialStock - sold, 'stock went down by exactly what was sold');
  return final;
}

// --- The flows ---------------------------------------------------------------------------------

test('happy path: placed, reserved, captured, CONFIRMED; one email; the stock went down', async () => {
  const customer = await newCustomer();
  const product = await newProduct(10, 2500);
  const order = await place(customer, product, 3);
  assert.equal(order.status, 'PENDING');

  const done = await untilTerminal(order.id);
  assert.equal(done.status, 'CONFIRMED');
  assert.deepEqual(
    done.history.map((entry) => entry.status),
    ['PENDING', 'CONFIRMED'],
  );
  assert.equal(await available(product), 7);

  const payment = await paymentOf(order.id);
  assert.equal(payment?.status, 'CAPTURED');
  assert.deepEqual(payment?.amount, { amount: 7500, currency: 'EUR' });

  const [mail] = await untilMails(customer, 1);
  assert.match(mail!.subject, /confirmed/i);
  assert.match(mail!.body, new RegExp(order.id));
  await quiescent();
  assert.equal(mailsTo(customer).length, 1);
  assert.deepEqual(await subjectsOf(order.id), [
    'inventory.events.reserved',
    'orders.events.confirmed',
    'orders.events.placed',
    'payments.events.captured',
  ]);
});

test('out of stock: rejected, CANCELLED, nothing charged, one email with the reason', async () => {
  const customer = await newCustomer();
  const product = await newProduct(2);
  const order = await place(customer, product, 3);

  const done = await untilTerminal(order.id);
  assert.equal(done.status, 'CANCELLED');
  assert.equal(done.cancelReason, 'OUT_OF_STOCK');
  const reason = done.history.at(-1)!.reason!;
  assert.ok(reason.length > 0);
  assert.equal(await available(product), 2);

  const [mail] = await untilMails(customer, 1);
  assert.match(mail!.subject, /cancelled/i);
  assert.ok(mail!.body.includes(reason), `the email gives the reason: ${reason}`);
  await quiescent();
  const payment = await paymentOf(order.id);
  assert.ok(payment === undefined || payment.status === 'DECLINED', 'nothing was charged');
  assert.equal((await ledger()).get(order.id), undefined);
  assert.equal(mailsTo(customer).length, 1);
});

test('declined card: CANCELLED, the reservation released, the stock back', async () => {
  const customer = await newCustomer();
  const product = await newProduct(5);
  const order = await place(customer, product, 2, 'tok_decline');

  const done = await untilTerminal(order.id);
  assert.equal(done.status, 'CANCELLED');
  assert.equal(done.cancelReason, 'PAYMENT_DECLINED');
  assert.equal((await paymentOf(order.id))?.status, 'DECLINED');
  await waitFor(async () => (await available(product)) === 5, { what: 'the reservation to be released' });
  await quiescent();
  assert.deepEqual(await subjectsOf(order.id), [
    'inventory.events.released',
    'inventory.events.reserved',
    'orders.events.cancelled',
    'orders.events.placed',
    'payments.events.declined',
  ]);
  assert.equal(mailsTo(customer).length, 1);
  assert.match(mailsTo(customer)[0]!.subject, /cancelled/i);
});

test('a customer cancels a confirmed order: refunded, stock released, an email for each step', async () => {
  const customer = await newCustomer();
  const product = await newProduct(4, 1999);
  const order = await place(customer, product, 1);
  assert.equal((await untilTerminal(order.id)).status, 'CONFIRMED');
  assert.equal(await available(product), 3);

  const cancelled = await client.call(orders.cancel, { id: order.id, customerId: customer.id, reason: 'found it cheaper' });
  assert.equal(cancelled.status, 'CANCELLED');
  assert.equal(cancelled.cancelReason, 'CUSTOMER_CANCELLED');

  await waitFor(async () => (await paymentOf(order.id))?.status === 'REFUNDED', { what: 'the refund' });
  await waitFor(async () => (await available(product)) === 4, { what: 'the stock to come back' });
  const mails = await untilMails(customer, 3);
  await quiescent();
  assert.equal(mailsTo(customer).length, 3);
  assert.deepEqual(mails.map((mail) => /confirmed|cancelled|refund/i.exec(mail.subject)?.[0]?.toLowerCase()).sort(), [
    'cancelled',
    'confirmed',
    'refund',
  ]);
  assert.equal((await ledger()).get(order.id), 0);
  const notes = await client.call(notifications.listByCustomer, { customerId: customer.id });
  assert.equal(notes.items.length, 3);
  assert.ok(notes.items.every((note) => note.status === 'SENT'));
});

test('every event delivered twice: every effect still happens once', async () => {
  await quiescent();
  const before = await sagaEvents();
  const orderIds = [...new Set(before.map((event) => event.envelope.data.orderId))];
  const snapshot = async () => ({
    orders: await Promise.all(orderIds.map((id) => client.call(orders.get, { id }))),
    payments: await Promise.all(orderIds.map(paymentOf)),
    ledger: [...(await ledger())].sort(),
    mails: smtp.mails.length,
    notifications: await queryDb(databases.notification!, 'SELECT id, status, attempts FROM notifications ORDER BY id'),
    stock: await queryDb(databases.product!, 'SELECT id, on_hand, reserved FROM products ORDER BY id'),
  });
  const state = await snapshot();
  assert.ok(before.length >= 15, 'the earlier flows left events to repeat');

  // The same envelopes under new Nats-Msg-Ids: JetStream stores them again, only the consumers can tell.
  const js = nc.jetstream();
  for (const { subject, envelope } of before) {
    await js.publish(subject, JSON.stringify(envelope), { msgID: randomUUID() });
  }
  await quiescent();

  assert.equal((await sagaEvents()).length, before.length * 2, 'no event caused a new event');
  assert.deepEqual(await snapshot(), state);
});

test('200 concurrent orders for the last 20 units: exactly 20 sold, every order final, payments match', async () => {
  const product = await newProduct(20, 500);
  const buyers = await Promise.all(Array.from({ length: 10 }, newCustomer));
  // Never below zero: the product contract has `available >= 0`, so a negative would fail this read.
  let watching = true;
  const lowest = (async () => {
    let min = Infinity;
    while (watching) {
      min = Math.min(min, await available(product));
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return min;
  })();

  const placed = await Promise.all(Array.from({ length: 200 }, (_, i) => place(buyers[i % buyers.length]!, product)));
  const final = await assertBooksBalance(placed, product, 20);
  watching = false;
  assert.ok((await lowest) >= 0);

  const confirmed = final.filter((order) => order.status === 'CONFIRMED');
  assert.equal(confirmed.length, 20);
  assert.ok(final.filter((order) => order.status === 'CANCELLED').every((order) => order.cancelReason === 'OUT_OF_STOCK'));
  assert.equal(await available(product), 0);
  const captured = (await Promise.all(final.map((order) => paymentOf(order.id)))).filter((p) => p?.status === 'CAPTURED');
  assert.equal(captured.length, confirmed.length);
  // One email per outcome.
  await waitFor(() => buyers.every((buyer) => mailsTo(buyer).length === 20), { what: 'an email per order' });
});

test('the deadline cancels an order whose payment service is down; nothing is charged once it is back', async () => {
  await stopService('payment');
  await stopService('order');
  await startOrders(1500);
  const customer = await newCustomer();
  const product = await newProduct(3);
  const order = await place(customer, product, 2);

  const done = await untilTerminal(order.id);
  assert.equal(done.status, 'CANCELLED');
  assert.equal(done.cancelReason, 'DEADLINE_EXCEEDED');
  await waitFor(async () => (await available(product)) === 3, { what: 'the reservation to be released' });
  const [mail] = await untilMails(customer, 1);
  assert.match(mail!.subject, /cancelled/i);

  // The payment service returns, as a real process: it hears the reservation and the cancellation.
  paymentProcess = await spawnService('payment', { NATS_URL: nats.url, DATABASE_URL: paymentDatabaseUrl });
  await quiescent();
  const payment = await paymentOf(order.id);
  assert.ok(payment === undefined || payment.status === 'REFUNDED', `no money kept (payment ${payment?.status})`);
  assert.equal((await ledger()).get(order.id) ?? 0, 0);
  assert.equal(done.status, (await client.call(orders.get, { id: order.id })).status);
});

test('kill -9 of the payment service with orders in flight, then restart: every order final, stock and money add up', async () => {
  // Deadlines far enough out that the restarted payment service, not the sweeper, finishes these orders.
  await stopService('order');
  await startOrders(120_000);
  await paymentProcess?.stop();
  paymentProcess = await spawnService('payment', {
    NATS_URL: nats.url,
    DATABASE_URL: paymentDatabaseUrl,
    PAYMENT_DELAY_MS: '200',
  });
  const customer = await newCustomer();
  const product = await newProduct(1000, 300);
  const placed = await Promise.all(
    Array.from({ length: 40 }, (_, i) => place(customer, product, 1 + (i % 3), i % 7 === 0 ? 'tok_decline' : 'tok_visa')),
  );

  const charged = async () => {
    const money = await ledger();
    return placed.filter((order) => money.has(order.id)).length;
  };
  // Some payments are through, others in the provider's hands: kill it there.
  await waitFor(async () => (await charged()) >= 3, { intervalMs: 5, what: 'the first charges' });
  paymentProcess.child.kill('SIGKILL');
  await paymentProcess.exited;
  const before = await charged();
  assert.ok(before < 40 - Math.ceil(40 / 7), `killed with orders in flight (${before} charged)`);
  // What the dead process held comes back after the consumers' ack wait (30 s): the longest wait of this file.

  paymentProcess = await spawnService('payment', { NATS_URL: nats.url, DATABASE_URL: paymentDatabaseUrl });
  const final = await assertBooksBalance(placed, product, 1000);
  for (const order of final) {
    const declining = placed.findIndex((p) => p.id === order.id) % 7 === 0;
    assert.equal(order.status, declining ? 'CANCELLED' : 'CONFIRMED', `order ${order.id}`);
  }
});
