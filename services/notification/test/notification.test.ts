// The notification service against a real nats-server, PostgreSQL, SMTP
// server (smtp-server) and the real customer service for email lookups.
// Events are published straight into JetStream, as the other services' relays do.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect, type JetStreamClient, type JetStreamManager, type NatsConnection } from 'nats';
import {
  ERROR_CODE_HEADER,
  customers,
  notifications,
  orders,
  payments,
  type Customer,
  type Money,
  type Notification,
} from '../../../subjects/index.ts';
import { DeadLetterHeaders, RpcClient, ServiceError } from '../../kit/index.ts';
import { CustomerSettings, customerService } from '../../customer/app.ts';
import { NotificationSettings, notificationService } from '../app.ts';
import { dropTestDatabases, startNats, startTestService, waitFor, type TestNats } from '../../../test/harness.ts';
import { rawRequest, withCode } from '../../../test/messaging.ts';
import { publishEvent, publishRaw } from './publish.ts';
import { startSmtpServer, type TestSmtpServer } from './smtp.ts';

const RETRY_BASE_MS = 100;

let nats: TestNats;
let smtp: TestSmtpServer;
let customerSvc: Awaited<ReturnType<typeof startTestService>>;
let notificationSvc: Awaited<ReturnType<typeof startTestService>>;
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
let client: RpcClient;

function startNotifications(databaseUrl?: string) {
  return startTestService(notificationService, nats, {
    settings: NotificationSettings,
    env: {
      SMTP_PORT: String(smtp.port),
      NOTIFY_RETRY_BASE_MS: String(RETRY_BASE_MS),
      // Enough attempts that a held-back recipient never runs out during a test.
      NOTIFY_MAX_ATTEMPTS: '30',
    },
    ...(databaseUrl ? { databaseUrl } : {}),
  });
}

before(async () => {
  nats = await startNats();
  smtp = await startSmtpServer();
  customerSvc = await startTestService(customerService, nats, { settings: CustomerSettings });
  notificationSvc = await startNotifications();
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
  const email = `${name.toLowerCase().replace(/[^a-z]/g, '')}-${randomUUID().slice(0, 8)}@example.com`;
  return client.call(customers.register, { email, name, password: 'correct horse battery' });
}

async function list(customerId: string): Promise<Notification[]> {
  return (await client.call(notifications.listByCustomer, { customerId, first: 100 })).items;
}

/** The one notification of `orderId`, once it has `status`. */
function settled(customerId: string, orderId: string, status: Notification['status']): Promise<Notification> {
  return waitFor(async () => (await list(customerId)).find((n) => n.orderId === orderId && n.status === status), {
    what: `notification of ${orderId} to be ${status}`,
  });
}

const eur = (amount: number): Money => ({ amount, currency: 'EUR' });

function confirmed(customer: Customer, total: Money = eur(1999)) {
  return { orderId: randomUUID(), customerId: customer.id, total };
}

function ref(orderId: string): string {
  return `#${orderId.slice(0, 8).toUpperCase()}`;
}

test('each order outcome sends the customer one email with its details', async () => {
  const zoe = await register('Zoë Ålander');
  const order = confirmed(zoe, eur(123_450));
  const cancelledOrderId = randomUUID();
  const refundedOrderId = randomUUID();
  await publishEvent(js, orders.confirmed, order);
  await publishEvent(js, orders.cancelled, {
    orderId: cancelledOrderId,
    customerId: zoe.id,
    reasonCode: 'PAYMENT_DECLINED',
    reason: 'the card was declined: insufficient funds',
    previousStatus: 'PENDING',
    total: eur(5),
  });
  await publishEvent(js, payments.refunded, {
    paymentId: randomUUID(),
    orderId: refundedOrderId,
    customerId: zoe.id,
    amount: { amount: 1200, currency: 'JPY' },
  });

  const sent = await Promise.all([
    settled(zoe.id, order.orderId, 'SENT'),
    settled(zoe.id, cancelledOrderId, 'SENT'),
    settled(zoe.id, refundedOrderId, 'SENT'),
  ]);
  const mails = smtp.mailsTo(zoe.email);
  assert.equal(mails.length, 3);

  const mailOf = (n: Notification) => {
    const found = mails.filter((mail) => mail.messageId === `<${n.id}@shop>`);
    assert.equal(found.length, 1, `one mail with the Message-ID of notification ${n.id}`);
    return found[0]!;
  };
  for (const n of sent) {
    const mail = mailOf(n);
    assert.deepEqual(mail.rcptTo, [zoe.email]);
    assert.equal(mail.to, zoe.email);
    assert.equal(mail.from, 'The Shop <shop@example.com>');
    assert.equal(mail.mailFrom, 'shop@example.com');
    assert.equal(mail.subject, n.subject);
    assert.match(mail.text, /^Hello Zoë Ålander,\n/);
    assert.equal(n.email, zoe.email);
    assert.equal(n.attempts, 1);
    assert.equal(n.lastError, null);
    assert.ok(n.sentAt && Date.parse(n.sentAt) >= Date.parse(n.createdAt));
  }

  const [confirmedN, cancelledN, refundedN] = sent as [Notification, Notification, Notification];
  assert.equal(confirmedN.eventType, 'orders.events.confirmed');
  assert.equal(confirmedN.subject, `Your order ${ref(order.orderId)} is confirmed`);
  assert.match(mailOf(confirmedN).text, new RegExp(`\nOrder: ${order.orderId}\nTotal: EUR 1,234\\.50\n`));

  assert.equal(cancelledN.eventType, 'orders.events.cancelled');
  assert.equal(cancelledN.subject, `Your order ${ref(cancelledOrderId)} was cancelled`);
  const cancelledText = mailOf(cancelledN).text;
  assert.match(cancelledText, /\nReason: the card was declined: insufficient funds\n/);
  assert.match(cancelledText, /\nOrder total: EUR 0\.05\n/);
  assert.doesNotMatch(cancelledText, /refunded/, 'a declined payment was never charged');

  assert.equal(refundedN.eventType, 'payments.events.refunded');
  assert.equal(refundedN.subject, `Refund for your order ${ref(refundedOrderId)}`);
  assert.match(mailOf(refundedN).text, /\nRefunded: JPY 1,200\n/);
});

test('an event delivered twice sends one email', async () => {
  const dan = await register('Dan');
  const data = confirmed(dan);
  const first = await publishEvent(js, orders.confirmed, data);
  // The same Nats-Msg-Id is dropped by JetStream itself...
  const repeat = await publishEvent(js, orders.confirmed, data, { id: first.envelope.id });
  assert.equal(repeat.ack.duplicate, true);
  // ...so also send the same envelope under another Nats-Msg-Id: two messages in the stream, one event.
  const again = await publishRaw(js, orders.confirmed.subject, first.envelope, `${first.envelope.id}-again`);
  assert.equal(again.duplicate, false);

  await waitFor(
    async () => {
      const info = await jsm.consumers.info('ORDERS', 'notifications-order-confirmed');
      return info.delivered.stream_seq >= again.seq && info.num_ack_pending === 0;
    },
    { what: 'both copies to be handled' },
  );
  await settled(dan.id, data.orderId, 'SENT');
  assert.equal(smtp.mailsTo(dan.email).length, 1);
  assert.equal((await list(dan.id)).length, 1);
});

test('an event for a customer that does not exist is recorded as FAILED and sends nothing', async () => {
  const ghost = randomUUID();
  const data = { orderId: randomUUID(), customerId: ghost, total: eur(100) };
  await publishEvent(js, orders.confirmed, data);
  const n = await settled(ghost, data.orderId, 'FAILED');
  assert.match(n.lastError ?? '', new RegExp(`customer ${ghost} does not exist`));
  assert.equal(n.email, '');
  assert.equal(n.attempts, 0);
  assert.equal(n.sentAt, null);
  assert.equal(smtp.mails.filter((mail) => mail.subject.includes(ref(data.orderId))).length, 0);
});

test('events arriving together are recorded each for its own customer, with one lookup per batch', async () => {
  const [ann, bob] = await Promise.all([register('Ann Batch'), register('Bob Batch')]);
  const ghost = randomUUID();
  // Every customers.getMany the notification service sends, seen beside the customer service's queue group.
  let lookups = 0;
  const watch = nc.subscribe(customers.getMany.subject, { callback: () => lookups++ });
  await nc.flush();
  try {
    const sent = [ann, bob, ann, bob, ann, bob, ann, bob].map((customer) => confirmed(customer));
    const lost = { orderId: randomUUID(), customerId: ghost, total: eur(100) };
    // All stored while the service is stopped, so they are waiting together when it starts: published
    // while it runs, a busy machine could let it handle each on its own before the next arrived.
    const databaseUrl = notificationSvc.databaseUrl;
    await notificationSvc.stop();
    await Promise.all([...sent, lost].map((data) => publishEvent(js, orders.confirmed, data)));
    notificationSvc = await startNotifications(databaseUrl);
    for (const data of sent) {
      const customer = data.customerId === ann.id ? ann : bob;
      const n = await settled(customer.id, data.orderId, 'SENT');
      assert.equal(n.email, customer.email);
      const mails = smtp.mails.filter((mail) => mail.subject.includes(ref(data.orderId)));
      assert.equal(mails.length, 1);
      assert.match(mails[0]!.text, new RegExp(`Hello ${customer.name},`));
    }
    assert.match((await settled(ghost, lost.orderId, 'FAILED')).lastError ?? '', /does not exist/);
    assert.ok(lookups >= 1 && lookups < sent.length + 1, `${lookups} lookups for ${sent.length + 1} events`);
  } finally {
    watch.unsubscribe();
  }
});

test('a refused delivery is retried with back-off and arrives once; other emails are not held up', async () => {
  const erin = await register('Erin');
  const frank = await register('Frank');
  smtp.failNext(erin.email, 1000); // refuse Erin with 451 until released
  const erinOrder = confirmed(erin);
  await publishEvent(js, orders.confirmed, erinOrder);
  await waitFor(() => smtp.attemptsTo(erin.email).length >= 3, { what: 'three refused attempts for Erin' });

  const frankOrder = confirmed(frank);
  await publishEvent(js, orders.confirmed, frankOrder);
  await settled(frank.id, frankOrder.orderId, 'SENT');
  assert.equal(smtp.mailsTo(frank.email).length, 1);

  const waiting = (await list(erin.id))[0]!;
  assert.equal(waiting.status, 'PENDING');
  assert.ok(waiting.attempts >= 3);
  assert.match(waiting.lastError ?? '', /451/);
  assert.equal(smtp.mailsTo(erin.email).length, 0);

  smtp.failNext(erin.email, 0); // the server recovers
  // The next attempt comes one back-off after the last refusal: base·2^(n-1) after n refusals, which
  // doubles while the test runs (a slow machine's test has made more attempts, and waits longer for the next).
  const refusals = smtp.attemptsTo(erin.email).length + 1; // one more may be on its way
  const sent = await waitFor(async () => (await list(erin.id)).find((n) => n.orderId === erinOrder.orderId && n.status === 'SENT'), {
    timeoutMs: 10_000 + 2 * RETRY_BASE_MS * 2 ** (refusals - 1),
    what: "Erin's email to be SENT",
  });
  assert.equal(smtp.mailsTo(erin.email).length, 1);
  const tries = smtp.attemptsTo(erin.email);
  assert.equal(sent.attempts, tries.length);
  assert.deepEqual(
    tries.map((t) => t.code),
    [...Array(tries.length - 1).fill(451), 250],
  );
  // Each wait is at least the back-off: base, 2·base, 4·base, … (clocks agree to the millisecond).
  for (let i = 1; i < tries.length; i++) {
    const gap = tries[i]!.at - tries[i - 1]!.at;
    const backoff = Math.min(RETRY_BASE_MS * 2 ** (i - 1), 15 * 60_000);
    assert.ok(gap >= backoff - 2, `wait before attempt ${i + 1} was ${gap} ms, back-off ${backoff} ms`);
  }
});

test('emails still pending at a restart are sent by the next run, once', async () => {
  const ivan = await register('Ivan');
  smtp.failNext(ivan.email, 1000);
  const order = confirmed(ivan);
  await publishEvent(js, orders.confirmed, order);
  await waitFor(() => smtp.attemptsTo(ivan.email).length >= 1, { what: 'a refused attempt for Ivan' });

  const databaseUrl = notificationSvc.databaseUrl;
  await notificationSvc.stop();
  smtp.failNext(ivan.email, 0);
  notificationSvc = await startNotifications(databaseUrl);

  const sent = await settled(ivan.id, order.orderId, 'SENT');
  assert.equal(smtp.mailsTo(ivan.email).length, 1);
  assert.equal(smtp.mailsTo(ivan.email)[0]!.messageId, `<${sent.id}@shop>`);
});

test('two instances share the work: every email goes out exactly once', async () => {
  const second = await startNotifications(notificationSvc.databaseUrl);
  try {
    const jill = await register('Jill');
    const placed = await Promise.all(
      Array.from({ length: 12 }, (_, i) => publishEvent(js, orders.confirmed, confirmed(jill, eur(100 + i)))),
    );
    const all = await waitFor(
      async () => {
        const items = await list(jill.id);
        return items.length === placed.length && items.every((n) => n.status === 'SENT') && items;
      },
      { what: 'twelve emails sent' },
    );
    const mails = smtp.mailsTo(jill.email);
    assert.equal(mails.length, 12);
    assert.deepEqual(new Set(mails.map((mail) => mail.messageId)), new Set(all.map((n) => `<${n.id}@shop>`)));
  } finally {
    await second.stop();
  }
});

test('listByCustomer pages newest first with a cursor', async () => {
  const kim = await register('Kim');
  for (let i = 0; i < 5; i++) await publishEvent(js, orders.confirmed, confirmed(kim, eur(i + 1)));
  const everything = await waitFor(async () => {
    const items = await list(kim.id);
    return items.length === 5 && items;
  });
  // Newest first (createdAt is shown to the millisecond; the order underneath is finer).
  for (let i = 1; i < everything.length; i++) {
    assert.ok(Date.parse(everything[i - 1]!.createdAt) >= Date.parse(everything[i]!.createdAt));
  }

  const pages: Notification[][] = [];
  let after: string | undefined;
  do {
    const page = await client.call(notifications.listByCustomer, { customerId: kim.id, first: 2, ...(after ? { after } : {}) });
    pages.push(page.items);
    after = page.nextCursor ?? undefined;
  } while (after);
  assert.deepEqual(
    pages.map((page) => page.length),
    [2, 2, 1],
  );
  assert.deepEqual(
    pages.flat().map((n) => n.id),
    everything.map((n) => n.id),
  );

  const exact = await client.call(notifications.listByCustomer, { customerId: kim.id, first: 5 });
  assert.equal(exact.items.length, 5);
  assert.equal(exact.nextCursor, null, 'no cursor when nothing follows');

  const nobody = await client.call(notifications.listByCustomer, { customerId: randomUUID() });
  assert.deepEqual(nobody, { items: [], nextCursor: null });
});

test('bad requests answer VALIDATION_FAILED', async () => {
  const raw = async (payload: string) => {
    const reply = await nc.request(notifications.listByCustomer.subject, Buffer.from(payload), { timeout: 3000 });
    return { status: reply.headers?.get('Nats-Service-Error-Code'), code: reply.headers?.get(ERROR_CODE_HEADER) };
  };
  const refused = { status: '400', code: 'VALIDATION_FAILED' };
  assert.deepEqual(await raw('{not json'), refused);
  assert.deepEqual(await raw(JSON.stringify({ customerId: 'not-a-uuid' })), refused);
  assert.deepEqual(await raw(JSON.stringify({ customerId: randomUUID(), first: 0 })), refused);
  assert.deepEqual(await raw(JSON.stringify({ customerId: randomUUID(), first: 101 })), refused);
  assert.deepEqual(await raw(JSON.stringify({ customerId: randomUUID(), extra: true })), refused);

  await assert.rejects(
    client.call(notifications.listByCustomer, { customerId: randomUUID(), after: 'not-a-cursor' }),
    (error: unknown) => error instanceof ServiceError && error.code === 'VALIDATION_FAILED',
  );
});

test('an event that breaks its contract goes to the DLQ and sends nothing', async () => {
  const lea = await register('Lea');
  const id = randomUUID();
  // No total: not an orders.events.confirmed the contract allows.
  await publishRaw(js, orders.confirmed.subject, {
    id,
    type: orders.confirmed.subject,
    occurredAt: new Date().toISOString(),
    data: { orderId: randomUUID(), customerId: lea.id },
  });
  const dead = await waitFor(
    async () => {
      const msg = await jsm.streams.getMessage('DLQ', { last_by_subj: 'dlq.ORDERS.notifications-order-confirmed' });
      return (JSON.parse(new TextDecoder().decode(msg.data)) as { id: string }).id === id && msg;
    },
    { what: 'the dead letter' },
  );
  assert.match(dead.header.get(DeadLetterHeaders.error), /^poison: /);
  assert.deepEqual(await list(lea.id), []);
  assert.equal(smtp.mailsTo(lea.email).length, 0);

  // The consumer keeps going: a good event after the bad one is handled.
  const order = confirmed(lea);
  await publishEvent(js, orders.confirmed, order);
  await settled(lea.id, order.orderId, 'SENT');
});

// notifications.listByOrder: an order's emails, newest first, read through an
// index of their own, and only for the customer the order belongs to.

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
  assert.deepEqual(
    items.map((n) => n.eventType),
    ['payments.events.refunded', 'orders.events.confirmed'],
  );
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

test("the query reads the by-order index, not the customer's other emails, on a table where that is the only sensible plan", async () => {
  const pool = notificationSvc.context.pool;
  const { rows } = await pool.query<{ indexdef: string }>(
    "SELECT indexdef FROM pg_indexes WHERE tablename = 'notifications' AND indexname = 'notifications_by_order'",
  );
  assert.match(rows[0]?.indexdef ?? '', /\(order_id, created_at DESC, id DESC\)/);
  // On the test's few rows any plan is as good as another (a BitmapAnd of both indexes and a Sort was
  // seen), so the plan is read on a table shaped like a real one, in a transaction rolled back: 20 000
  // emails of 10 customers, two per order. An order's 2 rows against a customer's 2 000 or the whole
  // table: only the by-order index is worth reading. How it reads its 2 rows is left to the planner
  // (an index scan in order, or a bitmap scan and a sort of 2 rows cost about the same, and both are seen).
  const db = await pool.connect();
  try {
    await db.query('BEGIN');
    await db.query(
      `INSERT INTO notifications (id, event_id, event_type, customer_id, order_id, email, subject, body, status, created_at)
       SELECT gen_random_uuid(), 'plan-' || i, 'orders.events.confirmed', md5('customer' || i % 10)::uuid,
              md5('order' || i / 2)::uuid, 'plan@example.com', 'plan', '', 'SENT', now() - i * interval '1 second'
         FROM generate_series(0, 19999) AS i`,
    );
    await db.query('ANALYZE notifications');
    const { rows: asked } = await db.query<{ order_id: string; customer_id: string }>(
      "SELECT md5('order' || 4321)::uuid AS order_id, md5('customer' || 8642 % 10)::uuid AS customer_id",
    );
    const plan = await db.query<{ 'QUERY PLAN': string }>(
      'EXPLAIN SELECT id FROM notifications WHERE order_id = $1 AND customer_id = $2 ORDER BY created_at DESC, id DESC',
      [asked[0]!.order_id, asked[0]!.customer_id],
    );
    const text = plan.rows.map((row) => row['QUERY PLAN']).join('\n');
    assert.match(text, /Index Scan (using|on) notifications_by_order\b.*\n\s+Index Cond: \(order_id = /, text);
    assert.doesNotMatch(text, /notifications_by_customer|Seq Scan/, text);
  } finally {
    await db.query('ROLLBACK');
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
  await assert.rejects(client.call(notifications.listByOrder, { customerId: randomUUID() } as never), withCode('VALIDATION_FAILED'));
});
