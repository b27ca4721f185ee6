// orders.place is idempotent by customer and key, in the order service's
// database: concurrent repeats make one order, a key reused with another
// request is refused, and keys past their retention are forgotten.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { orders, type Customer, type Product } from '../../../subjects/index.ts';
import { ServiceError } from '../../kit/index.ts';
import { pruneIdempotencyKeys } from '../store.ts';
import { createProduct, registerCustomer, startWorld, streamEvents, type World } from './fixtures.ts';

let world: World;
let db: pg.Pool;
let ada: Customer;
let bob: Customer;
let pen: Product;
let ink: Product;

before(async () => {
  // Two instances on one database: concurrent repeats land on both.
  world = await startWorld({ orderInstances: 2 });
  // One connection, taken now and kept: a shared PostgreSQL near its connection limit cannot refuse it mid-test.
  db = new pg.Pool({ connectionString: world.order.databaseUrl, max: 1, idleTimeoutMillis: 0 });
  await db.query('SELECT 1');
  [ada, bob] = await Promise.all([registerCustomer(world.client, 'Ada'), registerCustomer(world.client, 'Bob')]);
  [pen, ink] = await Promise.all([
    createProduct(world.client, { amount: 1250, currency: 'EUR' }),
    createProduct(world.client, { amount: 399, currency: 'EUR' }),
  ]);
});

after(async () => {
  await db?.end();
  await world?.stop();
});

const place = (customerId: string, idempotencyKey: string, lines = [{ productId: pen.id, quantity: 1 }], paymentToken = 'tok_visa') =>
  world.client.call(orders.place, { customerId, idempotencyKey, lines, paymentToken });

async function storedOrders(customerId: string): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>('SELECT id FROM orders WHERE customer_id = $1', [customerId]);
  return rows.map((row) => row.id);
}

test('one placement sent 20 times at once with one key makes one order and one placed event', async () => {
  const customer = await registerCustomer(world.client, 'Eager');
  const key = randomUUID();
  const answers = await Promise.all(Array.from({ length: 20 }, () => place(customer.id, key)));

  const ids = new Set(answers.map((order) => order.id));
  assert.equal(ids.size, 1, `one order id for every answer, got ${[...ids].join(', ')}`);
  const [id] = ids;
  assert.deepEqual(await storedOrders(customer.id), [id]);
  const placed = await streamEvents(world, orders.placed, (data) => data.customerId === customer.id);
  assert.deepEqual(
    placed.map((event) => event.data.orderId),
    [id],
  );

  // Later repeats answer the same order too.
  assert.equal((await place(customer.id, key)).id, id);
  assert.deepEqual(await storedOrders(customer.id), [id]);
});

test('the key reused with other lines, another token or lines in another order is IDEMPOTENCY_KEY_REUSED and stores nothing', async () => {
  const key = randomUUID();
  const first = await place(ada.id, key, [
    { productId: pen.id, quantity: 1 },
    { productId: ink.id, quantity: 2 },
  ]);
  const before = await storedOrders(ada.id);
  const others = [
    () => place(ada.id, key, [{ productId: pen.id, quantity: 2 }]),
    () => place(ada.id, key, [{ productId: pen.id, quantity: 1 }]),
    () =>
      place(ada.id, key, [
        { productId: ink.id, quantity: 2 },
        { productId: pen.id, quantity: 1 },
      ]),
    () =>
      place(
        ada.id,
        key,
        [
          { productId: pen.id, quantity: 1 },
          { productId: ink.id, quantity: 2 },
        ],
        'tok_other',
      ),
  ];
  for (const other of others) {
    const error = await other().then(
      () => assert.fail('expected IDEMPOTENCY_KEY_REUSED'),
      (caught: unknown) => caught,
    );
    assert.ok(error instanceof ServiceError);
    assert.equal(error.code, 'IDEMPOTENCY_KEY_REUSED');
    assert.match(error.message, new RegExp(first.id));
  }
  assert.deepEqual((await storedOrders(ada.id)).sort(), before.sort());
  // The same request again (fields in any order) still answers the first order.
  const again = await world.client.call(orders.place, {
    paymentToken: 'tok_visa',
    lines: [
      { quantity: 1, productId: pen.id },
      { quantity: 2, productId: ink.id },
    ],
    idempotencyKey: key,
    customerId: ada.id,
  });
  assert.equal(again.id, first.id);
});

test('keys belong to their customer: the same key from another customer is another order', async () => {
  const key = randomUUID();
  const [mine, theirs] = await Promise.all([place(ada.id, key), place(bob.id, key)]);
  assert.notEqual(mine.id, theirs.id);
  assert.equal(theirs.customerId, bob.id);
});

test('a repeat answers the order as it is now, even when the request could no longer be placed', async () => {
  const customer = await registerCustomer(world.client, 'Late');
  const key = randomUUID();
  const first = await place(customer.id, key);
  // The order moved on (cancelled by its customer); the repeat does not place another.
  await world.client.call(orders.cancel, { id: first.id, customerId: customer.id });
  const again = await place(customer.id, key);
  assert.equal(again.id, first.id);
  assert.equal(again.status, 'CANCELLED');
  assert.deepEqual(await storedOrders(customer.id), [first.id]);
});

test('a refused placement keeps no key: the same key works once the request is fixed', async () => {
  const customer = await registerCustomer(world.client, 'Fixer');
  const key = randomUUID();
  const missing = randomUUID();
  const error = await place(customer.id, key, [{ productId: missing, quantity: 1 }]).catch((caught: unknown) => caught);
  assert.ok(error instanceof ServiceError);
  assert.equal(error.code, 'PRODUCT_NOT_FOUND');
  const placed = await place(customer.id, key);
  assert.deepEqual(await storedOrders(customer.id), [placed.id]);
});

test('keys older than the retention are pruned; their orders stay', async () => {
  const customer = await registerCustomer(world.client, 'Old');
  const oldKey = randomUUID();
  const freshKey = randomUUID();
  const old = await place(customer.id, oldKey);
  const fresh = await place(customer.id, freshKey);
  await db.query("UPDATE order_requests SET created_at = now() - interval '25 hours' WHERE customer_id = $1 AND idempotency_key = $2", [
    customer.id,
    oldKey,
  ]);

  // Only keys past 24 hours go; one of 23 hours is kept.
  await db.query("UPDATE order_requests SET created_at = now() - interval '23 hours' WHERE customer_id = $1 AND idempotency_key = $2", [
    customer.id,
    freshKey,
  ]);
  let pruned = 0;
  for (let count = -1; count !== 0; ) {
    count = await pruneIdempotencyKeys(db, 24, 1000);
    pruned += count;
  }
  assert.ok(pruned >= 1);
  const { rows } = await db.query<{ idempotency_key: string }>('SELECT idempotency_key FROM order_requests WHERE customer_id = $1', [
    customer.id,
  ]);
  assert.deepEqual(
    rows.map((row) => row.idempotency_key),
    [freshKey],
  );
  assert.deepEqual((await storedOrders(customer.id)).sort(), [old.id, fresh.id].sort());
  assert.equal((await place(customer.id, freshKey)).id, fresh.id);
});
