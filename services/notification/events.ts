// Event consumers of the notification service: every order outcome becomes
// one email to the customer. The consumer only records the email (inside the
// kit's inbox transaction, so a redelivered event records nothing) and wakes
// the sender on commit (in-process, see wakeSender); sending happens in the
// sender loop (mailer.ts).
import { randomUUID } from 'node:crypto';
import { customers, orders, payments, type EnvelopeOf, type EventContract, type Money } from '../../subjects/index.ts';
import {
  ServiceError,
  afterCommit,
  currentTraceCarrier,
  on,
  type EventHandler,
  type Logger,
  type Pool,
  type RpcClient,
  type Tx,
} from '../kit/index.ts';
import { SEND_CHANNEL } from './mailer.ts';
import { insertNotification, notifySenders } from './store.ts';

/**
 * `wakeSender` wakes this process's sender once the recording transaction
 * commits. Without it, the transaction wakes every sender through
 * pg_notify, which serialises the commits of the whole PostgreSQL server on
 * its notification lock: a cost paid per email.
 */
export function notificationConsumers(client: RpcClient, wakeSender?: (pool: Pool) => void): EventHandler[] {
  const wake = (tx: Tx) => (wakeSender && afterCommit(tx, wakeSender) ? Promise.resolve() : notifySenders(tx, SEND_CHANNEL));
  return [
    on(orders.confirmed, 'order-confirmed', (event, tx, { log }) =>
      record(tx, client, log, wake, event, event.data, (name) => orderConfirmedEmail(event.data, name)),
    ),
    on(orders.cancelled, 'order-cancelled', (event, tx, { log }) =>
      record(tx, client, log, wake, event, event.data, (name) => orderCancelledEmail(event.data, name)),
    ),
    on(payments.refunded, 'payment-refunded', (event, tx, { log }) =>
      record(tx, client, log, wake, event, event.data, (name) => paymentRefundedEmail(event.data, name)),
    ),
  ];
}

export interface Email {
  subject: string;
  body: string;
}

async function record(
  tx: Tx,
  client: RpcClient,
  log: Logger,
  wake: (tx: Tx) => Promise<void>,
  event: EnvelopeOf<EventContract>,
  ref: { customerId: string; orderId: string },
  compose: (name: string | null) => Email,
): Promise<void> {
  let recipient: { email: string; name: string } | undefined;
  let error: string | undefined;
  try {
    recipient = await client.call(customers.get, { id: ref.customerId });
  } catch (failure) {
    // Anything else (the customer service away, slow) is worth another delivery of the event.
    if (!(failure instanceof ServiceError && failure.code === 'CUSTOMER_NOT_FOUND')) throw failure;
    // Retrying cannot make the customer exist: keep the record, never send it.
    error = `customer ${ref.customerId} does not exist`;
  }
  const email = compose(recipient?.name ?? null);
  // Goes in with the COMMIT. A repeat of the event stops at the inbox (and event_id is unique).
  await insertNotification(tx, {
    id: randomUUID(),
    eventId: event.id,
    eventType: event.type,
    customerId: ref.customerId,
    orderId: ref.orderId,
    email: recipient?.email ?? '',
    subject: email.subject,
    body: email.body,
    status: recipient ? 'PENDING' : 'FAILED',
    ...(error ? { error } : {}),
    trace: currentTraceCarrier(),
  });
  if (recipient) await wake(tx);
  else log.warn({ eventId: event.id, customerId: ref.customerId }, 'notification not sendable: unknown customer');
}

// --- Content -------------------------------------------------------------------

/** Minor units as a decimal amount with its currency code, e.g. `EUR 1,234.50`, `JPY 1,200`. */
export function formatMoney({ amount, currency }: Money): string {
  const digits = minorUnitDigits(currency);
  const scale = 10 ** digits;
  const whole = Math.floor(amount / scale).toLocaleString('en-US');
  const fraction = digits > 0 ? `.${String(amount % scale).padStart(digits, '0')}` : '';
  return `${currency} ${whole}${fraction}`;
}

function minorUnitDigits(currency: string): number {
  try {
    return new Intl.NumberFormat('en', { style: 'currency', currency }).resolvedOptions().maximumFractionDigits ?? 2;
  } catch {
    return 2; // a well-formed code Intl does not know
  }
}

/** The short reference customers see in subjects; the full id is in the body. */
function orderRef(orderId: string): string {
  return `#${orderId.slice(0, 8).toUpperCase()}`;
}

function greeting(name: string | null): string {
  return name ? `Hello ${name},` : 'Hello,';
}

const SIGNATURE = 'Kind regards,\nThe Shop';

export function orderConfirmedEmail(data: { orderId: string; total: Money }, name: string | null): Email {
  return {
    subject: `Your order ${orderRef(data.orderId)} is confirmed`,
    body: [
      greeting(name),
      '',
      'thank you for your order. Your payment went through and your order is confirmed.',
      '',
      `Order: ${data.orderId}`,
      `Total: ${formatMoney(data.total)}`,
      '',
      SIGNATURE,
      '',
    ].join('\n'),
  };
}

export function orderCancelledEmail(
  data: { orderId: string; reasonCode: string; reason: string; total: Money },
  name: string | null,
): Email {
  // Only these can come after a charge; the refund has its own email.
  const mayBeRefunded = data.reasonCode === 'CUSTOMER_CANCELLED' || data.reasonCode === 'DEADLINE_EXCEEDED';
  return {
    subject: `Your order ${orderRef(data.orderId)} was cancelled`,
    body: [
      greeting(name),
      '',
      'your order was cancelled.',
      '',
      `Order: ${data.orderId}`,
      `Reason: ${data.reason}`,
      `Order total: ${formatMoney(data.total)}`,
      ...(mayBeRefunded ? ['', 'If you were charged, the amount is refunded; you will get an email when it is.'] : []),
      '',
      SIGNATURE,
      '',
    ].join('\n'),
  };
}

export function paymentRefundedEmail(data: { orderId: string; amount: Money }, name: string | null): Email {
  return {
    subject: `Refund for your order ${orderRef(data.orderId)}`,
    body: [
      greeting(name),
      '',
      `we have refunded ${formatMoney(data.amount)} for your cancelled order to your original payment method.`,
      '',
      `Order: ${data.orderId}`,
      `Refunded: ${formatMoney(data.amount)}`,
      '',
      SIGNATURE,
      '',
    ].join('\n'),
  };
}
