// The retention of orders.place's idempotency keys: every instance prunes the
// keys older than ORDER_IDEMPOTENCY_KEY_HOURS; a key is kept at least that long.
import type { BackgroundTask, Logger, Pool } from '../kit/index.ts';
import { periodicTask } from './periodic.ts';
import { pruneIdempotencyKeys } from './store.ts';

const BATCH = 1000;

/** How often each instance forgets idempotency keys past their retention. */
const KEY_PRUNE_INTERVAL_MS = 60_000;

/**
 * Forgets orders.place's idempotency keys older than `hours` (a key is kept
 * at least that long), a batch per statement, so order_requests stays bounded.
 */
export function idempotencyKeyPruner(pool: Pool, log: Logger, options: { hours: number; intervalMs?: number }): BackgroundTask {
  const pruneLog = log.child({ component: 'idempotency-key-pruner' });
  return periodicTask('idempotency-key-pruner', pruneLog, options.intervalMs ?? KEY_PRUNE_INTERVAL_MS, async (stopping) => {
    let pruned = 0;
    for (;;) {
      const count = await pruneIdempotencyKeys(pool, options.hours, BATCH);
      pruned += count;
      if (count < BATCH || stopping()) break;
    }
    if (pruned > 0) pruneLog.info({ pruned }, 'idempotency keys past their retention forgotten');
  });
}
