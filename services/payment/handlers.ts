// Request-reply endpoints of the payment service.
import { payments } from '../../subjects/index.ts';
import { ServiceError, endpoint, preparedQueries, type Pool } from '../kit/index.ts';
import { findPaymentByOrder, findPaymentsByOrders } from './store.ts';

export function paymentEndpoints(pool: Pool) {
  // Queries outside a transaction, each statement prepared once per connection.
  const db = preparedQueries(pool);
  return [
    endpoint(payments.getByOrder, async ({ orderId }) => {
      const payment = await findPaymentByOrder(db, orderId);
      if (!payment) throw new ServiceError('PAYMENT_NOT_FOUND', `no payment for order ${orderId}`);
      return payment;
    }),

    endpoint(payments.getByOrders, async ({ orderIds }) => ({ payments: await findPaymentsByOrders(db, orderIds) })),
  ];
}
