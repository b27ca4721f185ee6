// The deadline sweeper: an order that heard nothing from the saga by its
// deadline is cancelled (DEADLINE_EXCEEDED), which releases its stock and
// refunds a payment captured too late. Every instance sweeps; FOR UPDATE SKIP
// LOCKED hands each overdue order to exactly one of them.
import { withTransaction, type BackgroundTask, type Logger, type Pool } from '../kit/index.ts';
import { cancelPending, type SagaObserver } from './events.ts';
import { periodicTask } from './periodic.ts';
import { lockOverdueOrders } from './store.ts';

const BATCH = 100;

export function deadlineSweeper(pool: Pool, log: Logger, options: { intervalMs: number; saga: SagaObserver }): BackgroundTask {
  const sweepLog = log.child({ component: 'deadline-sweeper' });
  return periodicTask('deadline-sweeper', sweepLog, options.intervalMs, async (stopping) => {
    // Cancels overdue orders a batch per transaction until none is left.
    let cancelled = 0;
    for (;;) {
      const count = await withTransaction(pool, async (tx) => {
        const ids = await lockOverdueOrders(tx, BATCH);
        for (const id of ids) {
          if (
            await cancelPending(tx, { log: sweepLog, saga: options.saga }, id, 'DEADLINE_EXCEEDED', 'the order was not completed in time')
          )
            cancelled++;
        }
        return ids.length;
      });
      if (count < BATCH || stopping()) break;
    }
    if (cancelled > 0) sweepLog.info({ cancelled }, 'overdue orders cancelled');
  });
}
