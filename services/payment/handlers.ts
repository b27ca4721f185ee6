// Request-reply endpoints of the payment service.
import { payments } from '../../subjects/index.ts';
import { ServiceError, endpoint, type Pool } from '../kit/index.ts';
import { findPaymentByOrder } from './store.ts';

export function paymentEndpoints(pool: Pool) {
  return [
    endpoint(payments.getByOrder, async ({ orderId }) => {
      const payment = await findPaymentByOrder(pool, orderId);
      if (!payment) throw new ServiceError('PAYMENT_NOT_FOUND', `no payment for order ${orderId}`);
      return payment;
    }),
  ];
}
