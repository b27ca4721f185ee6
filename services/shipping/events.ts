// Event consumers of the shipping service: a confirmed order gets its
// shipment; a cancelled order's shipment is cancelled (it cannot have
// shipped: the order service held it first, see handlers.ts). Both are safe
// to see again: order_id is unique, and a cancelled shipment stays cancelled.
import { randomUUID } from 'node:crypto';
import { orders, shipments } from '../../subjects/index.ts';
import { on, writeEvent, type EventHandler, type Logger, type Transaction } from '../kit/index.ts';
import { CARRIER } from './carrier.ts';
import { cancel, insertShipment, insertTombstone, isTombstone, lockByOrder, type ShipmentRow } from './store.ts';

export interface ShippingOptions {
  /** Read when a shipment is created: how long its label waits for the carrier. */
  readonly shipAfterMs: number;
  /** Wakes this process's carrier once a new shipment commits. */
  readonly wake: () => void;
}

/** Confirmations applied in one transaction: BEGIN, the inbox and COMMIT paid once for all. */
const BATCH = 32;

export function shippingConsumers(options: ShippingOptions): EventHandler[] {
  return [
    on(
      orders.confirmed,
      'create-shipment',
      async ({ data }, tx, { log }) => {
        const row = await insertShipment(tx, {
          id: randomUUID(),
          orderId: data.orderId,
          customerId: data.customerId,
          carrier: CARRIER,
          shipAfterMs: options.shipAfterMs,
        });
        if (!row) {
          log.info({ orderId: data.orderId }, 'order has a shipment (or was cancelled) already; none created');
          return;
        }
        await writeEvent(tx, shipments.created, shipmentRef(row));
        tx.afterCommit(options.wake);
        log.info({ orderId: data.orderId, shipmentId: row.id }, 'shipment created');
      },
      { batch: BATCH },
    ),

    on(orders.cancelled, 'cancel-shipment', async ({ data }, tx, { log }) => {
      const row = await lockByOrder(tx, data.orderId);
      if (!row) {
        // Cancelled before any shipment (the saga's cancellations all are): a confirmation arriving
        // late, from another consumer of the stream, must not create one.
        await insertTombstone(tx, { id: randomUUID(), orderId: data.orderId, customerId: data.customerId, carrier: CARRIER, holdMs: null });
        return;
      }
      await settleCancellation(tx, row, log);
    }),
  ];
}

/** The fields every shipments event carries. */
export function shipmentRef(row: ShipmentRow) {
  return { shipmentId: row.id, orderId: row.order_id, customerId: row.customer_id, carrier: row.carrier };
}

/**
 * The order of `row` (locked) is cancelled: the shipment is cancelled for
 * good (and its hold ended). A shipment that has shipped cannot be; with the
 * hold protocol that never happens, so it is logged as the error it is
 * (npm run reconcile reports it too).
 */
export async function settleCancellation(tx: Transaction, row: ShipmentRow, log: Logger): Promise<void> {
  switch (row.status) {
    case 'LABEL_CREATED': {
      const cancelled = await cancel(tx, row, 'the order was cancelled');
      await writeEvent(tx, shipments.cancelled, shipmentRef(cancelled));
      log.info({ orderId: row.order_id, shipmentId: row.id }, 'shipment cancelled');
      return;
    }
    case 'CANCELLED':
      if (row.held_at) await cancel(tx, row, 'the order was cancelled');
      return;
    case 'SHIPPED':
    case 'DELIVERED':
      log.error(
        { orderId: row.order_id, shipmentId: row.id, status: row.status, tombstone: isTombstone(row) },
        'order cancelled after its shipment shipped: the cancellation skipped shipments.hold',
      );
      return;
  }
}
