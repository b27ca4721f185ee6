// orders.place / get / listByCustomer / cancel against a real NATS server,
// real PostgreSQL, and the real customer and product services for lookups.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { orders, type Customer, type Order, type Product } from '../../../subjects/index.ts';
import { ServiceError } from '../../kit/index.ts';
import { createProduct, placeOrder, registerCustomer, startWorld, streamEvents, type World } from './fixtures.ts';

let world: World;
let ada: Customer;
let bob: Customer;
let pen: Product;
let ink: Product;
let dollarThing: Product;

before(async () => {
  world = await startWorld();
  [ada, bob] = await Promise.all([registerCustomer(world.client, 'Ada'), registerCustomer(world.client, 'Bob')]);
  [pen, ink, dollarThing] = await Promise.all([
    createProduct(world.client, { amount: 1250, currency: 'EUR' }),
    createProduct(world.client, { amount: 399, currency: 'EUR' }),
    createProduct(world.client, { amount: 500, currency: 'USD' }),
  ]);
});

after(async () => {
  await world?.stop();
});

async function rejection(promise: Promise<unknown>): Promise<ServiceError> {
  const error = await promise.then(
    () => assert.fail('expected a rejection'),
    (caught: unknown) => caught,
  );
  assert.ok(error instanceof ServiceError, `expected a ServiceError, got ${String(error)}`);
  return error;
}

async function ordersOf(customerId: string): Promise<Order[]> {
  return (await world.client.call(orders.listByCustomer, { customerId, first: 100 })).items;
}

test('place merges duplicate lines, prices them in minor units and stores a PENDING order with its event', async () => {
  const order = await world.client.call(orders.place, {
    idempotencyKey: randomUUID(),
    customerId: ada.id,
    lines: [
      { productId: pen.id, quantity: 2 },
      { productId: ink.id, quantity: 3 },
      { productId: pen.id, quantity: 1 },
    ],
    paymentToken: 'tok_visa',
  });

  assert.equal(order.status, 'PENDING');
  assert.equal(order.customerId, ada.id);
  assert.deepEqual(
    order.lines.map((line) => [line.productId, line.sku, line.quantity, line.unitPrice.amount, line.lineTotal.amount]),
    [
      [pen.id, pen.sku, 3, 1250, 3750],
      [ink.id, ink.sku, 3, 399, 1197],
    ],
  );
  assert.deepEqual(order.total, { amount: 4947, currency: 'EUR' });
  assert.equal(order.cancelReason, null);
  assert.deepEqual(
    order.history.map((entry) => entry.status),
    ['PENDING'],
  );
  // The deadline is counted from the moment of storing, on the database clock.
  assert.equal(Date.parse(order.deadlineAt) - Date.parse(order.createdAt), 30_000);

  assert.deepEqual(await world.client.call(orders.get, { id: order.id }), order);

  const [placed, ...more] = await streamEvents(world, orders.placed, (data) => data.orderId === order.id);
  assert.equal(more.length, 0);
  assert.deepEqual(placed!.data, {
    orderId: order.id,
    customerId: ada.id,
    lines: [
      { productId: pen.id, quantity: 3 },
      { productId: ink.id, quantity: 3 },
    ],
    payment: { token: 'tok_visa', amount: { amount: 4947, currency: 'EUR' } },
    deadlineAt: order.deadlineAt,
  });
});

test('get with customerId answers ORDER_NOT_FOUND for somebody else’s order and for unknown ids', async () => {
  const order = await placeOrder(world, ada.id, [ink.id]);
  assert.equal((await world.client.call(orders.get, { id: order.id, customerId: ada.id })).id, order.id);
  const foreign = await rejection(world.client.call(orders.get, { id: order.id, customerId: bob.id }));
  assert.equal(foreign.code, 'ORDER_NOT_FOUND');
  const unknown = await rejection(world.client.call(orders.get, { id: randomUUID() }));
  assert.equal(unknown.code, 'ORDER_NOT_FOUND');
});

test('listByCustomer pages newest first with an opaque cursor, without gaps or repeats', async () => {
  const carol = await registerCustomer(world.client, 'Carol');
  const placed: Order[] = [];
  for (let i = 0; i < 5; i++) placed.push(await placeOrder(world, carol.id, [ink.id]));
  // Bob's orders never show up in Carol's list.
  await placeOrder(world, bob.id, [ink.id]);

  const seen: string[] = [];
  let after: string | undefined;
  let pages = 0;
  do {
    const page = await world.client.call(orders.listByCustomer, { customerId: carol.id, first: 2, ...(after ? { after } : {}) });
    assert.ok(page.items.length <= 2);
    seen.push(...page.items.map((item) => item.id));
    after = page.nextCursor ?? undefined;
    pages++;
  } while (after);

  assert.equal(pages, 3);
  assert.deepEqual(seen, placed.map((order) => order.id).reverse());

  const bad = await rejection(world.client.call(orders.listByCustomer, { customerId: carol.id, after: 'not-a-cursor' }));
  assert.equal(bad.code, 'VALIDATION_FAILED');
  const empty = await world.client.call(orders.listByCustomer, { customerId: randomUUID() });
  assert.deepEqual(empty, { items: [], nextCursor: null });
});

test('cancel by its customer cancels a PENDING order once and emits orders.events.cancelled', async () => {
  const order = await placeOrder(world, ada.id, [pen.id, ink.id]);

  const foreign = await rejection(world.client.call(orders.cancel, { id: order.id, customerId: bob.id }));
  assert.equal(foreign.code, 'ORDER_NOT_FOUND');
  assert.equal((await world.client.call(orders.get, { id: order.id })).status, 'PENDING');

  const cancelled = await world.client.call(orders.cancel, { id: order.id, customerId: ada.id, reason: 'changed my mind' });
  assert.equal(cancelled.status, 'CANCELLED');
  assert.equal(cancelled.cancelReason, 'CUSTOMER_CANCELLED');
  assert.deepEqual(
    cancelled.history.map((entry) => [entry.status, entry.reason]),
    [
      ['PENDING', null],
      ['CANCELLED', 'changed my mind'],
    ],
  );

  // Idempotent: a repeat (say, a retry after a lost reply) answers the same cancelled order and emits nothing.
  const again = await world.client.call(orders.cancel, { id: order.id, customerId: ada.id });
  assert.deepEqual(again, cancelled);

  const events = await streamEvents(world, orders.cancelled, (data) => data.orderId === order.id);
  assert.equal(events.length, 1);
  assert.deepEqual(events[0]!.data, {
    orderId: order.id,
    customerId: ada.id,
    reasonCode: 'CUSTOMER_CANCELLED',
    reason: 'changed my mind',
    previousStatus: 'PENDING',
    total: { amount: 1649, currency: 'EUR' },
  });
});

test('unknown customer, unknown product and mixed currencies are typed errors that store nothing', async () => {
  const dave = await registerCustomer(world.client, 'Dave');
  const before = await streamEvents(world, orders.placed);

  const noCustomer = await rejection(placeOrder(world, randomUUID(), [pen.id]));
  assert.equal(noCustomer.code, 'CUSTOMER_NOT_FOUND');

  const missing = randomUUID();
  const noProduct = await rejection(placeOrder(world, dave.id, [pen.id, missing]));
  assert.equal(noProduct.code, 'PRODUCT_NOT_FOUND');
  assert.deepEqual(noProduct.details, { productIds: [missing] });

  const mixed = await rejection(placeOrder(world, dave.id, [pen.id, dollarThing.id]));
  assert.equal(mixed.code, 'CURRENCY_MISMATCH');

  assert.deepEqual(await ordersOf(dave.id), []);
  assert.equal((await streamEvents(world, orders.placed)).length, before.length);
});

test('a request outside the contract is VALIDATION_FAILED and stores nothing', async () => {
  const erin = await registerCustomer(world.client, 'Erin');
  const before = await streamEvents(world, orders.placed);
  const bad = [
    '{not json',
    JSON.stringify({ customerId: erin.id, idempotencyKey: 'k1', lines: [], paymentToken: 'tok' }),
    JSON.stringify({ customerId: erin.id, idempotencyKey: 'k2', lines: [{ productId: pen.id, quantity: 0 }], paymentToken: 'tok' }),
    JSON.stringify({ customerId: erin.id, idempotencyKey: 'k3', lines: [{ productId: pen.id, quantity: 1 }] }),
    JSON.stringify({
      customerId: erin.id,
      idempotencyKey: 'k4',
      lines: [{ productId: pen.id, quantity: 1 }],
      paymentToken: 'tok',
      extra: 1,
    }),
    // The idempotency key is required, printable and without spaces.
    JSON.stringify({ customerId: erin.id, lines: [{ productId: pen.id, quantity: 1 }], paymentToken: 'tok' }),
    JSON.stringify({ customerId: erin.id, idempotencyKey: 'a key', lines: [{ productId: pen.id, quantity: 1 }], paymentToken: 'tok' }),
    JSON.stringify({ customerId: erin.id, idempotencyKey: '', lines: [{ productId: pen.id, quantity: 1 }], paymentToken: 'tok' }),
  ];
  for (const payload of bad) {
    // Raw NATS: the typed client would refuse to send these at all.
    const reply = await world.nc.request(orders.place.subject, payload, { timeout: 5000 });
    assert.equal(reply.headers?.get('Nats-Service-Error-Code'), '400', payload);
    assert.equal(reply.headers?.get('Shop-Error-Code'), 'VALIDATION_FAILED', payload);
  }
  assert.deepEqual(await ordersOf(erin.id), []);
  assert.equal((await streamEvents(world, orders.placed)).length, before.length);
});
