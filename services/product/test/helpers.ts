// Test helpers of the product service; the generic ones live in test/messaging.ts.
import { randomUUID } from 'node:crypto';
import type { orders, DataOf } from '../../../subjects/index.ts';
import type { Queryable } from '../../kit/index.ts';
import { tableFingerprint as fingerprint } from '../../../test/messaging.ts';

export {
  rawRequest,
  typedClient,
  withCode,
  publishEvent,
  consumedUpTo,
  countBySubject,
  readEvents,
  eventsOf,
} from '../../../test/messaging.ts';

/** The stock columns of one product, straight from the table. */
export async function stockOf(db: Queryable, productId: string): Promise<{ onHand: number; reserved: number; available: number }> {
  const { rows } = await db.query<{ on_hand: number; reserved: number }>('SELECT on_hand, reserved FROM products WHERE id = $1', [
    productId,
  ]);
  const row = rows[0];
  if (!row) throw new Error(`no product ${productId} in the table`);
  return { onHand: row.on_hand, reserved: row.reserved, available: row.on_hand - row.reserved };
}

/** A fingerprint of one of this service's tables. */
export function tableFingerprint(db: Queryable, table: 'products' | 'reservations' | 'stock_orders'): Promise<string> {
  return fingerprint(db, table);
}

/** The data of an `orders.events.placed` for the given lines. */
export function placedData(
  lines: { productId: string; quantity: number }[],
  overrides: Partial<DataOf<typeof orders.placed>> = {},
): DataOf<typeof orders.placed> {
  return {
    orderId: randomUUID(),
    customerId: randomUUID(),
    lines,
    payment: { token: 'tok_visa', amount: { amount: 1999, currency: 'EUR' } },
    deadlineAt: new Date(Date.now() + 60_000).toISOString(),
    ...overrides,
  };
}

export function cancelledData(
  order: { orderId: string; customerId: string },
  previousStatus: 'PENDING' | 'CONFIRMED' = 'PENDING',
): DataOf<typeof orders.cancelled> {
  return {
    orderId: order.orderId,
    customerId: order.customerId,
    reasonCode: previousStatus === 'CONFIRMED' ? 'CUSTOMER_CANCELLED' : 'DEADLINE_EXCEEDED',
    reason: 'test cancellation',
    previousStatus,
    total: { amount: 1999, currency: 'EUR' },
  };
}
