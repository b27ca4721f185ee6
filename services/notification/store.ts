// All SQL of the notification service.
import type { Notification } from '../../subjects/index.ts';
import { ServiceError, type Queryable, type Transaction } from '../kit/index.ts';

export type NotificationStatus = Notification['status'];

interface NotificationRow {
  id: string;
  event_id: string;
  event_type: string;
  customer_id: string;
  order_id: string | null;
  email: string;
  subject: string;
  body: string;
  status: NotificationStatus;
  attempts: number;
  last_error: string | null;
  sent_at: Date | null;
  created_at: Date;
  /** created_at in microseconds since the epoch, as text: the exact keyset position. */
  created_us: string;
}

const COLUMNS = `id, event_id, event_type, customer_id, order_id, email, subject, body, status, attempts, last_error,
  sent_at, created_at, (extract(epoch FROM created_at) * 1000000)::bigint::text AS created_us`;

function toNotification(row: NotificationRow): Notification {
  return {
    id: row.id,
    customerId: row.customer_id,
    orderId: row.order_id,
    eventType: row.event_type,
    email: row.email,
    subject: row.subject,
    status: row.status,
    attempts: row.attempts,
    lastError: row.last_error,
    sentAt: row.sent_at ? row.sent_at.toISOString() : null,
    createdAt: row.created_at.toISOString(),
  };
}

export interface NewNotification {
  id: string;
  eventId: string;
  eventType: string;
  customerId: string;
  orderId: string | null;
  email: string;
  subject: string;
  body: string;
  /** PENDING to be sent; FAILED when it can never be sent (with `error`). */
  status: 'PENDING' | 'FAILED';
  error?: string;
  /** Trace context of the event, for the sender's span (kit: currentTraceCarrier). */
  trace?: Record<string, string>;
}

/**
 * Stores a notification unless one exists for the same event, at the end of
 * the transaction (nothing in it reads the row back).
 */
export function insertNotification(tx: Transaction, n: NewNotification): void {
  tx.sendWithCommit({
    text: `INSERT INTO notifications (id, event_id, event_type, customer_id, order_id, email, subject, body, status, last_error, trace)
      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (event_id) DO NOTHING`,
    values: [
      n.id,
      n.eventId,
      n.eventType,
      n.customerId,
      n.orderId,
      n.email,
      n.subject,
      n.body,
      n.status,
      n.error ?? null,
      JSON.stringify(n.trace ?? {}),
    ],
  });
}

/** Wakes every sender (of every instance) listening on `channel`, once the caller's transaction commits. */
export async function notifySenders(db: Queryable, channel: string): Promise<void> {
  await db.query('SELECT pg_notify($1, $2)', [channel, '']);
}

// --- Paging ------------------------------------------------------------------

/** Opaque keyset cursor: the (created_at, id) of the last item of a page. */
function encodeCursor(row: NotificationRow): string {
  return Buffer.from(`${row.created_us}:${row.id}`).toString('base64url');
}

const CURSOR = /^(\d{1,20}):([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/i;

function decodeCursor(cursor: string): { createdUs: string; id: string } {
  const match = CURSOR.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  if (!match) throw new ServiceError('VALIDATION_FAILED', 'after is not a cursor this service gave out');
  return { createdUs: match[1]!, id: match[2]! };
}

/** A customer's notifications, newest first; `after` is the previous page's `nextCursor`. */
export async function listByCustomer(
  db: Queryable,
  customerId: string,
  first: number,
  after?: string,
): Promise<{ items: Notification[]; nextCursor: string | null }> {
  const params: unknown[] = [customerId, first + 1];
  let keyset = '';
  if (after !== undefined) {
    const { createdUs, id } = decodeCursor(after);
    params.push(createdUs, id);
    keyset = `AND (created_at, id) < ('epoch'::timestamptz + $3::bigint * interval '1 microsecond', $4::uuid)`;
  }
  // One row more than asked tells whether another page follows.
  const { rows } = await db.query<NotificationRow>(
    `SELECT ${COLUMNS} FROM notifications WHERE customer_id = $1 ${keyset}
     ORDER BY created_at DESC, id DESC LIMIT $2`,
    params,
  );
  const page = rows.slice(0, first);
  const last = page.at(-1);
  return { items: page.map(toNotification), nextCursor: rows.length > first && last ? encodeCursor(last) : null };
}

/**
 * The notifications of one order, newest first, if the order is `customerId`'s:
 * another customer's id finds none. An order has one per event about it, so
 * there is no paging.
 */
export async function listByOrder(db: Queryable, orderId: string, customerId: string): Promise<Notification[]> {
  const { rows } = await db.query<NotificationRow>(
    `SELECT ${COLUMNS} FROM notifications WHERE order_id = $1 AND customer_id = $2 ORDER BY created_at DESC, id DESC`,
    [orderId, customerId],
  );
  return rows.map(toNotification);
}

/** listByOrder for several orders in one statement: one list per order, in the order asked. */
export async function listByOrders(db: Queryable, orders: readonly { orderId: string; customerId: string }[]): Promise<Notification[][]> {
  if (orders.length === 0) return [];
  const { rows } = await db.query<NotificationRow>(
    `SELECT ${COLUMNS} FROM notifications
      WHERE (order_id, customer_id) IN (SELECT * FROM unnest($1::uuid[], $2::uuid[]))
      ORDER BY created_at DESC, id DESC`,
    [orders.map((order) => order.orderId), orders.map((order) => order.customerId)],
  );
  const byOrder = new Map<string, Notification[]>();
  for (const row of rows) {
    const key = `${row.order_id} ${row.customer_id}`;
    if (!byOrder.has(key)) byOrder.set(key, []);
    byOrder.get(key)!.push(toNotification(row));
  }
  return orders.map((order) => byOrder.get(`${order.orderId} ${order.customerId}`) ?? []);
}

// --- The sender's queue ------------------------------------------------------

export interface DueNotification {
  id: string;
  email: string;
  subject: string;
  body: string;
  /** Attempts made before this one. */
  attempts: number;
  /** Trace context of the event that asked for it. */
  trace: Record<string, string>;
}

/** What a claim took, and when the sender should look again. */
export interface Claim {
  rows: DueNotification[];
  /**
   * When the earliest PENDING notification not yet due falls due (a retry's
   * back-off, another sender's lease), as the claim saw it; undefined if none.
   */
  nextDueAt: Date | undefined;
}

/**
 * Claims up to `limit` due PENDING notifications (DueNotification rows) by
 * leasing them: their next attempt moves `leaseMs` ahead, in a statement that
 * commits on its own, so the emails are sent outside any transaction. SKIP
 * LOCKED: senders of several instances share the queue, never the same row. A
 * sender that dies mid-send leaves its rows PENDING; they are due again when
 * the lease runs out.
 *
 * The same statement reads when the next notification falls due, so the
 * sender can sleep until then without asking again, and may record the email
 * `sentId` SENT (as markSent does): the sender passes the email whose
 * acceptance it learnt of this instant, when it claims at that instant anyway.
 */
export async function claimDue(db: Queryable, leaseMs: number, limit: number, sentId?: string): Promise<Claim> {
  const { rows } = await db.query<{ [K in keyof DueNotification]: DueNotification[K] | null } & { next_due_at: Date | null }>(
    `WITH claimed AS (
       UPDATE notifications SET next_attempt_at = clock_timestamp() + $1 * interval '1 millisecond'
        WHERE id IN (SELECT id FROM notifications
                      WHERE status = 'PENDING' AND next_attempt_at <= now() AND id <> ALL($3::uuid[])
                      ORDER BY next_attempt_at, created_at
                      LIMIT $2 FOR UPDATE SKIP LOCKED)
        RETURNING id, email, subject, body, attempts, trace
     ), sent AS (
       -- Leased by this sender, so never among the claimed (and kept out of them: one update per row).
       -- Still PENDING: if its lease ran out and another sender sent it first, that record stands.
       UPDATE notifications SET status = 'SENT', attempts = attempts + 1, sent_at = clock_timestamp()
        WHERE id = ANY($3::uuid[]) AND status = 'PENDING'
     ), next AS (
       -- Not due yet, as of this statement's snapshot (the rows claimed or recorded here are not among them).
       -- Due rows that were skipped because they are locked are another sender's, which leases them.
       SELECT min(next_attempt_at) AS next_due_at FROM notifications
        WHERE status = 'PENDING' AND next_attempt_at > now() AND id <> ALL($3::uuid[])
     )
     -- Always one row at least: the claimed columns are null when nothing was due.
     SELECT claimed.*, next.next_due_at FROM next LEFT JOIN claimed ON true`,
    [leaseMs, limit, sentId === undefined ? [] : [sentId]],
  );
  return {
    rows: rows.filter((row) => row.id !== null).map(({ next_due_at: _, ...row }) => row as DueNotification),
    nextDueAt: rows[0]?.next_due_at ?? undefined,
  };
}

/**
 * Records an email the SMTP server accepted, right after it did. Only if still
 * PENDING: one already SENT by another sender, after this one's lease ran out,
 * keeps its first record.
 */
export async function markSent(tx: Queryable, id: string): Promise<void> {
  await tx.query(
    `UPDATE notifications SET status = 'SENT', attempts = attempts + 1, sent_at = clock_timestamp()
      WHERE id = $1 AND status = 'PENDING'`,
    [id],
  );
}

/** Records a failed attempt and when to try again (measured from now, after the attempt). */
export async function markRetry(tx: Queryable, id: string, error: string, delayMs: number): Promise<void> {
  await tx.query(
    `UPDATE notifications
     SET attempts = attempts + 1, last_error = $2, next_attempt_at = clock_timestamp() + $3 * interval '1 millisecond'
     WHERE id = $1`,
    [id, error, delayMs],
  );
}

/** Records a failed attempt after which no other is made. */
export async function markFailed(tx: Queryable, id: string, error: string): Promise<void> {
  await tx.query(`UPDATE notifications SET status = 'FAILED', attempts = attempts + 1, last_error = $2 WHERE id = $1`, [id, error]);
}
