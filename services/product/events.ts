// Event consumers of the product service: the stock side of the order saga.
// Each handler runs inside the kit's transaction (with the inbox row), so its
// stock change and the event it writes to the outbox commit together or not
// at all; the store makes each step idempotent by order id as well, for the
// same order arriving again under another event id.
import { inventory, orders } from '../../subjects/index.ts';
import { on, writeEvent, type EventHandler } from '../kit/index.ts';
import { commitStock, releaseStock, reserveStock } from './store.ts';

export function productConsumers(): EventHandler[] {
  return [
    // Reserve every line or none; the payment request rides on to the payment step.
    on(orders.placed, 'reserve-stock', async ({ data }, tx, { log }) => {
      const { orderId, customerId } = data;
      const result = await reserveStock(tx, orderId, data.lines);
      switch (result.outcome) {
        case 'reserved':
          await writeEvent(tx, inventory.reserved, { orderId, customerId, lines: result.lines, payment: data.payment });
          log.info({ orderId }, 'stock reserved');
          return;
        case 'rejected':
          await writeEvent(tx, inventory.rejected, {
            orderId,
            customerId,
            reason: result.reason,
            shortages: result.shortages,
          });
          log.info({ orderId, reason: result.reason }, 'stock reservation rejected');
          return;
        case 'duplicate':
          // Its outcome was written when it was first handled.
          log.info({ orderId, status: result.status }, 'order already handled; nothing reserved');
          return;
      }
    }),

    // A cancelled order gives back what it holds, even after confirmation.
    on(orders.cancelled, 'release-stock', async ({ data }, tx, { log }) => {
      const { orderId, customerId } = data;
      const result = await releaseStock(tx, orderId);
      switch (result.outcome) {
        case 'released':
          await writeEvent(tx, inventory.released, { orderId, customerId, lines: result.lines });
          log.info({ orderId }, 'stock released');
          return;
        case 'tombstoned':
          log.info({ orderId }, 'order cancelled before it was placed here; a late placed event will be rejected');
          return;
        case 'nothing-held':
          log.debug({ orderId, status: result.status }, 'cancelled order holds no stock');
          return;
      }
    }),

    // A confirmed order's units leave the stock for good.
    on(orders.confirmed, 'commit-stock', async ({ data }, tx, { log }) => {
      const result = await commitStock(tx, data.orderId);
      if (result.outcome === 'committed') log.info({ orderId: data.orderId }, 'stock committed');
      // Only an order whose stock we reserved can be confirmed; anything else is a repeat or a saga bug.
      else if (result.status !== 'COMMITTED') {
        log.warn({ orderId: data.orderId, status: result.status }, 'confirmed order holds no reservation');
      }
    }),
  ];
}
