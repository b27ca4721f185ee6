// All SQL of the order service.
import type { CancelReason, Money, Order, OrderStatus } from '../../subjects/index.ts';
import type { Queryable, Tx } from '../kit/index.ts';

interface OrderRow {
  id: string;
  customer_id: string;
  status: OrderStatus;
  currency: string;
  total_amount: number;
  cancel_reason: CancelReason | null;
  deadline_at: Date;
  created_at: Date;
  updated_at: Date;
  /** created_at in microseconds since the epoch: exact, for the cursor. */
  created_us: number;
}

interface LineRow {
  order_id: string;
  product_id: string;
  sku: string;
  name: string;
  quantity: number;
  unit_amount: number;
  line_amount: number;
}

interface HistoryRow {
  order_id: string;
  status: OrderStatus;
  reason: string | null;
  at: Date;
}

const COLUMNS = `id, customer_id, status, currency, total_amount, cancel_reason, deadline_at, created_at, updated_at,
  (extract(epoch FROM created_at) * 1000000)::bigint AS created_us`;

export interface NewLine {
  productId: string;
  sku: string;
  name: string;
  quantity: number;
  unitAmount: number;
  lineAmount: number;
}

export interface NewOrder {
  id: string;
  customerId: string;
  currency: string;
  totalAmount: number;
  lines: readonly NewLine[];
  deadlineMs: number;
}

/** Stores a PENDING order with its lines and first history entry; the deadline is counted on the database clock. */
export async function insertOrder(tx: Tx, order: NewOrder): Promise<Order> {
  const { rows } = await tx.query<OrderRow>(
    `INSERT INTO orders (id, customer_id, status, currency, total_amount, deadline_at)
     VALUES ($1, $2, 'PENDING', $3, $4, now() + $5::bigint * interval '1 millisecond')
     RETURNING ${COLUMNS}`,
    [order.id, order.customerId, order.currency, order.totalAmount, order.deadlineMs],
  );
  await tx.query(
    `INSERT INTO order_lines (order_id, position, product_id, sku, name, quantity, unit_amount, line_amount)
     SELECT $1, line.position, line.product_id, line.sku, line.name, line.quantity, line.unit_amount, line.line_amount
     FROM unnest($2::uuid[], $3::text[], $4::text[], $5::int[], $6::bigint[], $7::bigint[])
       WITH ORDINALITY AS line (product_id, sku, name, quantity, unit_amount, line_amount, position)`,
    [
      order.id,
      order.lines.map((line) => line.productId),
      order.lines.map((line) => line.sku),
      order.lines.map((line) => line.name),
      order.lines.map((line) => line.quantity),
      order.lines.map((line) => line.unitAmount),
      order.lines.map((line) => line.lineAmount),
    ],
  );
  await tx.query(`INSERT INTO order_status_history (order_id, status, reason) VALUES ($1, 'PENDING', NULL)`, [order.id]);
  return (await loadOrders(tx, rows))[0]!;
}

/** One order; with `customerId`, only if it is theirs. */
export async function findOrder(db: Queryable, id: string, customerId?: string): Promise<Order | undefined> {
  const { rows } = await db.query<OrderRow>(
    `SELECT ${COLUMNS} FROM orders WHERE id = $1 AND ($2::uuid IS NULL OR customer_id = $2::uuid)`,
    [id, customerId ?? null],
  );
  return (await loadOrders(db, rows))[0];
}

export interface Cursor {
  createdUs: number;
  id: string;
}

/** A customer's orders newest first, after `cursor`; one row more than asked tells whether a next page exists. */
export async function listOrders(
  db: Queryable,
  customerId: string,
  first: number,
  after: Cursor | undefined,
): Promise<{ items: Order[]; next: Cursor | undefined }> {
  const { rows } = await db.query<OrderRow>(
    `SELECT ${COLUMNS} FROM orders
     WHERE customer_id = $1
       AND ($2::bigint IS NULL
            OR (created_at, id) < (timestamptz 'epoch' + $2::bigint * interval '1 microsecond', $3::uuid))
     ORDER BY created_at DESC, id DESC
     LIMIT $4`,
    [customerId, after?.createdUs ?? null, after?.id ?? null, first + 1],
  );
  const page = rows.slice(0, first);
  const last = page[page.length - 1];
  return {
    items: await loadOrders(db, page),
    next: rows.length > first && last ? { createdUs: last.created_us, id: last.id } : undefined,
  };
}

/** The order as the transition saw it: enough for the event it emits. */
export interface Transitioned {
  id: string;
  customerId: string;
  previousStatus: OrderStatus;
  total: Money;
}

/**
 * Moves an order from one of `from` to `to` and records it in the history.
 * The UPDATE is guarded by the status, so a late or repeated event, or a
 * concurrent transition that won, changes nothing (undefined). With
 * `customerId`, only that customer's order moves.
 */
export async function transition(
  tx: Tx,
  change: {
    id: string;
    from: readonly OrderStatus[];
    to: OrderStatus;
    cancelReason?: CancelReason;
    reason: string | null;
    customerId?: string;
  },
): Promise<Transitioned | undefined> {
  // Lock first to learn the status it moves from (for previousStatus).
  const current = await tx.query<{ status: OrderStatus }>(
    `SELECT status FROM orders WHERE id = $1 AND ($2::uuid IS NULL OR customer_id = $2::uuid) FOR UPDATE`,
    [change.id, change.customerId ?? null],
  );
  const previous = current.rows[0]?.status;
  if (!previous || !change.from.includes(previous)) return undefined;
  const { rows } = await tx.query<{ customer_id: string; currency: string; total_amount: number }>(
    `UPDATE orders SET status = $2, cancel_reason = $3, updated_at = now()
     WHERE id = $1 AND status = $4
     RETURNING customer_id, currency, total_amount`,
    [change.id, change.to, change.cancelReason ?? null, previous],
  );
  const row = rows[0];
  if (!row) return undefined;
  await tx.query(`INSERT INTO order_status_history (order_id, status, reason) VALUES ($1, $2, $3)`, [
    change.id,
    change.to,
    change.reason,
  ]);
  return {
    id: change.id,
    customerId: row.customer_id,
    previousStatus: previous,
    total: { amount: row.total_amount, currency: row.currency },
  };
}

/**
 * Locks up to `limit` PENDING orders past their deadline. SKIP LOCKED lets
 * several instances sweep at once, each taking different orders, and skips an
 * order an event handler is moving right now.
 */
export async function lockOverdueOrders(tx: Tx, limit: number): Promise<string[]> {
  const { rows } = await tx.query<{ id: string }>(
    `SELECT id FROM orders
     WHERE status = 'PENDING' AND deadline_at <= now()
     ORDER BY deadline_at
     LIMIT $1
     FOR UPDATE SKIP LOCKED`,
    [limit],
  );
  return rows.map((row) => row.id);
}

/** Completes order rows with their lines and history, keeping the rows' order. */
async function loadOrders(db: Queryable, rows: readonly OrderRow[]): Promise<Order[]> {
  if (rows.length === 0) return [];
  const ids = rows.map((row) => row.id);
  const [lines, history] = await Promise.all([
    db.query<LineRow>(
      `SELECT order_id, product_id, sku, name, quantity, unit_amount, line_amount
       FROM order_lines WHERE order_id = ANY($1::uuid[]) ORDER BY order_id, position`,
      [ids],
    ),
    db.query<HistoryRow>(
      `SELECT order_id, status, reason, at FROM order_status_history WHERE order_id = ANY($1::uuid[]) ORDER BY order_id, seq`,
      [ids],
    ),
  ]);
  return rows.map((row) => ({
    id: row.id,
    customerId: row.customer_id,
    status: row.status,
    lines: lines.rows
      .filter((line) => line.order_id === row.id)
      .map((line) => ({
        productId: line.product_id,
        sku: line.sku,
        name: line.name,
        quantity: line.quantity,
        unitPrice: { amount: line.unit_amount, currency: row.currency },
        lineTotal: { amount: line.line_amount, currency: row.currency },
      })),
    total: { amount: row.total_amount, currency: row.currency },
    cancelReason: row.cancel_reason,
    history: history.rows
      .filter((entry) => entry.order_id === row.id)
      .map((entry) => ({ status: entry.status, at: entry.at.toISOString(), reason: entry.reason })),
    deadlineAt: row.deadline_at.toISOString(),
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  }));
}
