// Event consumers of the payment service: a reservation is charged, a
// cancellation refunds what was captured. Both lock the order first, so they
// never interleave for one order, and both are safe to see again: the payment
// row is unique per order, and the provider deduplicates by idempotency key
// (the order id for the charge, `refund:<orderId>` for the refund), so a
// redelivery after a crash between the provider's answer and our commit gets
// the first answer back instead of moving money twice.
import { randomUUID } from 'node:crypto';
import { inventory, orders, payments } from '../../subjects/index.ts';
import { on, writeEvent, type EventHandler } from '../kit/index.ts';
import type { PaymentProvider } from './provider.ts';
import { findPaymentByOrder, insertCancellation, insertPayment, isCancelled, lockOrder, markRefunded } from './store.ts';

export function paymentConsumers(provider: PaymentProvider): EventHandler[] {
  return [
    on(inventory.reserved, 'charge-reserved', async ({ data }, tx, { log }) => {
      const { orderId, customerId, payment: request } = data;
      await lockOrder(tx, orderId);
      if (await findPaymentByOrder(tx, orderId)) {
        log.info({ orderId }, 'order already has a payment; not charging again');
        return;
      }
      if (await isCancelled(tx, orderId)) {
        log.info({ orderId }, 'order was cancelled before its reservation arrived; not charging');
        return;
      }
      // A ProviderUnavailableError propagates: the consumer naks and retries with the same key.
      const outcome = await provider.charge({ idempotencyKey: orderId, token: request.token, amount: request.amount });
      const payment = await insertPayment(tx, {
        id: randomUUID(),
        orderId,
        customerId,
        amount: request.amount,
        status: outcome.status === 'captured' ? 'CAPTURED' : 'DECLINED',
        declineReason: outcome.status === 'declined' ? outcome.reason : null,
        providerReference: outcome.status === 'captured' ? outcome.reference : null,
      });
      const ref = { paymentId: payment.id, orderId, customerId, amount: payment.amount };
      if (outcome.status === 'captured') {
        await writeEvent(tx, payments.captured, ref);
        log.info({ orderId, paymentId: payment.id }, 'payment captured');
      } else {
        await writeEvent(tx, payments.declined, { ...ref, reason: outcome.reason });
        log.info({ orderId, paymentId: payment.id, reason: outcome.reason }, 'payment declined');
      }
    }),

    on(orders.cancelled, 'refund-cancelled', async ({ data }, tx, { log }) => {
      const { orderId, reasonCode } = data;
      await lockOrder(tx, orderId);
      const payment = await findPaymentByOrder(tx, orderId);
      if (!payment) {
        // The reservation may still be on its way (or this service was down past the deadline).
        await insertCancellation(tx, orderId, reasonCode);
        log.info({ orderId, reasonCode }, 'order cancelled before any payment; it will not be charged');
        return;
      }
      if (payment.status !== 'CAPTURED') {
        log.info({ orderId, status: payment.status }, 'nothing captured to refund');
        return;
      }
      const refund = await provider.refund({
        idempotencyKey: `refund:${orderId}`,
        chargeReference: payment.providerReference!,
        amount: payment.amount,
      });
      const refunded = await markRefunded(tx, payment.id, refund.reference);
      if (!refunded) throw new Error(`payment ${payment.id} changed while the order was locked`);
      await writeEvent(tx, payments.refunded, {
        paymentId: refunded.id,
        orderId,
        customerId: refunded.customerId,
        amount: refunded.amount,
      });
      log.info({ orderId, paymentId: refunded.id }, 'payment refunded');
    }),
  ];
}
