// Event consumers of the order service: the saga's outcomes move a PENDING
// order to CONFIRMED or CANCELLED. Every move is guarded by the status in SQL,
// so a late or repeated event after a final state changes nothing; e.g. a
// capture arriving after the deadline cancelled the order leaves it CANCELLED
// (the payment service refunds, since it hears the cancellation too).
import { inventory, orders, payments, type CancelReason } from '../../subjects/index.ts';
import { on, writeEvent, type EventContext, type EventHandler, type Tx } from '../kit/index.ts';
import { transition } from './store.ts';

export function orderConsumers(): EventHandler[] {
  return [
    on(inventory.rejected, 'inventory-rejected', async ({ data }, tx, context) => {
      await cancelPending(tx, context, data.orderId, 'OUT_OF_STOCK', data.reason);
    }),

    on(payments.declined, 'payments-declined', async ({ data }, tx, context) => {
      await cancelPending(tx, context, data.orderId, 'PAYMENT_DECLINED', data.reason);
    }),

    on(payments.captured, 'payments-captured', async ({ data }, tx, context) => {
      const moved = await transition(tx, { id: data.orderId, from: ['PENDING'], to: 'CONFIRMED', reason: 'payment captured' });
      if (!moved) {
        context.log.info({ orderId: data.orderId }, 'capture for an order no longer pending; nothing to do');
        return;
      }
      await writeEvent(tx, orders.confirmed, { orderId: moved.id, customerId: moved.customerId, total: moved.total });
    }),
  ];
}

/** Cancels a PENDING order and emits orders.events.cancelled; any other state is left alone. */
export async function cancelPending(
  tx: Tx,
  context: Pick<EventContext, 'log'>,
  orderId: string,
  reasonCode: CancelReason,
  reason: string,
): Promise<boolean> {
  const moved = await transition(tx, { id: orderId, from: ['PENDING'], to: 'CANCELLED', cancelReason: reasonCode, reason });
  if (!moved) {
    context.log.info({ orderId, reasonCode }, 'order no longer pending; cancellation skipped');
    return false;
  }
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
