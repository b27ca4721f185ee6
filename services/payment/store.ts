// All SQL of the payment service (the simulator's own tables are its business: simulator.ts).
import type { CancelReason, Payment } from '../../subjects/index.ts';
import type { Queryable } from '../kit/index.ts';

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
 * the transaction. The reservation and the cancellation of an order arrive on
 * different consumers, possibly at the same moment; without this, each could
 * miss the other's uncommitted row (a charge nobody refunds).
 */
export async function lockOrder(tx: Queryable, orderId: string): Promise<void> {
  // The two-key form keeps these locks apart from single-key advisory locks (migrations).
  await tx.query(`SELECT pg_advisory_xact_lock(${ORDER_LOCK_CLASS}, hashtext($1))`, [orderId]);
}

export async function findPaymentByOrder(db: Queryable, orderId: string): Promise<Payment | undefined> {
  const { rows } = await db.query<PaymentRow>(`SELECT ${COLUMNS} FROM payments WHERE order_id = $1`, [orderId]);
  return rows[0] && toPayment(rows[0]);
}

/** `refundReference` only for a payment recorded as REFUNDED straight away (a recovered orphaned charge). */
export async function insertPayment(
  db: Queryable,
  payment: Pick<Payment, 'id' | 'orderId' | 'customerId' | 'amount' | 'status' | 'declineReason' | 'providerReference'> & {
    refundReference?: string | null;
  },
): Promise<Payment> {
  const { rows } = await db.query<PaymentRow>(
    `INSERT INTO payments (id, order_id, customer_id, amount, currency, status, decline_reason, provider_reference, refund_reference)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ${COLUMNS}`,
    [
      payment.id,
      payment.orderId,
      payment.customerId,
      payment.amount.amount,
      payment.amount.currency,
      payment.status,
      payment.declineReason,
      payment.providerReference,
      payment.refundReference ?? null,
    ],
  );
  return toPayment(rows[0]!);
}

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
  await db.query('INSERT INTO cancelled_orders (order_id, reason_code) VALUES ($1, $2) ON CONFLICT DO NOTHING', [
    orderId,
    reasonCode,
  ]);
}

/**
 * What the charge of an order must know, read in one round trip: its payment
 * (if any) and whether it was cancelled before any payment.
 */
export async function chargeState(db: Queryable, orderId: string): Promise<{ payment: Payment | undefined; cancelled: boolean }> {
  const { rows } = await db.query<{ [K in keyof PaymentRow]: PaymentRow[K] | null } & { cancelled: boolean }>(
    `SELECT ${COLUMNS.split(', ').map((column) => `p.${column}`).join(', ')},
            EXISTS (SELECT 1 FROM cancelled_orders WHERE order_id = $1) AS cancelled
       FROM (SELECT 1) AS one LEFT JOIN payments p ON p.order_id = $1`,
    [orderId],
  );
  const row = rows[0]!;
  return { payment: row.id === null ? undefined : toPayment(row as PaymentRow), cancelled: row.cancelled };
}
