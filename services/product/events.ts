// Event consumers of the product service: the stock side of the order saga.
// Each handler runs inside the kit's transaction (with the inbox rows), so its
// stock change and the events it writes to the outbox commit together or not
// at all; the store makes each step idempotent by order id as well, for the
// same order arriving again under another event id.
//
// Placed and confirmed orders come in batches (the kit's onBatch): the store
// reserves or commits a whole batch in a few set-based statements, locking
// the products of all its orders at once in id order, as a single order
// does, so concurrent batches queue on shared products without deadlocking.
import { context } from '@opentelemetry/api';
import { inventory, orders, products } from '../../subjects/index.ts';
import { on, onBatch, writeEvent, writeEvents, writeStates, type EventHandler, type EventToWrite } from '../kit/index.ts';
import { commitStockForOrders, releaseStock, reserveStockForOrders } from './store.ts';

/** Orders per transaction: the statements of a batch cost about what one order's did. */
const BATCH = 32;

export function productConsumers(): EventHandler[] {
  return [
    // Reserve every line or none; the payment request rides on to the payment step.
    onBatch(
      orders.placed,
      'reserve-stock',
      async (placed, tx, log) => {
        const { results, changed } = await reserveStockForOrders(
          tx,
          placed.map(({ event }) => ({ orderId: event.data.orderId, lines: event.data.lines })),
        );
        const outcomes: EventToWrite[] = [];
        placed.forEach(({ event: { data }, trace }, index) => {
          const { orderId, customerId } = data;
          const result = results[index]!;
          // Logged inside the event's span, so each line carries its trace id.
          context.with(trace, () => {
            switch (result.outcome) {
              case 'reserved':
                outcomes.push({
                  contract: inventory.reserved,
                  data: { orderId, customerId, lines: result.lines, payment: data.payment },
                  trace,
                });
                log.info({ orderId }, 'stock reserved');
                return;
              case 'rejected':
                outcomes.push({
                  contract: inventory.rejected,
                  data: { orderId, customerId, reason: result.reason, shortages: result.shortages },
                  trace,
                });
                log.info({ orderId, reason: result.reason }, 'stock reservation rejected');
                return;
              case 'duplicate':
                // Its outcome was written when it was first handled.
                log.info({ orderId, status: result.status }, 'order already handled; nothing reserved');
                return;
            }
          });
        });
        await writeEvents(tx, outcomes);
        await writeStates(tx, products.catalog, changed);
      },
      { batch: BATCH },
    ),

    // A cancelled order gives back what it holds, even after confirmation.
    // Rare beside placed and confirmed: one per transaction.
    on(orders.cancelled, 'release-stock', async ({ data }, tx, { log }) => {
      const { orderId, customerId } = data;
      const result = await releaseStock(tx, orderId);
      switch (result.outcome) {
        case 'released':
          await writeEvent(tx, inventory.released, { orderId, customerId, lines: result.lines });
          await writeStates(tx, products.catalog, result.changed);
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
    onBatch(
      orders.confirmed,
      'commit-stock',
      async (confirmed, tx, log) => {
        const results = await commitStockForOrders(
          tx,
          confirmed.map(({ event }) => event.data.orderId),
        );
        confirmed.forEach(({ event: { data }, trace }, index) => {
          const result = results[index]!;
          context.with(trace, () => {
            if (result.outcome === 'committed') log.info({ orderId: data.orderId }, 'stock committed');
            // Only an order whose stock we reserved can be confirmed; anything else is a repeat or a saga bug.
            else if (result.status !== 'COMMITTED') {
              log.warn({ orderId: data.orderId, status: result.status }, 'confirmed order holds no reservation');
            }
          });
        });
      },
      { batch: BATCH },
    ),
  ];
}
