// Order.shipment over GraphQL, on the whole shop on real servers: the
// shipment of a confirmed order is read with its order (one
// shipments.getByOrders for a page of orders), and orderUpdated pushes each
// step the carrier makes (bff/feed.ts follows SHIPMENTS too). A cancel after
// the order shipped is refused with ORDER_NOT_CANCELLABLE.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect, type NatsConnection } from 'nats';
import { shipments } from '../../subjects/index.ts';
import { ADMIN_EMAIL, gql, ok, openWs, startStack, waitFor, type Stack } from './stack.ts';

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

const SHIPMENT = 'shipment { status carrier trackingNumber history { status at note } }';

test('a shipment reaches GraphQL: read with its orders, pushed live at each step, and a shipped order cannot be cancelled', async () => {
  const { url } = stack;
  const admin = await ok(url, `mutation { register(email: "${ADMIN_EMAIL}", name: "Admin", password: "correct horse") { token } }`);
  const { createProduct: product } = await ok(
    url,
    `mutation($input: CreateProductInput!) { createProduct(input: $input) { id } }`,
    { input: { sku: `ship-${randomUUID().slice(0, 8)}`, name: 'Globe', price: { amount: 4200, currency: 'EUR' }, initialStock: 10 } },
    admin.register.token,
  );
  const { register: customer } = await ok(
    url,
    `mutation { register(email: "${randomUUID()}@shop.test", name: "Ship Mate", password: "correct horse") { token } }`,
  );
  const { placeOrder } = await ok(
    url,
    `mutation($lines: [OrderLineInput!]!) { placeOrder(lines: $lines, paymentToken: "tok_visa") { id ${SHIPMENT} } }`,
    { lines: [{ productId: product.id, quantity: 1 }] },
    customer.token,
  );
  assert.equal(placeOrder.shipment, null, 'a PENDING order has no shipment');

  // Watch it: every step of the order and of its shipment is pushed.
  const ws = await openWs(url, customer.token);
  ws.send({
    id: 'watch',
    type: 'subscribe',
    payload: { query: `subscription($id: ID!) { orderUpdated(id: $id) { status ${SHIPMENT} } }`, variables: { id: placeOrder.id } },
  });
  const pushed = (status: string) =>
    ws.waitFor(
      (m) => m.id === 'watch' && m.type === 'next' && m.payload?.data?.orderUpdated?.shipment?.status === status,
      `a push with the shipment ${status}`,
    );
  await pushed('LABEL_CREATED');
  const shipped = await pushed('SHIPPED');
  assert.match(shipped.payload.data.orderUpdated.shipment.trackingNumber, /^SP[0-9A-F]{16}$/);

  // Shipped: the cancel is refused, saying why.
  const cancel = await gql(url, `mutation($id: ID!) { cancelOrder(id: $id) { id status } }`, { id: placeOrder.id }, customer.token);
  assert.equal(cancel.errors?.[0]?.extensions.code, 'ORDER_NOT_CANCELLABLE');
  assert.match(cancel.errors?.[0]?.message ?? '', /shipped/);

  const delivered = await pushed('DELIVERED');
  assert.deepEqual(
    delivered.payload.data.orderUpdated.shipment.history.map((step: { status: string }) => step.status),
    ['LABEL_CREATED', 'SHIPPED', 'DELIVERED'],
  );
  assert.equal(delivered.payload.data.orderUpdated.status, 'CONFIRMED');
  await ws.close();

  // Read back with the customer's orders: one shipments.getByOrders for the page.
  const asked = nc.subscribe(shipments.getByOrders.subject);
  let calls = 0;
  void (async () => {
    for await (const _ of asked) calls++;
  })();
  await nc.flush();
  const { orders } = await ok(url, `{ orders(first: 10) { edges { node { id ${SHIPMENT} } } } }`, {}, customer.token);
  await waitFor(() => calls > 0, { what: 'the shipments lookup' });
  asked.unsubscribe();
  assert.equal(calls, 1);
  assert.equal(orders.edges[0].node.shipment.status, 'DELIVERED');
  assert.equal(orders.edges[0].node.shipment.carrier, 'SimPost');
});
