// Event consumers of the payment service: a reservation is charged, a
// cancellation refunds what was captured. Both lock the order first, so they
// never interleave for one order, and both are safe to see again: the payment
// row is unique per order, and the provider deduplicates by idempotency key
// (the order id for the charge, `refund:<orderId>` for the refund), so a
// redelivery after a crash between the provider's answer and our commit gets
// the first answer back instead of moving money twice.
//
// That crash can also leave a charge the provider captured but we never
// recorded; when the order is then cancelled, no payment row says there is
// money to give back. Both consumers therefore ask the provider, by the order
// id, before they settle on "never charged" (refundOrphanedCharge below).
import { randomUUID } from 'node:crypto';
import { inventory, orders, payments } from '../../subjects/index.ts';
import { context } from '@opentelemetry/api';
import { on, onBatch, writeEvent, type EventHandler, type Transaction } from '../kit/index.ts';
import type { PaymentProvider } from './provider.ts';
import { insertCancellation, insertPayment, lockOrder, lockOrders, markRefunded } from './store.ts';

/** Reservations per transaction. */
const BATCH = 32;

export function paymentConsumers(provider: PaymentProvider): EventHandler[] {
  return [
    // Reservations in batches: the orders of a batch locked in one round
    // trip, their charges sent to the provider side by side (each under its
    // own idempotency key), the payments and events written with the COMMIT.
    // If any charge fails, the batch rolls back and each reservation is taken
    // again on its own; charges that went through answer the same the second
    // time (the idempotency key), so nothing is charged twice.
    onBatch(
      inventory.reserved,
      'charge-reserved',
      async (reserved, tx, log) => {
        const locked = await lockOrders(
          tx,
          reserved.map(({ event }) => event.data.orderId),
        );
        const seen = new Set<string>();
        // Settled, not Promise.all: when one charge fails, the others must still
        // finish before the transaction ends, or a late one would write through
        // a connection already rolled back and handed to someone else.
        const charges = await Promise.allSettled(
          reserved.map(({ event: { data }, trace }) =>
            context.with(trace, async () => {
              const { orderId, customerId, payment: request } = data;
              const { payment: existing, cancelled } = locked.get(orderId)!;
              if (existing || seen.has(orderId)) {
                log.info({ orderId }, 'order already has a payment; not charging again');
                return;
              }
              seen.add(orderId);
              if (cancelled) {
                // Not charged now; but an earlier delivery may have been charged by a process that died
                // before committing, after the cancellation had looked (a request still in flight then).
                const recovered = await refundOrphanedCharge(tx, provider, orderId, customerId);
                if (recovered) {
                  log.warn({ orderId, paymentId: recovered }, 'cancelled order had an unrecorded charge; refunded it');
                } else {
                  log.info({ orderId }, 'order was cancelled before its reservation arrived; not charging');
                }
                return;
              }
              // A ProviderUnavailableError propagates: the consumer naks and retries with the same key.
              const outcome = await provider.charge({ idempotencyKey: orderId, token: request.token, amount: request.amount });
              // The payment row and the event both go in at COMMIT (each one insert for the whole batch).
              const paymentId = randomUUID();
              insertPayment(tx, {
                id: paymentId,
                orderId,
                customerId,
                amount: request.amount,
                status: outcome.status === 'captured' ? 'CAPTURED' : 'DECLINED',
                declineReason: outcome.status === 'declined' ? outcome.reason : null,
                providerReference: outcome.status === 'captured' ? outcome.reference : null,
              });
              const ref = { paymentId, orderId, customerId, amount: request.amount };
              if (outcome.status === 'captured') {
                await writeEvent(tx, payments.captured, ref);
                log.info({ orderId, paymentId }, 'payment captured');
              } else {
                await writeEvent(tx, payments.declined, { ...ref, reason: outcome.reason });
                log.info({ orderId, paymentId, reason: outcome.reason }, 'payment declined');
              }
            }),
          ),
        );
        const failed = charges.find((charge) => charge.status === 'rejected');
        if (failed) throw failed.reason;
      },
      { batch: BATCH },
    ),

    on(orders.cancelled, 'refund-cancelled', async ({ data }, tx, { log }) => {
      const { orderId, customerId, reasonCode } = data;
      const { payment } = await lockOrder(tx, orderId);
      if (!payment) {
        // No payment recorded; yet a reservation may have been charged by a process that died
        // before committing. The provider's books settle it.
        const recovered = await refundOrphanedCharge(tx, provider, orderId, customerId);
        if (recovered) {
          log.warn({ orderId, paymentId: recovered }, 'cancelled order had an unrecorded charge; refunded it');
          return;
        }
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

/**
 * For a cancelled order with no payment row, under the order's lock: asks the
 * provider for a charge under the order's key and, if one was captured, gives
 * it back (key `refund:<orderId>`, idempotent like every refund), records the
 * payment as REFUNDED (so payments.getByOrder tells the truth and any later
 * delivery for the order sees it settled) and emits payments.events.refunded.
 * Returns the payment's id; undefined when the provider captured nothing for
 * the order.
 *
 * Why no durable "charge attempted" marker of our own: it would have to be
 * committed before the provider call, in a transaction of its own, and even
 * then it could only say "maybe charged". The provider's books are already
 * that record, and an exact one: durable, outside our transaction (a charge
 * survives our rollback) and keyed by the order id. So the lookup suffices.
 * What neither can see is a request still in flight when the lookup runs
 * (sent by a process that has just died); the reservation path asks again when
 * the reservation is redelivered, which covers a charge landing in between.
 */
async function refundOrphanedCharge(
  tx: Transaction,
  provider: PaymentProvider,
  orderId: string,
  customerId: string,
): Promise<string | undefined> {
  // A ProviderUnavailableError propagates: the consumer naks and asks again later.
  const charge = await provider.findCharge(orderId);
  if (charge?.status !== 'captured') return undefined;
  const refund = await provider.refund({
    idempotencyKey: `refund:${orderId}`,
    chargeReference: charge.reference,
    amount: charge.amount,
  });
  const paymentId = randomUUID();
  insertPayment(tx, {
    id: paymentId,
    orderId,
    customerId,
    amount: charge.amount,
    status: 'REFUNDED',
    declineReason: null,
    providerReference: charge.reference,
    refundReference: refund.reference,
  });
  await writeEvent(tx, payments.refunded, { paymentId, orderId, customerId, amount: charge.amount });
  return paymentId;
}
