// The stock rules at the store level, against a real PostgreSQL pool: no
// overselling under concurrency, all-or-none, idempotency by order id, and
// the table's own refusal of negative stock.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { createLogger, createPool, ensureDatabase, migrate, withTransaction, type Pool } from '../../kit/index.ts';
import { dropTestDatabases, testDatabaseUrl } from '../../../test/harness.ts';
import {
  CANCELLED_BEFORE_RESERVED,
  commitStock,
  commitStockForOrders,
  insertProduct,
  releaseStock,
  reserveStock,
  reserveStockForOrders,
  type OrderLines,
  type ReserveResult,
  type StockLine,
} from '../store.ts';
import { stockOf, tableFingerprint } from './helpers.ts';

let pool: Pool;

before(async () => {
  const url = testDatabaseUrl('products');
  const log = createLogger('products', 'silent');
  await ensureDatabase(url, log);
  pool = createPool(url, 20);
  await migrate(pool, 'products', join(import.meta.dirname, '..', 'migrations'), log);
});

after(async () => {
  await pool?.end();
  await dropTestDatabases();
});

async function product(onHand: number): Promise<string> {
  const id = randomUUID();
  await insertProduct(pool, {
    id,
    sku: `SKU-${id.slice(0, 8)}`,
    name: `Product ${id.slice(0, 8)}`,
    description: '',
    price: { amount: 500, currency: 'EUR' },
    onHand,
  });
  return id;
}

const reserve = (orderId: string, lines: StockLine[]) => withTransaction(pool, (tx) => reserveStock(tx, orderId, lines));
const release = (orderId: string) => withTransaction(pool, (tx) => releaseStock(tx, orderId));
const commit = (orderId: string) => withTransaction(pool, (tx) => commitStock(tx, orderId));
const reserveAll = (orders: OrderLines[]) => withTransaction(pool, async (tx) => (await reserveStockForOrders(tx, orders)).results);
const commitAll = (orderIds: string[]) => withTransaction(pool, (tx) => commitStockForOrders(tx, orderIds));

test('100 concurrent one-unit orders against a stock of 10 sell exactly 10', async () => {
  const productId = await product(10);

  // Watch available from another connection while the orders race.
  let racing = true;
  let lowest = Number.POSITIVE_INFINITY;
  let samples = 0;
  const watcher = (async () => {
    while (racing) {
      lowest = Math.min(lowest, (await stockOf(pool, productId)).available);
      samples++;
    }
  })();

  const results = await Promise.all(Array.from({ length: 100 }, () => reserve(randomUUID(), [{ productId, quantity: 1 }])));
  racing = false;
  await watcher;

  const reserved = results.filter((r) => r.outcome === 'reserved').length;
  const rejected = results.filter((r) => r.outcome === 'rejected');
  assert.equal(reserved, 10);
  assert.equal(rejected.length, 90);
  assert.ok(samples > 0);
  assert.ok(lowest >= 0, `available went down to ${lowest}`);
  assert.deepEqual(await stockOf(pool, productId), { onHand: 10, reserved: 10, available: 0 });
  const { rows } = await pool.query<{ total: number }>(
    `SELECT coalesce(sum(quantity), 0)::int AS total FROM reservations WHERE product_id = $1 AND status = 'RESERVED'`,
    [productId],
  );
  assert.equal(rows[0]!.total, 10);
  for (const result of rejected) {
    assert.ok(result.outcome === 'rejected');
    assert.deepEqual(result.shortages, [{ productId, requested: 1, available: 0 }]);
  }
});

test('orders naming the same products in opposite orders neither deadlock nor oversell', async () => {
  const a = await product(30);
  const b = await product(30);
  const results = await Promise.all(
    Array.from({ length: 80 }, (_, i) =>
      reserve(
        randomUUID(),
        i % 2 === 0
          ? [
              { productId: a, quantity: 1 },
              { productId: b, quantity: 1 },
            ]
          : [
              { productId: b, quantity: 1 },
              { productId: a, quantity: 1 },
            ],
      ),
    ),
  );
  assert.equal(results.filter((r) => r.outcome === 'reserved').length, 30);
  assert.deepEqual(await stockOf(pool, a), { onHand: 30, reserved: 30, available: 0 });
  assert.deepEqual(await stockOf(pool, b), { onHand: 30, reserved: 30, available: 0 });
});

test('an order is reserved whole or not at all, unknown products counting as none available', async () => {
  const plenty = await product(5);
  const scarce = await product(1);
  const unknown = randomUUID();
  const orderId = randomUUID();

  const result = await reserve(orderId, [
    { productId: plenty, quantity: 2 },
    { productId: scarce, quantity: 2 },
    { productId: unknown, quantity: 1 },
  ]);
  assert.equal(result.outcome, 'rejected');
  assert.ok(result.outcome === 'rejected');
  assert.deepEqual(result.shortages, [
    { productId: scarce, requested: 2, available: 1 },
    { productId: unknown, requested: 1, available: 0 },
  ]);
  assert.match(result.reason, /2 requested, 1 available/);
  assert.match(result.reason, new RegExp(`${unknown} does not exist`));
  assert.deepEqual(await stockOf(pool, plenty), { onHand: 5, reserved: 0, available: 5 });
  assert.deepEqual(await stockOf(pool, scarce), { onHand: 1, reserved: 0, available: 1 });
  const { rows } = await pool.query('SELECT 1 FROM reservations WHERE order_id = $1', [orderId]);
  assert.equal(rows.length, 0);

  // The same order again (even once stock is there) stays rejected: its outcome was given.
  const again = await reserve(orderId, [{ productId: plenty, quantity: 1 }]);
  assert.deepEqual(again, { outcome: 'duplicate', status: 'REJECTED' });
  assert.equal((await stockOf(pool, plenty)).reserved, 0);
});

test('lines of the same product are summed before checking', async () => {
  const productId = await product(3);
  const result = await reserve(randomUUID(), [
    { productId, quantity: 2 },
    { productId, quantity: 2 },
  ]);
  assert.equal(result.outcome, 'rejected');
  const ok = await reserve(randomUUID(), [
    { productId, quantity: 1 },
    { productId, quantity: 2 },
  ]);
  assert.deepEqual(ok, { outcome: 'reserved', lines: [{ productId, quantity: 3 }] });
  assert.deepEqual(await stockOf(pool, productId), { onHand: 3, reserved: 3, available: 0 });
});

test('reserve is idempotent by order id, also when the same order races itself', async () => {
  const productId = await product(10);
  const orderId = randomUUID();
  const results: ReserveResult[] = await Promise.all(Array.from({ length: 5 }, () => reserve(orderId, [{ productId, quantity: 4 }])));
  assert.equal(results.filter((r) => r.outcome === 'reserved').length, 1);
  assert.equal(results.filter((r) => r.outcome === 'duplicate').length, 4);
  assert.deepEqual(await stockOf(pool, productId), { onHand: 10, reserved: 4, available: 6 });
});

test('release gives reserved units back, once', async () => {
  const productId = await product(10);
  const orderId = randomUUID();
  await reserve(orderId, [{ productId, quantity: 3 }]);
  assert.equal((await stockOf(pool, productId)).available, 7);

  const released = await release(orderId);
  assert.ok(released.outcome === 'released');
  assert.deepEqual(released.lines, [{ productId, quantity: 3 }]);
  // The product's new public view, for the catalog bucket: created (1), reserved (2), released (3).
  assert.deepEqual(
    released.changed.map(({ id, available, version }) => ({ id, available, version })),
    [{ id: productId, available: 10, version: 3 }],
  );
  assert.deepEqual(await stockOf(pool, productId), { onHand: 10, reserved: 0, available: 10 });
  assert.deepEqual(await release(orderId), { outcome: 'nothing-held', status: 'RELEASED' });
  assert.deepEqual(await stockOf(pool, productId), { onHand: 10, reserved: 0, available: 10 });
});

test('commit takes units off the shelf, once; cancelling the confirmed order puts them back', async () => {
  const productId = await product(10);
  const orderId = randomUUID();
  await reserve(orderId, [{ productId, quantity: 4 }]);

  assert.deepEqual(await commit(orderId), { outcome: 'committed', lines: [{ productId, quantity: 4 }] });
  assert.deepEqual(await stockOf(pool, productId), { onHand: 6, reserved: 0, available: 6 });
  assert.deepEqual(await commit(orderId), { outcome: 'not-reserved', status: 'COMMITTED' });
  assert.deepEqual(await stockOf(pool, productId), { onHand: 6, reserved: 0, available: 6 });

  const released = await release(orderId);
  assert.ok(released.outcome === 'released');
  assert.deepEqual(released.lines, [{ productId, quantity: 4 }]);
  assert.deepEqual(await stockOf(pool, productId), { onHand: 10, reserved: 0, available: 10 });
  const { rows } = await pool.query('SELECT status FROM reservations WHERE order_id = $1', [orderId]);
  assert.deepEqual(rows, [{ status: 'RELEASED' }]);
});

test('commit of an order never reserved changes nothing', async () => {
  const before = await tableFingerprint(pool, 'products');
  assert.deepEqual(await commit(randomUUID()), { outcome: 'not-reserved', status: null });
  assert.equal(await tableFingerprint(pool, 'products'), before);
});

test('a cancellation before the order was seen leaves a tombstone that rejects the late reservation', async () => {
  const productId = await product(5);
  const orderId = randomUUID();

  assert.deepEqual(await release(orderId), { outcome: 'tombstoned' });
  const late = await reserve(orderId, [{ productId, quantity: 1 }]);
  assert.deepEqual(late, { outcome: 'rejected', reason: CANCELLED_BEFORE_RESERVED, shortages: [] });
  assert.deepEqual(await stockOf(pool, productId), { onHand: 5, reserved: 0, available: 5 });
  assert.deepEqual(await reserve(orderId, [{ productId, quantity: 1 }]), { outcome: 'duplicate', status: 'REJECTED' });
  assert.equal((await stockOf(pool, productId)).reserved, 0);
});

test('the table itself refuses stock below zero and reservations beyond what is on hand', async () => {
  const productId = await product(2);
  await assert.rejects(
    pool.query('UPDATE products SET reserved = on_hand + 1 WHERE id = $1', [productId]),
    (error: { code?: string; constraint?: string }) => error.code === '23514' && error.constraint === 'products_reserved_within_on_hand',
  );
  await assert.rejects(pool.query('UPDATE products SET on_hand = -1, reserved = 0 WHERE id = $1', [productId]), {
    code: '23514',
  });
  await assert.rejects(pool.query('UPDATE products SET reserved = -1 WHERE id = $1', [productId]), { code: '23514' });
  assert.deepEqual(await stockOf(pool, productId), { onHand: 2, reserved: 0, available: 2 });
});

// Batches: what the reserve-stock and commit-stock consumers do with several events per transaction.

test('a batch reserves its orders in turn, each whole or not at all, an order twice counting once', async () => {
  const scarce = await product(3);
  const plenty = await product(100);
  const [first, second, third, fourth] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
  const results = await reserveAll([
    {
      orderId: first,
      lines: [
        { productId: scarce, quantity: 2 },
        { productId: plenty, quantity: 1 },
      ],
    },
    // Only one unit of `scarce` is left for it: nothing of it is reserved, not even `plenty`.
    {
      orderId: second,
      lines: [
        { productId: plenty, quantity: 5 },
        { productId: scarce, quantity: 2 },
      ],
    },
    {
      orderId: first,
      lines: [
        { productId: scarce, quantity: 2 },
        { productId: plenty, quantity: 1 },
      ],
    },
    {
      orderId: third,
      lines: [
        { productId: scarce, quantity: 1 },
        { productId: scarce, quantity: 0 },
      ],
    },
    {
      orderId: fourth,
      lines: [
        { productId: plenty, quantity: 1 },
        { productId: randomUUID(), quantity: 1 },
      ],
    },
  ]);
  assert.deepEqual(
    results.map((result) => result.outcome),
    ['reserved', 'rejected', 'duplicate', 'reserved', 'rejected'],
  );
  assert.deepEqual(results[1]!.outcome === 'rejected' && results[1]!.shortages, [{ productId: scarce, requested: 2, available: 1 }]);
  assert.deepEqual(results[2], { outcome: 'duplicate', status: 'RESERVED' });
  assert.deepEqual(await stockOf(pool, scarce), { onHand: 3, reserved: 3, available: 0 });
  assert.deepEqual(await stockOf(pool, plenty), { onHand: 100, reserved: 1, available: 99 });
  const { rows } = await pool.query<{ order_id: string; status: string; reason: string | null }>(
    'SELECT order_id, status, reason FROM stock_orders WHERE order_id = ANY($1::uuid[])',
    [[first, second, third, fourth]],
  );
  const status = new Map(rows.map((row) => [row.order_id, row]));
  assert.equal(status.get(first)!.status, 'RESERVED');
  assert.equal(status.get(second)!.status, 'REJECTED');
  assert.match(status.get(second)!.reason!, /not enough stock for 1 of 2/);
  assert.equal(status.get(third)!.status, 'RESERVED');
  assert.match(status.get(fourth)!.reason!, /does not exist/);

  // The same orders again (a redelivered batch): nothing changes.
  const before = await tableFingerprint(pool, 'products');
  const again = await reserveAll([
    { orderId: second, lines: [] },
    { orderId: first, lines: [] },
  ]);
  assert.deepEqual(again, [
    { outcome: 'duplicate', status: 'REJECTED' },
    { outcome: 'duplicate', status: 'RESERVED' },
  ]);
  assert.equal(await tableFingerprint(pool, 'products'), before);
});

test('a batch meeting a tombstone rejects that order and reserves the others', async () => {
  const productId = await product(10);
  const cancelled = randomUUID();
  const other = randomUUID();
  await release(cancelled);
  const results = await reserveAll([
    { orderId: cancelled, lines: [{ productId, quantity: 1 }] },
    { orderId: other, lines: [{ productId, quantity: 1 }] },
  ]);
  assert.deepEqual(results[0], { outcome: 'rejected', reason: CANCELLED_BEFORE_RESERVED, shortages: [] });
  assert.equal(results[1]!.outcome, 'reserved');
  assert.deepEqual(await stockOf(pool, productId), { onHand: 10, reserved: 1, available: 9 });
});

test('concurrent batches over the same products neither deadlock nor oversell, and commit together', async () => {
  const products = await Promise.all([product(20), product(20), product(20)]);
  // 12 batches of 8 orders, each order two of the products in varying order: 96 orders for 30 pairs' worth.
  const batches = Array.from({ length: 12 }, (_, b) =>
    Array.from({ length: 8 }, (_, i): OrderLines => {
      const [x, y] = [products[(b + i) % 3]!, products[(b + i + 1) % 3]!];
      return {
        orderId: randomUUID(),
        lines: [
          { productId: x, quantity: 1 },
          { productId: y, quantity: 1 },
        ],
      };
    }),
  );
  const results = (await Promise.all(batches.map(reserveAll))).flat();
  const reserved = batches.flat().filter((_, index) => results[index]!.outcome === 'reserved');
  // Every product's reserved units are exactly its reserved orders' lines, never beyond its stock; how many
  // orders win depends on which pairs come first (60 units, two per order: 20 to 30).
  assert.ok(reserved.length >= 20 && reserved.length <= 30, `${reserved.length} orders reserved`);
  const held = (id: string) => reserved.filter((order) => order.lines.some((line) => line.productId === id)).length;
  const stock = new Map<string, { onHand: number; reserved: number; available: number }>();
  for (const id of products) stock.set(id, await stockOf(pool, id));
  for (const id of products) assert.deepEqual(stock.get(id), { onHand: 20, reserved: held(id), available: 20 - held(id) });
  // Nobody was refused what is still there: every rejected order names a product with nothing left.
  const rejected = batches.flat().filter((_, index) => results[index]!.outcome === 'rejected');
  assert.equal(rejected.length + reserved.length, 96);
  for (const order of rejected) assert.ok(order.lines.some((line) => stock.get(line.productId)!.available === 0));

  const committed = await Promise.all([
    commitAll(reserved.slice(0, 15).map((o) => o.orderId)),
    commitAll(reserved.slice(15).map((o) => o.orderId)),
  ]);
  assert.ok(committed.flat().every((result) => result.outcome === 'committed'));
  assert.deepEqual(committed.flat()[0], {
    outcome: 'committed',
    lines: [...reserved[0]!.lines].sort((a, b) => a.productId.localeCompare(b.productId)),
  });
  for (const id of products) assert.deepEqual(await stockOf(pool, id), { onHand: 20 - held(id), reserved: 0, available: 20 - held(id) });
  // Committed once: a repeat, and an order never reserved, change nothing.
  const repeat = await commitAll([reserved[0]!.orderId, randomUUID()]);
  assert.deepEqual(
    repeat.map((result) => result.outcome === 'not-reserved' && result.status),
    ['COMMITTED', null],
  );
});
