// `npm run reconcile`: checks that the services' databases agree with each
// other, the invariants behind "nothing acknowledged is lost":
//
//   orders       every order past its deadline is CONFIRMED or CANCELLED; its
//                history starts PENDING and ends at its status; its customer exists
//   stock        per product, `reserved` is the sum of the open reservations;
//                a confirmed order's units were committed, a cancelled order
//                holds none; no reservation belongs to an unknown order
//   payments     a confirmed order has exactly its total captured; a cancelled
//                one has nothing captured (refunded when it had been confirmed);
//                no payment belongs to an unknown order
//   provider     the payment simulator's books (when it is the provider): the
//                money held per order is the total of a confirmed order, 0 otherwise
//   shipments    a confirmed order has exactly one shipment (not cancelled); a
//                cancelled one has none that shipped; none for an unknown order
//   emails       at most one notification per event, and per settled order
//                exactly one per outcome event it had (shipped and delivered too)
//
// Orders still moving (updated within --grace-ms) are left out of the checks
// that depend on the saga having finished. Read-only: nothing is written.
//
//   npm run reconcile                     table of checks; exit 1 on a violation
//   npm run reconcile -- --grace-ms 0     a system at rest: every order counts
//   npm run reconcile -- --json           the report as JSON
//
// Databases: <FOLDER>_DATABASE_URL (CUSTOMER_, PRODUCT_, ORDER_, PAYMENT_,
// NOTIFICATION_, SHIPPING_, as `npm start` reads them; the registry names them), else
// shop_<service> on the PG* settings (the kit's default).
import pg from 'pg';
import { SERVICES, databaseVariable, registry, type ServiceName } from '../subjects/services.ts';
import { databaseUrl } from '../services/kit/db.ts';

export type { ServiceName };

export interface ReconcileOptions {
  /** Database URL of each service. */
  databases: Record<ServiceName, string>;
  /** Orders changed more recently than this are still settling: left out of the saga checks. Default 60 s. */
  graceMs?: number;
  /** When the stock each product started with is known (tests): on_hand = initial − committed. */
  initialStock?: ReadonlyMap<string, number>;
}

export interface CheckResult {
  name: string;
  /** How many things (orders, products, events) were looked at. */
  checked: number;
  /** How many broke the rule. */
  violations: number;
  /** The first few, spelled out. */
  examples: string[];
}

export interface ReconcileReport {
  ok: boolean;
  checks: CheckResult[];
  totals: {
    orders: number;
    pending: number;
    confirmed: number;
    cancelled: number;
    /** Orders left out as still settling. */
    settling: number;
    captured: number;
    refunded: number;
    declined: number;
    /** Shipments by status (tombstones of orders cancelled before one was made are not shipments). */
    shipments: Record<string, number>;
    notifications: Record<string, number>;
    outboxBacklog: Record<string, number>;
  };
}

const MAX_EXAMPLES = 5;

class Check implements CheckResult {
  readonly name: string;
  checked = 0;
  violations = 0;
  readonly examples: string[] = [];
  constructor(name: string) {
    this.name = name;
  }
  /** Counts one thing looked at; records a violation when `problem` is a string. */
  look(problem: string | false | undefined): void {
    this.checked++;
    if (!problem) return;
    this.violations++;
    if (this.examples.length < MAX_EXAMPLES) this.examples.push(problem);
  }
}

interface OrderRow {
  id: string;
  customer_id: string;
  status: 'PENDING' | 'CONFIRMED' | 'CANCELLED';
  currency: string;
  total_amount: number;
  overdue: boolean;
  settled: boolean;
  history: string[];
}

/** Which database each service uses: <DIR>_DATABASE_URL, else the kit's shop_<service>. */
export function databasesFromEnv(env: NodeJS.ProcessEnv = process.env): Record<ServiceName, string> {
  return Object.fromEntries(SERVICES.map((name) => [name, env[databaseVariable(registry[name])] || databaseUrl(name)])) as Record<
    ServiceName,
    string
  >;
}

async function withClient<T>(url: string, work: (db: pg.Client) => Promise<T>): Promise<T> {
  const db = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  db.on('error', () => {});
  await db.connect();
  try {
    return await work(db);
  } finally {
    await db.end().catch(() => {});
  }
}

async function tableExists(db: pg.Client, table: string): Promise<boolean> {
  const { rows } = await db.query<{ found: boolean }>('SELECT to_regclass($1) IS NOT NULL AS found', [`public.${table}`]);
  return rows[0]!.found;
}

/** Sum of quantities per product id. */
function quantities(lines: readonly { product_id: string; quantity: number }[]): Map<string, number> {
  const sums = new Map<string, number>();
  for (const line of lines) sums.set(line.product_id, (sums.get(line.product_id) ?? 0) + Number(line.quantity));
  return sums;
}

function sameQuantities(a: ReadonlyMap<string, number>, b: ReadonlyMap<string, number>): boolean {
  return a.size === b.size && [...a].every(([key, value]) => b.get(key) === value);
}

function groupBy<T>(rows: readonly T[], key: (row: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const row of rows) {
    const k = key(row);
    const group = groups.get(k);
    if (group) group.push(row);
    else groups.set(k, [row]);
  }
  return groups;
}

export async function reconcile(options: ReconcileOptions): Promise<ReconcileReport> {
  const graceMs = options.graceMs ?? 60_000;
  const { databases } = options;

  // --- Read everything (each database in its own snapshot) -----------------------------------
  const orderData = await withClient(databases.orders, async (db) => {
    await db.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const orders = (
      await db.query<OrderRow>(
        `SELECT o.id, o.customer_id, o.status, o.currency, o.total_amount,
                o.status = 'PENDING' AND o.deadline_at < now() - $1::bigint * interval '1 millisecond' AS overdue,
                o.status <> 'PENDING' AND o.updated_at < now() - $1::bigint * interval '1 millisecond' AS settled,
                coalesce((SELECT array_agg(h.status ORDER BY h.seq) FROM order_status_history h WHERE h.order_id = o.id), '{}') AS history
           FROM orders o`,
        [graceMs],
      )
    ).rows;
    const lines = (
      await db.query<{ order_id: string; product_id: string; quantity: number }>('SELECT order_id, product_id, quantity FROM order_lines')
    ).rows;
    const outbox = (await db.query<{ count: number }>('SELECT count(*)::int AS count FROM outbox')).rows[0]!.count;
    await db.query('COMMIT');
    return { orders, lines, outbox };
  });

  const customerIds = await withClient(databases.customers, async (db) => {
    const ids = [...new Set(orderData.orders.map((order) => order.customer_id))];
    const { rows } = await db.query<{ id: string }>('SELECT id FROM customers WHERE id = ANY($1::uuid[])', [ids]);
    const outbox = (await db.query<{ count: number }>('SELECT count(*)::int AS count FROM outbox')).rows[0]!.count;
    return { known: new Set(rows.map((row) => row.id)), outbox };
  });

  const stockData = await withClient(databases.products, async (db) => {
    await db.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const products = (
      await db.query<{ id: string; sku: string; on_hand: number; reserved: number }>('SELECT id, sku, on_hand, reserved FROM products')
    ).rows;
    const stockOrders = (await db.query<{ order_id: string; status: string }>('SELECT order_id, status FROM stock_orders')).rows;
    const reservations = (
      await db.query<{ order_id: string; product_id: string; quantity: number; status: string }>(
        'SELECT order_id, product_id, quantity, status FROM reservations',
      )
    ).rows;
    const outbox = (await db.query<{ count: number }>('SELECT count(*)::int AS count FROM outbox')).rows[0]!.count;
    await db.query('COMMIT');
    return { products, stockOrders, reservations, outbox };
  });

  const paymentData = await withClient(databases.payments, async (db) => {
    await db.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const payments = (
      await db.query<{ id: string; order_id: string; status: string; amount: number; currency: string }>(
        'SELECT id, order_id, status, amount, currency FROM payments',
      )
    ).rows;
    // One charge per key (its primary key); refunds of a charge, each once.
    let ledger: { order_id: string; refunds: number; net: number }[] | undefined;
    if (await tableExists(db, 'simulator_ledger')) {
      ledger = (
        await db.query<{ order_id: string; refunds: number; net: number }>(
          `SELECT charge.idempotency_key AS order_id,
                  count(refund.*)::int AS refunds,
                  (charge.amount - coalesce(sum(refund.amount), 0))::bigint AS net
             FROM simulator_ledger charge
             LEFT JOIN simulator_ledger refund ON refund.operation = 'refund' AND refund.charge_reference = charge.reference
            WHERE charge.operation = 'charge' AND charge.outcome = 'captured'
            GROUP BY charge.idempotency_key, charge.amount`,
        )
      ).rows;
    }
    const outbox = (await db.query<{ count: number }>('SELECT count(*)::int AS count FROM outbox')).rows[0]!.count;
    await db.query('COMMIT');
    return { payments, ledger, outbox };
  });

  const notificationData = await withClient(databases.notifications, async (db) => {
    const rows = (
      await db.query<{ event_id: string; event_type: string; order_id: string | null; status: string }>(
        'SELECT event_id, event_type, order_id, status FROM notifications',
      )
    ).rows;
    const outbox = (await db.query<{ count: number }>('SELECT count(*)::int AS count FROM outbox')).rows[0]!.count;
    return { rows, outbox };
  });

  const shippingData = await withClient(databases.shipments, async (db) => {
    const rows = (
      await db.query<{ id: string; order_id: string; status: string; tombstone: boolean; settled: boolean }>(
        `SELECT id, order_id, status, jsonb_array_length(history) = 0 AS tombstone,
                updated_at < now() - $1::bigint * interval '1 millisecond' AS settled
           FROM shipments`,
        [graceMs],
      )
    ).rows;
    const outbox = (await db.query<{ count: number }>('SELECT count(*)::int AS count FROM outbox')).rows[0]!.count;
    return { rows, outbox };
  });

  // --- Orders -------------------------------------------------------------------------------
  const orders = orderData.orders;
  const orderById = new Map(orders.map((order) => [order.id, order]));
  const linesByOrder = groupBy(orderData.lines, (line) => line.order_id);
  const settled = orders.filter((order) => order.settled);
  const wasConfirmed = (order: OrderRow) => order.history.includes('CONFIRMED');

  const terminal = new Check('every order past its deadline is final');
  for (const order of orders) terminal.look(order.overdue && `order ${order.id} is still PENDING past its deadline`);

  const history = new Check('order history starts PENDING and ends at its status');
  for (const order of orders) {
    history.look(
      (order.history[0] !== 'PENDING' || order.history.at(-1) !== order.status) &&
        `order ${order.id} is ${order.status}, history ${order.history.join(' → ') || '(none)'}`,
    );
  }

  const owners = new Check('every order belongs to a known customer');
  for (const order of orders)
    owners.look(!customerIds.known.has(order.customer_id) && `order ${order.id}: no customer ${order.customer_id}`);

  // --- Stock --------------------------------------------------------------------------------
  const open = quantities(stockData.reservations.filter((r) => r.status === 'RESERVED'));
  const committed = quantities(stockData.reservations.filter((r) => r.status === 'COMMITTED'));
  const reserved = new Check('reserved stock = sum of open reservations');
  for (const product of stockData.products) {
    const expected = open.get(product.id) ?? 0;
    reserved.look(
      Number(product.reserved) !== expected && `product ${product.sku}: reserved ${product.reserved}, open reservations ${expected}`,
    );
  }

  const checks: Check[] = [terminal, history, owners, reserved];

  if (options.initialStock) {
    const onHand = new Check('on hand = initial stock − committed units');
    for (const product of stockData.products) {
      const initial = options.initialStock.get(product.id);
      if (initial === undefined) continue;
      const expected = initial - (committed.get(product.id) ?? 0);
      onHand.look(Number(product.on_hand) !== expected && `product ${product.sku}: on hand ${product.on_hand}, expected ${expected}`);
    }
    checks.push(onHand);
  }

  const stockOrderById = new Map(stockData.stockOrders.map((row) => [row.order_id, row.status]));
  const reservationsByOrder = groupBy(stockData.reservations, (r) => r.order_id);
  const stock = new Check('stock follows the order: committed if confirmed, given back if cancelled');
  for (const order of settled) {
    const status = stockOrderById.get(order.id);
    const held = reservationsByOrder.get(order.id) ?? [];
    const lines = quantities(linesByOrder.get(order.id) ?? []);
    let problem: string | undefined;
    if (order.status === 'CONFIRMED') {
      const done = quantities(held.filter((r) => r.status === 'COMMITTED'));
      if (status !== 'COMMITTED') problem = `confirmed order ${order.id}: stock ${status ?? 'never handled'}`;
      else if (!sameQuantities(done, lines) || held.some((r) => r.status !== 'COMMITTED')) {
        problem = `confirmed order ${order.id}: committed units differ from its lines`;
      }
    } else {
      const holding = held.filter((r) => r.status !== 'RELEASED');
      if (!status) problem = `cancelled order ${order.id}: never heard of by the product service`;
      else if (!['RELEASED', 'REJECTED', 'TOMBSTONE'].includes(status)) problem = `cancelled order ${order.id}: stock ${status}`;
      else if (holding.length > 0) problem = `cancelled order ${order.id}: still holds ${holding.length} reservation(s)`;
      else if (status === 'RELEASED' && !sameQuantities(quantities(held), lines)) {
        problem = `cancelled order ${order.id}: released units differ from its lines`;
      }
    }
    stock.look(problem);
  }
  for (const row of stockData.stockOrders) {
    stock.look(!orderById.has(row.order_id) && `stock ${row.status} for unknown order ${row.order_id}`);
  }
  checks.push(stock);

  // --- Payments -----------------------------------------------------------------------------
  const paymentsByOrder = groupBy(paymentData.payments, (p) => p.order_id);
  const money = new Check('payments: confirmed = captured total, cancelled = nothing kept');
  for (const order of settled) {
    const found = paymentsByOrder.get(order.id) ?? [];
    const payment = found[0];
    let problem: string | undefined;
    if (found.length > 1) problem = `order ${order.id}: ${found.length} payments`;
    else if (order.status === 'CONFIRMED') {
      if (payment?.status !== 'CAPTURED') problem = `confirmed order ${order.id}: payment ${payment?.status ?? 'missing'}`;
      else if (Number(payment.amount) !== Number(order.total_amount) || payment.currency !== order.currency) {
        problem = `confirmed order ${order.id}: captured ${payment.amount} ${payment.currency}, total ${order.total_amount} ${order.currency}`;
      }
    } else if (payment?.status === 'CAPTURED') problem = `cancelled order ${order.id}: payment still CAPTURED`;
    else if (wasConfirmed(order) && payment?.status !== 'REFUNDED') {
      problem = `order ${order.id} cancelled after confirmation: payment ${payment?.status ?? 'missing'}, not REFUNDED`;
    }
    money.look(problem);
  }
  for (const payment of paymentData.payments) {
    money.look(!orderById.has(payment.order_id) && `payment ${payment.id} for unknown order ${payment.order_id}`);
  }
  checks.push(money);

  if (paymentData.ledger) {
    const ledger = new Check("provider's books: money held = confirmed total, else 0");
    const net = new Map(paymentData.ledger.map((row) => [row.order_id, row]));
    for (const order of settled) {
      const row = net.get(order.id);
      const held = Number(row?.net ?? 0);
      const expected = order.status === 'CONFIRMED' ? Number(order.total_amount) : 0;
      ledger.look(
        (held !== expected || (row?.refunds ?? 0) > 1) &&
          `order ${order.id} (${order.status}): provider holds ${held} after ${row?.refunds ?? 0} refund(s), expected ${expected}`,
      );
    }
    for (const row of paymentData.ledger) {
      ledger.look(!orderById.has(row.order_id) && Number(row.net) !== 0 && `provider holds ${row.net} for unknown order ${row.order_id}`);
    }
    checks.push(ledger);
  }

  // --- Shipments ----------------------------------------------------------------------------
  const shipmentsByOrder = groupBy(shippingData.rows, (row) => row.order_id);
  const shipping = new Check('shipments: one per confirmed order, none shipped for a cancelled one');
  const SHIPPED = ['SHIPPED', 'DELIVERED'];
  for (const order of settled) {
    const found = shipmentsByOrder.get(order.id) ?? [];
    const shipment = found[0];
    let problem: string | undefined;
    if (found.length > 1) problem = `order ${order.id}: ${found.length} shipments`;
    else if (order.status === 'CONFIRMED') {
      if (!shipment || shipment.tombstone) problem = `confirmed order ${order.id}: no shipment`;
      else if (shipment.status === 'CANCELLED') problem = `confirmed order ${order.id}: its shipment is CANCELLED`;
    } else if (shipment && SHIPPED.includes(shipment.status)) {
      problem = `cancelled order ${order.id}: its shipment ${shipment.id} is ${shipment.status}`;
    }
    shipping.look(problem);
  }
  for (const row of shippingData.rows) {
    shipping.look(!orderById.has(row.order_id) && `shipment ${row.id} for unknown order ${row.order_id}`);
  }
  checks.push(shipping);

  // --- Notifications ------------------------------------------------------------------------
  const perEvent = new Check('at most one notification per event');
  for (const [eventId, rows] of groupBy(notificationData.rows, (row) => row.event_id)) {
    perEvent.look(rows.length > 1 && `event ${eventId}: ${rows.length} notifications`);
  }
  checks.push(perEvent);

  const byOrder = groupBy(
    notificationData.rows.filter((row) => row.order_id !== null),
    (row) => row.order_id!,
  );
  const emails = new Check('one notification per outcome of every settled order');
  for (const order of settled) {
    const shipment = shipmentsByOrder.get(order.id)?.[0];
    // A shipment still moving may have its email on the way.
    if (shipment && !shipment.settled) continue;
    const expected = new Set<string>();
    if (shipment && SHIPPED.includes(shipment.status)) expected.add('shipments.events.shipped');
    if (shipment?.status === 'DELIVERED') expected.add('shipments.events.delivered');
    if (order.status === 'CONFIRMED' || wasConfirmed(order)) expected.add('orders.events.confirmed');
    if (order.status === 'CANCELLED') expected.add('orders.events.cancelled');
    if ((paymentsByOrder.get(order.id) ?? []).some((p) => p.status === 'REFUNDED')) expected.add('payments.events.refunded');
    const got = groupBy(byOrder.get(order.id) ?? [], (row) => row.event_type);
    const problems: string[] = [];
    for (const type of expected) {
      const count = got.get(type)?.length ?? 0;
      if (count !== 1) problems.push(`${count} × ${type}`);
    }
    for (const [type, rows] of got) if (!expected.has(type)) problems.push(`unexpected ${rows.length} × ${type}`);
    emails.look(problems.length > 0 && `order ${order.id} (${order.status}): ${problems.join(', ')}`);
  }
  checks.push(emails);

  // --- Totals -------------------------------------------------------------------------------
  const count = <T>(rows: readonly T[], test: (row: T) => boolean) => rows.filter(test).length;
  const notificationStatus: Record<string, number> = {};
  for (const row of notificationData.rows) notificationStatus[row.status] = (notificationStatus[row.status] ?? 0) + 1;
  const shipmentStatus: Record<string, number> = {};
  for (const row of shippingData.rows) if (!row.tombstone) shipmentStatus[row.status] = (shipmentStatus[row.status] ?? 0) + 1;
  return {
    ok: checks.every((check) => check.violations === 0),
    checks,
    totals: {
      orders: orders.length,
      pending: count(orders, (o) => o.status === 'PENDING'),
      confirmed: count(orders, (o) => o.status === 'CONFIRMED'),
      cancelled: count(orders, (o) => o.status === 'CANCELLED'),
      settling: count(orders, (o) => o.status !== 'PENDING' && !o.settled),
      captured: count(paymentData.payments, (p) => p.status === 'CAPTURED'),
      refunded: count(paymentData.payments, (p) => p.status === 'REFUNDED'),
      declined: count(paymentData.payments, (p) => p.status === 'DECLINED'),
      shipments: shipmentStatus,
      notifications: notificationStatus,
      outboxBacklog: {
        customers: customerIds.outbox,
        products: stockData.outbox,
        orders: orderData.outbox,
        payments: paymentData.outbox,
        notifications: notificationData.outbox,
        shipments: shippingData.outbox,
      },
    },
  };
}

/** A plain-text table of rows (first row: headings). */
export function table(rows: readonly (readonly (string | number)[])[]): string {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => String(row[column] ?? '').length)));
  const line = (row: readonly (string | number)[]) =>
    row
      .map((cell, column) => (typeof cell === 'number' ? String(cell).padStart(widths[column]!) : String(cell).padEnd(widths[column]!)))
      .join('  ');
  return [line(rows[0]!), widths.map((width) => '-'.repeat(width)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

export function formatReport(report: ReconcileReport): string {
  const rows: (string | number)[][] = [['check', 'checked', 'violations', 'result']];
  for (const check of report.checks) rows.push([check.name, check.checked, check.violations, check.violations === 0 ? 'ok' : 'VIOLATED']);
  const t = report.totals;
  const parts = [
    table(rows),
    '',
    `orders ${t.orders}: ${t.confirmed} confirmed, ${t.cancelled} cancelled, ${t.pending} pending (${t.settling} settling, left out)`,
    `payments: ${t.captured} captured, ${t.refunded} refunded, ${t.declined} declined`,
    `shipments: ${
      Object.entries(t.shipments)
        .map(([status, n]) => `${n} ${status}`)
        .join(', ') || 'none'
    }`,
    `notifications: ${
      Object.entries(t.notifications)
        .map(([status, n]) => `${n} ${status}`)
        .join(', ') || 'none'
    }`,
    `outbox backlog: ${Object.entries(t.outboxBacklog)
      .map(([name, n]) => `${name} ${n}`)
      .join(', ')}`,
  ];
  for (const check of report.checks.filter((c) => c.violations > 0)) {
    parts.push('', `${check.name}:`, ...check.examples.map((example) => `  - ${example}`));
    if (check.violations > check.examples.length) parts.push(`  … and ${check.violations - check.examples.length} more`);
  }
  parts.push('', report.ok ? 'reconciled: every invariant holds' : 'NOT reconciled: see the violations above');
  return parts.join('\n');
}

const USAGE = `usage: npm run reconcile -- [--grace-ms N] [--json]
  --grace-ms N   orders changed in the last N ms are still settling and left out (default 60000)
  --json         print the report as JSON
Databases: ${SERVICES.map((name) => databaseVariable(registry[name])).join(', ')};
each defaults to shop_<service> on PGHOST/PGPORT/PGUSER/PGPASSWORD.
Exit status: 0 reconciled, 1 a violation, 2 cannot check.`;

async function main(argv: string[]): Promise<number> {
  let graceMs = 60_000;
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--json') json = true;
    else if (arg === '--grace-ms' && /^\d+$/.test(argv[i + 1] ?? '')) graceMs = Number(argv[++i]);
    else if (arg === '--help' || arg === '-h') {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    } else {
      process.stderr.write(`unknown or incomplete option "${arg}"\n${USAGE}\n`);
      return 2;
    }
  }
  const databases = databasesFromEnv();
  let report: ReconcileReport;
  try {
    report = await reconcile({ databases, graceMs });
  } catch (error) {
    const where = Object.entries(databases)
      .map(([name, url]) => `  ${name}: ${url.replace(/:[^:@/]*@/, ':***@')}`)
      .join('\n');
    process.stderr.write(`cannot read the databases (${(error as Error).message}).\nTried:\n${where}\n`);
    return 2;
  }
  process.stdout.write(json ? `${JSON.stringify(report, null, 2)}\n` : `${formatReport(report)}\n`);
  return report.ok ? 0 : 1;
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2));
}
