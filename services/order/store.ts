// All SQL of the order service.
import type { CancelReason, Money, Order, OrderStatus, ShippingAddress } from '../../subjects/index.ts';
import type { Queryable, Transaction } from '../kit/index.ts';

interface OrderRow {
  id: string;
  customer_id: string;
  status: OrderStatus;
  currency: string;
  total_amount: number;
  cancel_reason: CancelReason | null;
  shipping_address: ShippingAddress | null;
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

const COLUMNS = `id, customer_id, status, currency, total_amount, cancel_reason, shipping_address, deadline_at, created_at, updated_at,
  (extract(epoch FROM created_at) * 1000000)::bigint AS created_us`;

/**
 * An order's lines (by position) and history (oldest first) as JSON columns
 * beside its row, so that reading an order is one statement, not three.
 */
const DETAILS = `,
  (SELECT json_agg(json_build_object('product_id', l.product_id, 'sku', l.sku, 'name', l.name, 'quantity', l.quantity,
                                     'unit_amount', l.unit_amount, 'line_amount', l.line_amount) ORDER BY l.position)
     FROM order_lines l WHERE l.order_id = orders.id) AS lines_json,
  (SELECT json_agg(json_build_object('status', h.status, 'reason', h.reason, 'at', h.at) ORDER BY h.seq)
     FROM order_status_history h WHERE h.order_id = orders.id) AS history_json`;

interface DetailedRow extends OrderRow {
  lines_json: Omit<LineRow, 'order_id'>[] | null;
  /** `at` as JSON text (ISO 8601 with the server's offset). */
  history_json: { status: OrderStatus; reason: string | null; at: string }[] | null;
}

function fromDetailed(row: DetailedRow): Order {
  return toOrder(
    row,
    (row.lines_json ?? []).map((line) => ({ ...line, order_id: row.id })),
    (row.history_json ?? []).map((entry) => ({ order_id: row.id, status: entry.status, reason: entry.reason, at: new Date(entry.at) })),
  );
}

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
  /** The client's key and the fingerprint of its request (orders.place is idempotent by customer and key). */
  idempotencyKey: string;
  fingerprint: string;
  shippingAddress: ShippingAddress | null;
  currency: string;
  totalAmount: number;
  lines: readonly NewLine[];
  deadlineMs: number;
}

/**
 * Claims the order's idempotency key and stores a PENDING order with its
 * lines and first history entry; the deadline is counted on the database
 * clock. One statement, and the order is answered from what was written:
 * every round trip to the database costs more than the SQL it carries
 * (bench/saga.ts). Undefined, with nothing stored, when the customer's key is
 * taken: the claim waits for a transaction holding the same key to end, so a
 * concurrent attempt then finds the key and its order (findKeyedOrder).
 */
export async function insertOrder(tx: Transaction, order: NewOrder): Promise<Order | undefined> {
  const { rows } = await tx.query<OrderRow & { history_at: Date }>(
    `WITH claimed AS (
       INSERT INTO order_requests (customer_id, idempotency_key, fingerprint, order_id)
       VALUES ($2, $12, $13, $1)
       ON CONFLICT (customer_id, idempotency_key) DO NOTHING
       RETURNING order_id
     ), created AS (
       INSERT INTO orders (id, customer_id, status, currency, total_amount, deadline_at, shipping_address)
       SELECT $1, $2, 'PENDING', $3, $4, now() + $5::bigint * interval '1 millisecond', $14::jsonb FROM claimed
       RETURNING ${COLUMNS}
     ), lines AS (
       INSERT INTO order_lines (order_id, position, product_id, sku, name, quantity, unit_amount, line_amount)
       SELECT claimed.order_id, line.position, line.product_id, line.sku, line.name, line.quantity, line.unit_amount, line.line_amount
       FROM claimed, unnest($6::uuid[], $7::text[], $8::text[], $9::int[], $10::bigint[], $11::bigint[])
         WITH ORDINALITY AS line (product_id, sku, name, quantity, unit_amount, line_amount, position)
     ), history AS (
       INSERT INTO order_status_history (order_id, status, reason) SELECT order_id, 'PENDING', NULL FROM claimed RETURNING at
     )
     SELECT created.*, history.at AS history_at FROM created, history`,
    [
      order.id,
      order.customerId,
      order.currency,
      order.totalAmount,
      order.deadlineMs,
      order.lines.map((line) => line.productId),
      order.lines.map((line) => line.sku),
      order.lines.map((line) => line.name),
      order.lines.map((line) => line.quantity),
      order.lines.map((line) => line.unitAmount),
      order.lines.map((line) => line.lineAmount),
      order.idempotencyKey,
      order.fingerprint,
      order.shippingAddress && JSON.stringify(order.shippingAddress),
    ],
  );
  const row = rows[0];
  if (!row) return undefined;
  const lines: LineRow[] = order.lines.map((line) => ({
    order_id: order.id,
    product_id: line.productId,
    sku: line.sku,
    name: line.name,
    quantity: line.quantity,
    unit_amount: line.unitAmount,
    line_amount: line.lineAmount,
  }));
  return toOrder(row, lines, [{ order_id: order.id, status: 'PENDING', reason: null, at: row.history_at }]);
}

/** The order a customer's idempotency key made, with the fingerprint of the request that made it. */
export async function findKeyedOrder(
  db: Queryable,
  customerId: string,
  idempotencyKey: string,
): Promise<{ fingerprint: string; order: Order } | undefined> {
  const { rows } = await db.query<DetailedRow & { fingerprint: string }>(
    `SELECT r.fingerprint, o.*
       FROM order_requests r, LATERAL (SELECT ${COLUMNS}${DETAILS} FROM orders WHERE orders.id = r.order_id) o
      WHERE r.customer_id = $1 AND r.idempotency_key = $2`,
    [customerId, idempotencyKey],
  );
  const row = rows[0];
  return row && { fingerprint: row.fingerprint, order: fromDetailed(row) };
}

/**
 * Forgets idempotency keys older than `hours`, at most `limit` per call;
 * returns how many went. Their orders stay: only a repeat of the key would
 * now place a new order.
 */
export async function pruneIdempotencyKeys(db: Queryable, hours: number, limit: number): Promise<number> {
  const { rowCount } = await db.query(
    `DELETE FROM order_requests WHERE (customer_id, idempotency_key) IN (
       SELECT customer_id, idempotency_key FROM order_requests
        WHERE created_at < now() - $1::int * interval '1 hour'
        ORDER BY created_at LIMIT $2)`,
    [hours, limit],
  );
  return rowCount ?? 0;
}

/** One order; with `customerId`, only if it is theirs. */
export async function findOrder(db: Queryable, id: string, customerId?: string): Promise<Order | undefined> {
  const { rows } = await db.query<DetailedRow>(
    `SELECT ${COLUMNS}${DETAILS} FROM orders WHERE id = $1 AND ($2::uuid IS NULL OR customer_id = $2::uuid)`,
    [id, customerId ?? null],
  );
  return rows[0] && fromDetailed(rows[0]);
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
  const { rows } = await db.query<DetailedRow>(
    `SELECT ${COLUMNS}${DETAILS} FROM orders
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
    items: page.map(fromDetailed),
    next: rows.length > first && last ? { createdUs: last.created_us, id: last.id } : undefined,
  };
}

/** The order as the transition saw it: enough for the event it emits. */
export interface Transitioned {
  id: string;
  customerId: string;
  previousStatus: OrderStatus;
  total: Money;
  /** Seconds since the order was placed (to the start of this transaction). */
  ageSeconds: number;
}

/** What transition and transitionMany return of each order they moved. */
interface TransitionedRow {
  id: string;
  customer_id: string;
  currency: string;
  total_amount: number;
  previous_status: OrderStatus;
  age_seconds: number;
}

function toTransitioned(row: TransitionedRow): Transitioned {
  return {
    id: row.id,
    customerId: row.customer_id,
    previousStatus: row.previous_status,
    total: { amount: row.total_amount, currency: row.currency },
    ageSeconds: row.age_seconds,
  };
}

/**
 * Moves an order from one of `from` to `to` and records it in the history.
 * The UPDATE is guarded by the status, so a late or repeated event, or a
 * concurrent transition that won, changes nothing (undefined). With
 * `customerId`, only that customer's order moves.
 */
export async function transition(
  tx: Transaction,
  change: {
    id: string;
    from: readonly OrderStatus[];
    to: OrderStatus;
    cancelReason?: CancelReason;
    reason: string | null;
    customerId?: string;
  },
): Promise<Transitioned | undefined> {
  // One statement: lock the order (learning the status it moves from, for
  // previousStatus), move it if that status is one of `from`, record it.
  const { rows } = await tx.query<TransitionedRow>(
    `WITH current AS (
       SELECT id, status FROM orders WHERE id = $1 AND ($2::uuid IS NULL OR customer_id = $2::uuid) FOR UPDATE
     ), moved AS (
       UPDATE orders SET status = $3, cancel_reason = $4, updated_at = now()
       FROM current
       WHERE orders.id = current.id AND orders.status = current.status AND current.status = ANY($5::text[])
       RETURNING orders.id, orders.customer_id, orders.currency, orders.total_amount, current.status AS previous_status,
         extract(epoch FROM now() - orders.created_at)::float8 AS age_seconds
     ), history AS (
       INSERT INTO order_status_history (order_id, status, reason) SELECT $1, $3, $6 FROM moved
     )
     SELECT * FROM moved`,
    [change.id, change.customerId ?? null, change.to, change.cancelReason ?? null, change.from, change.reason],
  );
  return rows[0] && toTransitioned(rows[0]);
}

/**
 * transition for several orders at once (a batch of events), all moving to
 * `to` for the same reason: one statement, locking the orders in id order.
 * Returns the orders that moved, by id.
 */
export async function transitionMany(
  tx: Transaction,
  change: { ids: readonly string[]; from: readonly OrderStatus[]; to: OrderStatus; reason: string | null },
): Promise<Map<string, Transitioned>> {
  const { rows } = await tx.query<TransitionedRow>(
    `WITH current AS (
       SELECT id, status FROM orders WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE
     ), moved AS (
       UPDATE orders SET status = $2, cancel_reason = NULL, updated_at = now()
       FROM current
       WHERE orders.id = current.id AND current.status = ANY($3::text[])
       RETURNING orders.id, orders.customer_id, orders.currency, orders.total_amount, current.status AS previous_status,
         extract(epoch FROM now() - orders.created_at)::float8 AS age_seconds
     ), history AS (
       INSERT INTO order_status_history (order_id, status, reason) SELECT id, $2, $4 FROM moved
     )
     SELECT * FROM moved`,
    [[...new Set(change.ids)], change.to, change.from, change.reason],
  );
  return new Map(rows.map((row) => [row.id, toTransitioned(row)]));
}

/**
 * Locks up to `limit` PENDING orders past their deadline. SKIP LOCKED lets
 * several instances sweep at once, each taking different orders, and skips an
 * order an event handler is moving right now.
 */
export async function lockOverdueOrders(tx: Transaction, limit: number): Promise<string[]> {
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

/** An order row with its lines (by position) and history (oldest first) as the contract's Order. */
function toOrder(row: OrderRow, lines: readonly LineRow[], history: readonly HistoryRow[]): Order {
  return {
    id: row.id,
    customerId: row.customer_id,
    status: row.status,
    lines: lines.map((line) => ({
      productId: line.product_id,
      sku: line.sku,
      name: line.name,
      quantity: line.quantity,
      unitPrice: { amount: line.unit_amount, currency: row.currency },
      lineTotal: { amount: line.line_amount, currency: row.currency },
    })),
    total: { amount: row.total_amount, currency: row.currency },
    cancelReason: row.cancel_reason,
    shippingAddress: row.shipping_address,
    history: history.map((entry) => ({ status: entry.status, at: entry.at.toISOString(), reason: entry.reason })),
    deadlineAt: row.deadline_at.toISOString(),
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  };
}
