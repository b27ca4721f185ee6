// Request-reply endpoints of the shipping service.
import { randomUUID } from 'node:crypto';
import { shipments } from '../../subjects/index.ts';
import { ServiceError, endpoint, preparedQueries, withTransaction, type Pool } from '../kit/index.ts';
import { CARRIER } from './carrier.ts';
import { findByOrders, hold, insertTombstone, lockByOrder } from './store.ts';

export function shippingEndpoints(pool: Pool, options: { holdMs: number }) {
  // Queries outside a transaction, each statement prepared once per connection.
  const db = preparedQueries(pool);
  return [
    endpoint(shipments.getByOrders, async ({ orderIds }) => ({ shipments: await findByOrders(db, orderIds) })),

    // The one place that decides whether an order may still be cancelled: under the shipment's
    // row lock, which the carrier's SHIPPED step also takes (store.ts: advance).
    endpoint(shipments.hold, ({ orderId, customerId }) =>
      withTransaction(pool, async (tx) => {
        const created = await insertTombstone(tx, { id: randomUUID(), orderId, customerId, carrier: CARRIER, holdMs: options.holdMs });
        if (created) return { status: 'HELD' as const };
        const row = (await lockByOrder(tx, orderId))!;
        if (row.customer_id !== customerId) throw new ServiceError('ORDER_NOT_FOUND', `no order ${orderId}`);
        switch (row.status) {
          case 'SHIPPED':
          case 'DELIVERED':
            throw new ServiceError(
              'ORDER_NOT_CANCELLABLE',
              `order ${orderId} has already shipped (${row.carrier} tracking number ${row.tracking_number}); it can no longer be cancelled`,
              { shipmentStatus: row.status, trackingNumber: row.tracking_number },
            );
          case 'CANCELLED':
            if (!row.held_at) return { status: 'CANCELLED' as const };
            await hold(tx, row.id, options.holdMs);
            return { status: 'HELD' as const };
          case 'LABEL_CREATED':
            await hold(tx, row.id, options.holdMs);
            return { status: 'HELD' as const };
        }
      }),
    ),
  ];
}
