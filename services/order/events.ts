// Event consumers of the order service: the saga's outcomes move a PENDING
// order to CONFIRMED or CANCELLED. Every move is guarded by the status in SQL,
// so a late or repeated event after a final state changes nothing; e.g. a
// capture arriving after the deadline cancelled the order leaves it CANCELLED
// (the payment service refunds, since it hears the cancellation too).
import { inventory, orders, payments, type CancelReason } from '../../subjects/index.ts';
import { context as traceContext } from '@opentelemetry/api';
import {
  on,
  onBatch,
  writeEvent,
  writeEvents,
  type EventContext,
  type EventHandler,
  type EventToWrite,
  type ProcessMetrics,
  type Transaction,
} from '../kit/index.ts';
import { transition, transitionMany } from './store.ts';

// Several events per transaction (the kit's consumer runner): each moves its
// own orders, so batches seldom wait on each other. Cancellations are taken
// one after another in a batch; captures, the common case, all at once.
const BATCH = 8;
const CAPTURE_BATCH = 32;

/** Told when the saga ends an order: how, and how long after it was placed. */
export type SagaObserver = (outcome: 'CONFIRMED' | 'CANCELLED', seconds: number) => void;

// From a fraction of a second (the usual case) to the order deadline (minutes).
const SAGA_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/**
 * shop_saga_duration_seconds{outcome}: placed to CONFIRMED or CANCELLED by
 * the saga (a customer's own cancellation is not counted). Observed inside the
 * transaction that ends the order, so a transaction retried after a rollback
 * counts twice: rare, and only ever on the slow side.
 */
export function sagaObserver(metrics: ProcessMetrics): SagaObserver {
  const histogram = metrics.histogram(
    'shop_saga_duration_seconds',
    'Time from placing an order to the saga confirming or cancelling it.',
    ['outcome'],
    SAGA_BUCKETS,
  );
  return (outcome, seconds) => histogram.observe({ outcome }, seconds);
}

export function orderConsumers(saga: SagaObserver): EventHandler[] {
  return [
    on(
      inventory.rejected,
      'inventory-rejected',
      async ({ data }, tx, { log }) => {
        await cancelPending(tx, { log, saga }, data.orderId, 'OUT_OF_STOCK', data.reason);
      },
      { batch: BATCH },
    ),

    on(
      payments.declined,
      'payments-declined',
      async ({ data }, tx, { log }) => {
        await cancelPending(tx, { log, saga }, data.orderId, 'PAYMENT_DECLINED', data.reason);
      },
      { batch: BATCH },
    ),

    // The saga's usual end: a batch of captures confirms its orders in one statement.
    onBatch(
      payments.captured,
      'payments-captured',
      async (captured, tx, log) => {
        const ids = captured.map(({ event }) => event.data.orderId);
        const moved = await transitionMany(tx, { ids, from: ['PENDING'], to: 'CONFIRMED', reason: 'payment captured' });
        const confirmations: EventToWrite[] = [];
        for (const { event, trace } of captured) {
          const order = moved.get(event.data.orderId);
          // Taken once: the same order captured twice in a batch is confirmed once.
          moved.delete(event.data.orderId);
          if (order) {
            saga('CONFIRMED', order.ageSeconds);
            confirmations.push({
              contract: orders.confirmed,
              data: { orderId: order.id, customerId: order.customerId, total: order.total },
              trace,
            });
          } else {
            traceContext.with(trace, () =>
              log.info({ orderId: event.data.orderId }, 'capture for an order no longer pending; nothing to do'),
            );
          }
        }
        await writeEvents(tx, confirmations);
      },
      { batch: CAPTURE_BATCH },
    ),
  ];
}

/** Cancels a PENDING order and emits orders.events.cancelled; any other state is left alone. */
export async function cancelPending(
  tx: Transaction,
  context: Pick<EventContext, 'log'> & { saga: SagaObserver },
  orderId: string,
  reasonCode: CancelReason,
  reason: string,
): Promise<boolean> {
  const moved = await transition(tx, { id: orderId, from: ['PENDING'], to: 'CANCELLED', cancelReason: reasonCode, reason });
  if (!moved) {
    context.log.info({ orderId, reasonCode }, 'order no longer pending; cancellation skipped');
    return false;
  }
  context.saga('CANCELLED', moved.ageSeconds);
  await writeEvent(tx, orders.cancelled, {
    orderId,
    customerId: moved.customerId,
    reasonCode,
    reason,
    previousStatus: moved.previousStatus,
    total: moved.total,
  });
  return true;
}
