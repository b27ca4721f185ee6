// A service going away costs the fields that need it, not the request: the
// BFF answers 200 with the data it could get and an error per missing field.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ADMIN_EMAIL, gql, ok, startStack, waitFor, type Stack } from './stack.ts';

let stack: Stack;
let url: string;
let token: string;
let orderId: string;
let productId: string;

const PAGE = `{
  me { id name }
  orders(first: 5) { edges { node { id status total { amount } lines { quantity name product { id name available } } } } }
}`;

before(async () => {
  stack = await startStack();
  url = stack.url;
  const admin = await ok(url, `mutation { register(email: "${ADMIN_EMAIL}", name: "Admin", password: "correct horse") { token } }`);
  const product = await ok(
    url,
    `mutation { createProduct(input: { sku: "lamp", name: "Lamp", price: { amount: 4500, currency: "EUR" }, initialStock: 10 }) { id } }`,
    {},
    admin.register.token,
  );
  productId = product.createProduct.id;
  const erin = await ok(url, `mutation { register(email: "erin@shop.test", name: "Erin", password: "correct horse") { token } }`);
  token = erin.register.token;
  const placed = await ok(
    url,
    `mutation($id: ID!) { placeOrder(lines: [{ productId: $id, quantity: 1 }], paymentToken: "tok_visa") { id } }`,
    { id: productId },
    token,
  );
  orderId = placed.placeOrder.id;
  await waitFor(async () => (await ok(url, `{ order(id: "${orderId}") { status } }`, {}, token)).order.status === 'CONFIRMED', {
    what: 'the order to be confirmed',
  });
});

after(async () => {
  await stack?.close();
});

test('with the product service stopped, orders keep their products (from the catalog replica) and a search comes back as an error, not a 500', async () => {
  await stack.stopService('products');

  const response = await gql(url, PAGE, {}, token);
  assert.equal(response.status, 200);
  assert.equal(response.data?.me.name, 'Erin', 'the customer service still answers');
  assert.ok(response.data, 'an answer with data');
  const [edge] = response.data.orders.edges;
  assert.equal(edge.node.id, orderId, 'the order service still answers');
  assert.equal(edge.node.status, 'CONFIRMED');
  assert.equal(edge.node.lines[0].name, 'Lamp', 'what the order itself knows is served');
  assert.equal(edge.node.lines[0].product?.name, 'Lamp', "the product as it is now, from the BFF's catalog replica");
  assert.equal(response.errors, undefined);

  // A search is the product service's alone: null with its error, still 200.
  const catalog = await gql(url, `{ products(search: "Lamp") { edges { node { id } } } me { id } }`, {}, token);
  assert.equal(catalog.status, 200);
  assert.equal(catalog.data?.products, null);
  assert.ok(catalog.data?.me.id);
  assert.equal(catalog.errors?.length, 1);
  assert.equal(catalog.errors?.[0]?.extensions.code, 'SERVICE_UNAVAILABLE');
  assert.doesNotMatch(catalog.errors![0]!.message, /products\.|_INBOX|nats/i, 'no internals');

  const ready = await fetch(`${url}/health/ready`);
  assert.equal(ready.status, 503);
  const body = (await ready.json()) as { checks: { nats: boolean; services: Record<string, boolean> } };
  assert.equal(body.checks.nats, true);
  assert.equal(body.checks.services.products, false);
  assert.equal(body.checks.services.orders, true);
  assert.equal((await fetch(`${url}/health/live`)).status, 200, 'alive all the same');
});

test('when the product service is back, its fields are served again', async () => {
  await stack.startService('products');
  // The breaker lets a trial call through after its reset time; poll until it closes.
  const data = await waitFor(
    async () => {
      const response = await gql(url, PAGE, {}, token);
      return !response.errors && response.data;
    },
    { what: 'product fields to come back' },
  );
  assert.equal(data!.orders.edges[0].node.lines[0].product.id, productId);
  assert.equal(data!.orders.edges[0].node.lines[0].product.available, 9);
  await waitFor(async () => (await fetch(`${url}/health/ready`)).status === 200, { what: 'ready again' });
});

test('with the order service stopped too, each field fails on its own', async () => {
  await stack.stopService('orders');
  const response = await gql(url, PAGE, {}, token);
  assert.equal(response.status, 200);
  assert.equal(response.data?.me.name, 'Erin');
  assert.equal(response.data?.orders, null);
  assert.deepEqual(
    response.errors?.map((e) => [e.path?.join('.'), e.extensions.code]),
    [['orders', 'SERVICE_UNAVAILABLE']],
  );

  const place = await gql(
    url,
    `mutation($id: ID!) { placeOrder(lines: [{ productId: $id, quantity: 1 }], paymentToken: "tok_visa") { id } }`,
    { id: productId },
    token,
  );
  assert.equal(place.status, 200);
  assert.equal(place.data, null);
  assert.equal(place.errors?.[0]?.extensions.code, 'SERVICE_UNAVAILABLE');
  await stack.startService('orders');
});
