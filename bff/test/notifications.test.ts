// Order.notifications for a customer with a long history: the whole shop on
// real servers, one order placed through GraphQL and delivered, then more than
// 500 other emails recorded for the same customer after it. The oldest order
// still shows its emails, read by order (notifications.listByOrders), not found
// among the customer's newest ones.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect, type NatsConnection } from 'nats';
import { payments } from '../../subjects/index.ts';
import { publishEvent } from '../../test/messaging.ts';
import { ADMIN_EMAIL, ok, startStack, waitFor, type Stack } from './stack.ts';

/** More than the 500 newest a listing by customer used to read. */
const LATER_EMAILS = 520;

let stack: Stack;
let nc: NatsConnection;

before(async () => {
  stack = await startStack();
  nc = await connect({ servers: stack.nats.url, noAsyncTraces: true });
});

after(async () => {
  await nc?.drain().catch(() => {});
  await stack?.close();
});

const ORDER = `query($id: ID!) { order(id: $id) { id status notifications { eventType subject } } }`;

test('the oldest order of a customer with more than 500 emails still shows its own', async () => {
  const { url } = stack;
  const admin = await ok(url, `mutation { register(email: "${ADMIN_EMAIL}", name: "Admin", password: "correct horse") { token } }`);
  const { createProduct: product } = await ok(
    url,
    `mutation($input: CreateProductInput!) { createProduct(input: $input) { id } }`,
    { input: { sku: 'lamp', name: 'Lamp', price: { amount: 2500, currency: 'EUR' }, initialStock: 5 } },
    admin.register.token,
  );
  const { register: customer } = await ok(
    url,
    `mutation { register(email: "long@shop.test", name: "Long History", password: "correct horse") { token customer { id } } }`,
  );
  const { placeOrder } = await ok(
    url,
    `mutation($lines: [OrderLineInput!]!) { placeOrder(lines: $lines, paymentToken: "tok_visa") { id } }`,
    { lines: [{ productId: product.id, quantity: 1 }] },
    customer.token,
  );
  // The order's whole life first: confirmed, then shipped and delivered by the
  // shipping service seconds later. Only then the other emails, so what the order
  // shows at the end can be told apart from what arrived after it.
  const OWN = ['shipments.events.delivered', 'shipments.events.shipped', 'orders.events.confirmed'];
  const oldest = await waitFor(
    async () => {
      const { order } = await ok(url, ORDER, { id: placeOrder.id }, customer.token);
      return order.notifications.length >= OWN.length && order;
    },
    // Polled gently: every request counts against the customer's rate limit (300 a minute).
    { what: 'the emails of the first order: confirmed, shipped, delivered', timeoutMs: 30_000, intervalMs: 250 },
  );
  assert.deepEqual(
    oldest.notifications.map((n: { eventType: string }) => n.eventType),
    OWN,
    'the first order has its three emails, newest first',
  );

  // Later emails of the same customer, about other orders: refunds, as the payment
  // service would announce them (nothing else in the shop reacts to those).
  const js = nc.jetstream();
  for (let i = 0; i < LATER_EMAILS; i++) {
    await publishEvent(js, payments.refunded, {
      paymentId: randomUUID(),
      orderId: randomUUID(),
      customerId: customer.customer.id,
      amount: { amount: 100, currency: 'EUR' },
    });
  }
  const notificationsDb = stack.running.get('notifications')!.context.pool;
  await waitFor(
    async () => {
      // Sent, not only recorded: the service is quiet again before the question that matters.
      const { rows } = await notificationsDb.query<{ count: number }>(
        "SELECT count(*)::int AS count FROM notifications WHERE customer_id = $1 AND status = 'SENT'",
        [customer.customer.id],
      );
      return rows[0]!.count === LATER_EMAILS + OWN.length;
    },
    { what: `${LATER_EMAILS + OWN.length} notifications sent`, timeoutMs: 90_000 },
  );

  const { order } = await ok(url, ORDER, { id: placeOrder.id }, customer.token);
  assert.deepEqual(
    order.notifications.map((n: { eventType: string }) => n.eventType),
    OWN,
    'the first order shows its own emails, and nothing of the later orders',
  );
  // And in the list of orders, batched with the rest of the page.
  const { orders } = await ok(url, `{ orders(first: 5) { edges { node { id notifications { eventType } } } } }`, {}, customer.token);
  assert.deepEqual(
    orders.edges.map((e: { node: { id: string } }) => e.node.id),
    [placeOrder.id],
  );
  assert.equal(orders.edges[0].node.notifications.length, OWN.length);
});
