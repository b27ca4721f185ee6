// All SQL of the payment service (the simulator's own tables are its business: simulator.ts).
import type { CancelReason, Payment } from '../../subjects/index.ts';
import type { Queryable, Transaction } from '../kit/index.ts';

type PaymentStatus = Payment['status'];

interface PaymentRow {
  id: string;
  order_id: string;
  customer_id: string;
  amount: number;
  currency: string;
  status: PaymentStatus;
  decline_reason: string | null;
  provider_reference: string | null;
  created_at: Date;
  updated_at: Date;
}

const COLUMNS = 'id, order_id, customer_id, amount, currency, status, decline_reason, provider_reference, created_at, updated_at';

function toPayment(row: PaymentRow): Payment {
  return {
    id: row.id,
    orderId: row.order_id,
    customerId: row.customer_id,
    amount: { amount: row.amount, currency: row.currency },
    status: row.status,
    declineReason: row.decline_reason,
    providerReference: row.provider_reference,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  };
}

const ORDER_LOCK_CLASS = 7_370_001;

/**
 * Serialises everything this service does about one order until the end of
 * the transaction, and reads what is recorded about it once the lock is
 * held: its payment (if any) and whether it was cancelled before any
 * payment. The reservation and the cancellation of an order arrive on
 * different consumers, possibly at the same moment; without the lock, each
 * could miss the other's uncommitted row (a charge nobody refunds).
 *
 * One round trip: the function of migration 003 takes the lock, then reads
 * with a snapshot taken after it (a read in the same plain statement as the
 * lock would not see what the previous holder committed; see there).
 */
export async function lockOrder(tx: Queryable, orderId: string): Promise<{ payment: Payment | undefined; cancelled: boolean }> {
  const { rows } = await tx.query<{ [K in keyof PaymentRow]: PaymentRow[K] | null } & { cancelled: boolean }>(
    'SELECT * FROM lock_order($1, $2)',
    [ORDER_LOCK_CLASS, orderId],
  );
  const row = rows[0]!;
  return { payment: row.id === null ? undefined : toPayment(row as PaymentRow), cancelled: row.cancelled };
}

/**
 * lockOrder for several orders (a batch of reservations), in one round trip:
 * the function runs once per order, in order id order, so batches sharing an
 * order take its lock in the same order and never deadlock.
 */
export async function lockOrders(
  tx: Queryable,
  orderIds: readonly string[],
): Promise<Map<string, { payment: Payment | undefined; cancelled: boolean }>> {
  const { rows } = await tx.query<{ [K in keyof PaymentRow]: PaymentRow[K] | null } & { order_key: string; cancelled: boolean }>(
    `SELECT k.order_key, l.* FROM unnest($2::text[]) WITH ORDINALITY AS k(order_key, n)
       CROSS JOIN LATERAL lock_order($1, k.order_key) AS l ORDER BY k.n`,
    [ORDER_LOCK_CLASS, [...new Set(orderIds)].sort()],
  );
  return new Map(
    rows.map((row) => [row.order_key, { payment: row.id === null ? undefined : toPayment(row as PaymentRow), cancelled: row.cancelled }]),
  );
}

/** The payments of `orderIds`, in the order asked, null where none exists. */
export async function findPaymentsByOrders(db: Queryable, orderIds: readonly string[]): Promise<(Payment | null)[]> {
  if (orderIds.length === 0) return [];
  const { rows } = await db.query<PaymentRow>(`SELECT ${COLUMNS} FROM payments WHERE order_id = ANY($1::uuid[])`, [orderIds]);
  const byOrder = new Map(rows.map((row) => [row.order_id, toPayment(row)]));
  return orderIds.map((id) => byOrder.get(id) ?? null);
}

export async function findPaymentByOrder(db: Queryable, orderId: string): Promise<Payment | undefined> {
  const { rows } = await db.query<PaymentRow>(`SELECT ${COLUMNS} FROM payments WHERE order_id = $1`, [orderId]);
  return rows[0] && toPayment(rows[0]);
}

/**
 * Records a new payment. It goes in at COMMIT, in one statement with the
 * other payments of the transaction (nothing in the transaction reads it
 * back); a second payment for the order (order_id is unique) then fails the
 * commit, and the whole transaction rolls back.
 * `refundReference` only for a payment recorded as REFUNDED straight away (a
 * recovered orphaned charge).
 */
export function insertPayment(
  tx: Transaction,
  payment: Pick<Payment, 'id' | 'orderId' | 'customerId' | 'amount' | 'status' | 'declineReason' | 'providerReference'> & {
    refundReference?: string | null;
  },
): void {
  const row = [
    payment.id,
    payment.orderId,
    payment.customerId,
    String(payment.amount.amount),
    payment.amount.currency,
    payment.status,
    payment.declineReason,
    payment.providerReference,
    payment.refundReference ?? null,
  ];
  const pending = paymentInserts.get(tx);
  if (pending) {
    for (const [i, column] of pending.values.entries()) column.push(row[i] ?? null);
    return;
  }
  const insert = { text: PAYMENT_INSERT, values: row.map((value) => [value]) };
  paymentInserts.set(tx, insert);
  tx.sendWithCommit(insert);
}

const PAYMENT_INSERT = `INSERT INTO payments (id, order_id, customer_id, amount, currency, status, decline_reason, provider_reference, refund_reference)
  SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])`;

/** The payments insert a Transaction sends at COMMIT, while more rows may join it. */
const paymentInserts = new WeakMap<Transaction, { text: string; values: (string | null)[][] }>();

/** CAPTURED -> REFUNDED; undefined when the payment is not (or no longer) captured. */
export async function markRefunded(db: Queryable, id: string, refundReference: string): Promise<Payment | undefined> {
  const { rows } = await db.query<PaymentRow>(
    `UPDATE payments SET status = 'REFUNDED', refund_reference = $2, updated_at = now()
      WHERE id = $1 AND status = 'CAPTURED' RETURNING ${COLUMNS}`,
    [id, refundReference],
  );
  return rows[0] && toPayment(rows[0]);
}

/** Records that an order was cancelled before any payment; a repeat is ignored. */
export async function insertCancellation(db: Queryable, orderId: string, reasonCode: CancelReason): Promise<void> {
  await db.query('INSERT INTO cancelled_orders (order_id, reason_code) VALUES ($1, $2) ON CONFLICT DO NOTHING', [orderId, reasonCode]);
}
