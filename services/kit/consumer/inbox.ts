// The inbox: a consumer records the id of each event it applies in the same
// transaction as the event's effect, so a redelivered event finds its id and
// is acknowledged without effect.
import { withTransaction, type Pool, type Statement, type Transaction } from '../db.ts';

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
    const insert = inboxInsert(
      consumer,
      deliveries.map(({ event }) => event.id),
    );
    const inserted = await tx.query<{ event_id: string }>(insert.text, insert.values);
    const fresh = new Set(inserted.rows.map((row) => row.event_id));
    const todo = deliveries.filter(({ event }) => fresh.delete(event.id));
    if (todo.length > 0) await apply(todo, tx);
    return new Set(todo);
  });
}

/** One statement for all the ids, of one text whatever their number (prepared once per connection). */
function inboxInsert(consumer: string, eventIds: readonly string[]): Statement {
  return {
    text: 'INSERT INTO inbox (consumer, event_id) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING RETURNING event_id',
    values: [consumer, eventIds],
  };
}
