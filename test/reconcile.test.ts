// `npm run reconcile` (scripts/reconcile.ts): on the books of a real run of
// the saga (orders confirmed, declined, out of stock, cancelled after
// confirmation and refunded) every invariant holds; then each invariant is
// broken on purpose in the databases, one at a time, and the checker must
// name exactly that one and exit non-zero.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { customers, databaseVariable, orders, products, registry, type Order, type ServiceName } from '../subjects/index.ts';
import { reconcile, type ReconcileReport } from '../scripts/reconcile.ts';
import { SERVICE_DIRS, SERVICE_NAMES, Shop, email, type ServiceDir } from './chaos/shop.ts';
import { ROOT, waitFor } from './harness.ts';

let shop: Shop;
const initialStock = new Map<string, number>();
const placed: Record<'confirmed' | 'declined' | 'outOfStock' | 'refunded', Order> = {} as never;

/** Each service's database, by service name. */
const databases = () =>
  Object.fromEntries(SERVICE_DIRS.map((dir) => [SERVICE_NAMES[dir], shop.databases[dir]])) as Record<ServiceName, string>;

before(async () => {
  shop = await Shop.start();
  const customer = await shop.client.call(customers.register, { email: email('books'), name: 'Books', password: 'correct horse' });
  const plenty = await shop.client.call(products.create, {
    sku: `REC-${randomUUID().slice(0, 8)}`,
    name: 'Plenty',
    price: { amount: 700, currency: 'EUR' },
    initialStock: 100,
  });
  const scarce = await shop.client.call(products.create, {
    sku: `REC-${randomUUID().slice(0, 8)}`,
    name: 'Scarce',
    price: { amount: 900, currency: 'EUR' },
    initialStock: 1,
  });
  initialStock.set(plenty.id, 100).set(scarce.id, 1);
  const place = (productId: string, quantity: number, paymentToken = 'tok_visa') =>
    shop.client.call(orders.place, {
      idempotencyKey: randomUUID(),
      customerId: customer.id,
      lines: [{ productId, quantity }],
      paymentToken,
    });
  const final = (id: string) =>
    waitFor(
      async () => {
        const order = await shop.client.call(orders.get, { id });
        return order.status !== 'PENDING' && order;
      },
      { timeoutMs: 20_000, what: `order ${id} to settle` },
    );

  placed.confirmed = await final((await place(plenty.id, 3)).id);
  placed.declined = await final((await place(plenty.id, 1, 'tok_decline')).id);
  placed.outOfStock = await final((await place(scarce.id, 2)).id);
  const toRefund = await final((await place(plenty.id, 2)).id);
  await shop.client.call(orders.cancel, { id: toRefund.id, customerId: customer.id });
  placed.refunded = await final(toRefund.id);
  // Every shipment at rest too: the confirmed order's delivered, the cancelled one's cancelled.
  await shop.quiescent();
  // The books are read with nothing running, so the changes below meet no one.
  for (const dir of SERVICE_DIRS) await shop.stopService(dir);
});

after(async () => {
  await shop?.close();
});

function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const dir of SERVICE_DIRS) env[databaseVariable(registry[SERVICE_NAMES[dir]])] = shop.databases[dir];
  return new Promise((resolve) => {
    execFile(process.execPath, [join(ROOT, 'scripts', 'reconcile.ts'), ...args], { env, timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
    });
  });
}

const violated = (report: ReconcileReport) => report.checks.filter((check) => check.violations > 0).map((check) => check.name);

test('the books of a real run reconcile: every check looks at something and finds nothing', async () => {
  assert.deepEqual(
    (await shop.query<{ status: string }>('shipping', 'SELECT status FROM shipments WHERE order_id = $1', [placed.confirmed.id])).map(
      (row) => row.status,
    ),
    ['DELIVERED'],
  );
  assert.deepEqual(
    [placed.confirmed.status, placed.declined.cancelReason, placed.outOfStock.cancelReason, placed.refunded.cancelReason],
    ['CONFIRMED', 'PAYMENT_DECLINED', 'OUT_OF_STOCK', 'CUSTOMER_CANCELLED'],
  );
  const report = await reconcile({ databases: databases(), graceMs: 0, initialStock });
  assert.deepEqual(violated(report), []);
  assert.ok(report.ok);
  for (const check of report.checks) assert.ok(check.checked > 0, `${check.name} looked at something`);
  assert.equal(report.checks.length, 11);
  assert.deepEqual(
    {
      orders: report.totals.orders,
      confirmed: report.totals.confirmed,
      captured: report.totals.captured,
      refunded: report.totals.refunded,
    },
    { orders: 4, confirmed: 1, captured: 1, refunded: 1 },
  );

  const run = await cli('--grace-ms', '0');
  assert.equal(run.code, 0);
  assert.match(run.stdout, /reconciled: every invariant holds/);
  const json = JSON.parse((await cli('--grace-ms', '0', '--json')).stdout) as ReconcileReport;
  assert.equal(json.ok, true);
});

/** Breaks the books with `breakIt`, checks that exactly `expected` are reported, and puts them back with `repair`. */
async function broken(dir: ServiceDir, breakIt: string, repair: string, params: unknown[], expected: string[]): Promise<ReconcileReport> {
  await shop.query(dir, breakIt, params);
  try {
    const report = await reconcile({ databases: databases(), graceMs: 0, initialStock });
    assert.equal(report.ok, false);
    assert.deepEqual(violated(report).sort(), [...expected].sort());
    return report;
  } finally {
    await shop.query(dir, repair, params);
  }
}

test('each invariant broken on purpose is found, and named', async () => {
  const { confirmed, declined, refunded } = placed;
  const productId = confirmed.lines[0]!.productId;

  await broken(
    'product',
    'UPDATE products SET reserved = reserved + 3, on_hand = on_hand + 3 WHERE id = $1',
    'UPDATE products SET reserved = reserved - 3, on_hand = on_hand - 3 WHERE id = $1',
    [productId],
    ['reserved stock = sum of open reservations', 'on hand = initial stock − committed units'],
  );
  await broken(
    'product',
    'UPDATE products SET on_hand = on_hand - 1 WHERE id = $1',
    'UPDATE products SET on_hand = on_hand + 1 WHERE id = $1',
    [productId],
    ['on hand = initial stock − committed units'],
  );
  await broken(
    'product',
    "UPDATE stock_orders SET status = 'RESERVED' WHERE order_id = $1",
    "UPDATE stock_orders SET status = 'RELEASED' WHERE order_id = $1",
    [refunded.id],
    ['stock follows the order: committed if confirmed, given back if cancelled'],
  );
  await broken(
    'payment',
    "UPDATE payments SET status = 'DECLINED' WHERE order_id = $1",
    "UPDATE payments SET status = 'CAPTURED' WHERE order_id = $1",
    [confirmed.id],
    ['payments: confirmed = captured total, cancelled = nothing kept'],
  );
  await broken(
    'payment',
    "UPDATE payments SET status = 'CAPTURED' WHERE order_id = $1",
    "UPDATE payments SET status = 'REFUNDED' WHERE order_id = $1",
    [refunded.id],
    [
      'payments: confirmed = captured total, cancelled = nothing kept',
      // A refund notification exists for a payment no longer refunded.
      'one notification per outcome of every settled order',
    ],
  );
  await broken(
    'payment',
    "UPDATE simulator_ledger SET operation = 'charge', outcome = 'captured', idempotency_key = 'moved:' || idempotency_key WHERE operation = 'refund' AND idempotency_key = 'refund:' || $1",
    "UPDATE simulator_ledger SET operation = 'refund', outcome = 'refunded', idempotency_key = substr(idempotency_key, 7) WHERE idempotency_key = 'moved:refund:' || $1",
    [refunded.id],
    ["provider's books: money held = confirmed total, else 0"],
  );
  await broken(
    'notification',
    "UPDATE notifications SET event_type = 'orders.events.confirmed' WHERE order_id = $1",
    "UPDATE notifications SET event_type = 'orders.events.cancelled' WHERE order_id = $1",
    [declined.id],
    ['one notification per outcome of every settled order'],
  );
  await broken(
    'shipping',
    // The confirmed order's shipment now belongs to an order nobody placed.
    "UPDATE shipments SET order_id = '00000000-0000-4000-8000-000000000000' WHERE order_id = $1",
    "UPDATE shipments SET order_id = $1 WHERE order_id = '00000000-0000-4000-8000-000000000000'",
    [confirmed.id],
    [
      'shipments: one per confirmed order, none shipped for a cancelled one',
      // Its shipped and delivered emails are now about a shipment it does not have.
      'one notification per outcome of every settled order',
    ],
  );
  const report = await broken(
    'order',
    "UPDATE orders SET status = 'PENDING', cancel_reason = NULL, deadline_at = now() - interval '1 hour' WHERE id = $1",
    "UPDATE orders SET status = 'CANCELLED', cancel_reason = 'PAYMENT_DECLINED' WHERE id = $1",
    [declined.id],
    ['every order past its deadline is final', 'order history starts PENDING and ends at its status'],
  );
  assert.match(report.checks[0]!.examples[0]!, new RegExp(`order ${declined.id} is still PENDING`));

  // From the command line: exit 1, the check and an example named.
  await shop.query('product', 'UPDATE products SET reserved = reserved + 1, on_hand = on_hand + 1 WHERE id = $1', [productId]);
  try {
    const run = await cli('--grace-ms', '0');
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stdout, /reserved stock = sum of open reservations\s+\d+\s+1\s+VIOLATED/);
    assert.match(run.stdout, /reserved 1, open reservations 0/);
    assert.match(run.stdout, /NOT reconciled/);
  } finally {
    await shop.query('product', 'UPDATE products SET reserved = reserved - 1, on_hand = on_hand - 1 WHERE id = $1', [productId]);
  }
  assert.ok((await reconcile({ databases: databases(), graceMs: 0, initialStock })).ok, 'repaired');
});

test('orders still moving are left out of the saga checks, and a wrong option is a usage error', async () => {
  // Within the grace every order counts as settling.
  const report = await reconcile({ databases: databases(), graceMs: 3_600_000 });
  assert.equal(report.totals.settling, 4);
  assert.equal(
    report.checks.find((c) => c.name.startsWith('payments'))!.checked,
    0 + report.totals.captured + report.totals.refunded + report.totals.declined,
  );
  const wrong = await cli('--grace-ms');
  assert.equal(wrong.code, 2);
});
