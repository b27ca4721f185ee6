// The inbox: a consumer records the id of each event it applies in the same
// transaction as the event's effect, so a redelivered event finds its id and
// is acknowledged without effect. The inbox rows ride with BEGIN.
import pg from 'pg';
import { withTransaction, type Pool, type Transaction } from '../db.ts';

const { escapeLiteral } = pg;

/**
 * In one transaction: records the events of `deliveries` in the inbox of
 * `consumer` and calls `apply` with those new to it (the first of each id
 * among `deliveries`, in their order); commits both or neither. Returns the
 * deliveries applied; the rest were repeats. Throws what the transaction
 * throws (the database away, `apply` failing), having changed nothing.
 */
export function applyOnce<T extends { event: { id: string } }>(
  pool: Pool,
  consumer: string,
  deliveries: readonly T[],
  apply: (fresh: T[], tx: Transaction) => Promise<void>,
): Promise<Set<T>> {
  return withTransaction(pool, async (tx) => {
    // With BEGIN in one round trip: one fewer per transaction.
    const inserted = await tx.beginWith(
      inboxInsert(
        consumer,
        deliveries.map(({ event }) => event.id),
      ),
    );
    const fresh = new Set(inserted.rows.map((row: { event_id: string }) => row.event_id));
    const todo = deliveries.filter(({ event }) => fresh.delete(event.id));
    if (todo.length > 0) await apply(todo, tx);
    return new Set(todo);
  });
}

/** One statement for all the ids (escaped literals: it travels on the simple protocol with BEGIN). */
function inboxInsert(consumer: string, eventIds: readonly string[]): string {
  const rows = eventIds.map((id) => `(${escapeLiteral(consumer)}, ${escapeLiteral(id)})`);
  return `INSERT INTO inbox (consumer, event_id) VALUES ${rows.join(', ')} ON CONFLICT DO NOTHING RETURNING event_id`;
}
