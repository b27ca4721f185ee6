// All SQL of the shipping service.
import type { Shipment, ShipmentStatus } from '../../subjects/index.ts';
import type { Queryable } from '../kit/index.ts';

export interface ShipmentRow {
  id: string;
  order_id: string;
  customer_id: string;
  status: ShipmentStatus;
  carrier: string;
  tracking_number: string | null;
  history: { status: ShipmentStatus; at: string; note: string | null }[];
  held_at: Date | null;
  step_attempts: number;
  created_at: Date;
  updated_at: Date;
}

const COLUMNS = 'id, order_id, customer_id, status, carrier, tracking_number, history, held_at, step_attempts, created_at, updated_at';

/** A tombstone (an order cancelled before it had a shipment) has no history and is no shipment to show. */
export function isTombstone(row: ShipmentRow): boolean {
  return row.history.length === 0;
}

export function toShipment(row: ShipmentRow): Shipment {
  return {
    id: row.id,
    orderId: row.order_id,
    customerId: row.customer_id,
    status: row.status,
    carrier: row.carrier,
    trackingNumber: row.tracking_number,
    history: row.history.map((step) => ({ status: step.status, at: new Date(step.at).toISOString(), note: step.note })),
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  };
}

/** One step of the history (`$2` status, `$3` note), as SQL. */
const STEP = `jsonb_build_array(jsonb_build_object('status', $2::text, 'at', clock_timestamp(), 'note', $3::text))`;
/** The history of the row being updated with that step added. */
const APPEND_STEP = `history || ${STEP}`;

/** The shipments of `orderIds`, in that order; null where an order has none (or only a tombstone). */
export async function findByOrders(db: Queryable, orderIds: readonly string[]): Promise<(Shipment | null)[]> {
  const { rows } = await db.query<ShipmentRow>(`SELECT ${COLUMNS} FROM shipments WHERE order_id = ANY($1::uuid[])`, [orderIds]);
  const byOrder = new Map(rows.filter((row) => !isTombstone(row)).map((row) => [row.order_id, toShipment(row)]));
  return orderIds.map((id) => byOrder.get(id) ?? null);
}

/**
 * A new shipment with its label (LABEL_CREATED), due at the carrier after
 * `shipAfterMs`; undefined when the order has a row already (a repeat, or a
 * tombstone of its cancellation).
 */
export async function insertShipment(
  tx: Queryable,
  shipment: { id: string; orderId: string; customerId: string; carrier: string; shipAfterMs: number },
): Promise<ShipmentRow | undefined> {
  const { rows } = await tx.query<ShipmentRow>(
    `INSERT INTO shipments (id, order_id, customer_id, status, carrier, history, next_step_at)
     VALUES ($1, $4, $5, $2, $6, ${STEP}, clock_timestamp() + $7 * interval '1 millisecond')
     ON CONFLICT (order_id) DO NOTHING RETURNING ${COLUMNS}`,
    [shipment.id, 'LABEL_CREATED', 'label created', shipment.orderId, shipment.customerId, shipment.carrier, shipment.shipAfterMs],
  );
  return rows[0];
}

/**
 * A tombstone for an order that has no shipment yet: it stops a later
 * confirmation from creating one. Held (with a check after `holdMs`) when it
 * comes from shipments.hold, whose cancellation may yet fail; final when it
 * comes from the cancellation itself. False when the order has a row already.
 */
export async function insertTombstone(
  tx: Queryable,
  tombstone: { id: string; orderId: string; customerId: string; carrier: string; holdMs: number | null },
): Promise<boolean> {
  const { rowCount } = await tx.query(
    `INSERT INTO shipments (id, order_id, customer_id, status, carrier, held_at, next_step_at)
     VALUES ($1, $2, $3, 'CANCELLED', $4, CASE WHEN $5::int IS NULL THEN NULL ELSE clock_timestamp() END,
             clock_timestamp() + $5::int * interval '1 millisecond')
     ON CONFLICT (order_id) DO NOTHING`,
    [tombstone.id, tombstone.orderId, tombstone.customerId, tombstone.carrier, tombstone.holdMs],
  );
  return rowCount === 1;
}

/** The order's row, locked until the end of the transaction. */
export async function lockByOrder(tx: Queryable, orderId: string): Promise<ShipmentRow | undefined> {
  const { rows } = await tx.query<ShipmentRow>(`SELECT ${COLUMNS} FROM shipments WHERE order_id = $1 FOR UPDATE`, [orderId]);
  return rows[0];
}

/** The row, locked until the end of the transaction. */
export async function lockById(tx: Queryable, id: string): Promise<ShipmentRow | undefined> {
  const { rows } = await tx.query<ShipmentRow>(`SELECT ${COLUMNS} FROM shipments WHERE id = $1 FOR UPDATE`, [id]);
  return rows[0];
}

/** Holds a shipment (kept from the carrier), checked again after `holdMs` unless the cancellation comes first. */
export async function hold(tx: Queryable, id: string, holdMs: number): Promise<void> {
  await tx.query(
    `UPDATE shipments SET held_at = coalesce(held_at, clock_timestamp()),
       next_step_at = clock_timestamp() + $2 * interval '1 millisecond', updated_at = clock_timestamp() WHERE id = $1`,
    [id, holdMs],
  );
}

/** CANCELLED for good: not held, nothing left for the carrier (a step in the history unless a tombstone). */
export async function cancel(tx: Queryable, row: ShipmentRow, note: string): Promise<ShipmentRow> {
  const { rows } = await tx.query<ShipmentRow>(
    `UPDATE shipments SET status = 'CANCELLED', held_at = NULL, next_step_at = NULL, updated_at = clock_timestamp(),
       history = CASE WHEN jsonb_array_length(history) = 0 THEN history ELSE ${APPEND_STEP} END
     WHERE id = $1 RETURNING ${COLUMNS}`,
    [row.id, 'CANCELLED', note],
  );
  return rows[0]!;
}

/**
 * Ends a hold whose cancellation did not happen: a held shipment goes back to
 * the carrier now; a held tombstone becomes the shipment the order should
 * have had (LABEL_CREATED, due after `shipAfterMs`).
 */
export async function release(tx: Queryable, row: ShipmentRow, shipAfterMs: number): Promise<ShipmentRow> {
  const revive = isTombstone(row);
  const { rows } = await tx.query<ShipmentRow>(
    `UPDATE shipments SET held_at = NULL, step_attempts = 0, updated_at = clock_timestamp(),
       status = CASE WHEN $4::boolean THEN 'LABEL_CREATED' ELSE status END,
       history = CASE WHEN $4::boolean THEN ${APPEND_STEP} ELSE history END,
       next_step_at = clock_timestamp() + (CASE WHEN $4::boolean THEN $5::int ELSE 0 END) * interval '1 millisecond'
     WHERE id = $1 RETURNING ${COLUMNS}`,
    [row.id, 'LABEL_CREATED', 'label created', revive, shipAfterMs],
  );
  return rows[0]!;
}

/** A carrier's step of one shipment: `from` -> `to`, the following step due after `nextStepMs` (null: the last one). */
export interface Move {
  id: string;
  from: ShipmentStatus;
  to: ShipmentStatus;
  note: string;
  trackingNumber: string;
  nextStepMs: number | null;
}

/**
 * The carrier's steps of several shipments, each only if its row is still
 * at `from` and not held: the check and the move are one statement on the
 * row, so a hold committed first wins and a hold coming later sees the new
 * status. Returns the rows moved; a row that moved on or was held meanwhile
 * is not among them.
 */
export async function advance(tx: Queryable, moves: readonly Move[]): Promise<ShipmentRow[]> {
  if (moves.length === 0) return [];
  const { rows } = await tx.query<ShipmentRow>(
    `UPDATE shipments s SET status = m.to_status,
       history = s.history || jsonb_build_array(jsonb_build_object('status', m.to_status, 'at', clock_timestamp(), 'note', m.note)),
       tracking_number = m.tracking_number, step_attempts = 0, last_error = NULL,
       next_step_at = clock_timestamp() + m.next_step_ms * interval '1 millisecond', updated_at = clock_timestamp()
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[])
            AS m(id, from_status, to_status, note, tracking_number, next_step_ms)
     WHERE s.id = m.id AND s.status = m.from_status AND s.held_at IS NULL
     RETURNING ${COLUMNS.split(', ')
       .map((column) => `s.${column}`)
       .join(', ')}`,
    [
      moves.map((move) => move.id),
      moves.map((move) => move.from),
      moves.map((move) => move.to),
      moves.map((move) => move.note),
      moves.map((move) => move.trackingNumber),
      moves.map((move) => move.nextStepMs),
    ],
  );
  return rows;
}

/** A row the carrier (or the hold check) took from the queue. */
export type DueShipment = ShipmentRow;

/**
 * Claims up to `limit` due rows by leasing them: their next step moves
 * `leaseMs` ahead, in a statement that commits on its own, so the carrier is
 * called outside any transaction. SKIP LOCKED: the instances share the queue,
 * never a row. A process that dies mid-step leaves the row due again when
 * its lease runs out.
 */
export async function claimDue(db: Queryable, leaseMs: number, limit: number): Promise<DueShipment[]> {
  const { rows } = await db.query<ShipmentRow>(
    `UPDATE shipments SET next_step_at = clock_timestamp() + $1 * interval '1 millisecond'
      WHERE id IN (SELECT id FROM shipments WHERE next_step_at <= now()
                    ORDER BY next_step_at LIMIT $2 FOR UPDATE SKIP LOCKED)
      RETURNING ${COLUMNS}`,
    [leaseMs, limit],
  );
  return rows;
}

/**
 * Records a failed step and when to try again (measured from now). `held`:
 * whether the row was held when the step was claimed. A row held since then
 * keeps the hold's schedule: a carrier's retry must not bring the hold's
 * check forward.
 */
export async function markRetry(db: Queryable, id: string, held: boolean, error: string, delayMs: number): Promise<void> {
  await db.query(
    `UPDATE shipments SET step_attempts = step_attempts + 1, last_error = $2,
       next_step_at = clock_timestamp() + $3 * interval '1 millisecond', updated_at = clock_timestamp()
     WHERE id = $1 AND next_step_at IS NOT NULL AND (held_at IS NOT NULL) = $4::boolean`,
    [id, error.slice(0, 1000), delayMs, held],
  );
}

/** Takes a row with nothing left to do (delivered, cancelled) off the carrier's queue. */
export async function dequeue(db: Queryable, id: string): Promise<void> {
  await db.query('UPDATE shipments SET next_step_at = NULL WHERE id = $1', [id]);
}
