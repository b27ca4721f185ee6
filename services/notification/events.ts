// Event consumers of the notification service: every order outcome becomes
// one email to the customer. The consumer only records the email (inside the
// kit's inbox transaction, so a redelivered event records nothing) and wakes
// the sender on commit (in-process, see wakeSender); sending happens in the
// sender loop (mailer.ts).
//
// Events come in batches (the kit's onBatch): one customers.getMany for the
// recipients of the whole batch, and the rows go in with the COMMIT.
import { randomUUID } from 'node:crypto';
import { context } from '@opentelemetry/api';
import { customers, orders, payments, shipments, type Customer, type Money } from '../../subjects/index.ts';
import {
  currentTraceCarrier,
  onBatch,
  type Delivered,
  type EventHandler,
  type Logger,
  type RpcClient,
  type Transaction,
} from '../kit/index.ts';
import { SEND_CHANNEL } from './mailer.ts';
import { insertNotification, notifySenders } from './store.ts';

/** Events per transaction: each costs a row; the batch, one lookup of its recipients. */
const BATCH = 32;

/**
 * `wakeSender` wakes this process's sender once the recording transaction
 * commits. Without it, the transaction wakes every sender through
 * pg_notify, which serialises the commits of the whole PostgreSQL server on
 * its notification lock: a cost paid per email.
 */
export function notificationConsumers(client: RpcClient, wakeSender?: () => void): EventHandler[] {
  const wake = async (tx: Transaction) => (wakeSender ? tx.afterCommit(wakeSender) : notifySenders(tx, SEND_CHANNEL));
  const recorder =
    <C extends EmailEvent>(compose: (event: Delivered<C>['event'], name: string | null) => Email) =>
    (events: Delivered<C>[], tx: Transaction, log: Logger) =>
      record(tx, client, log, wake, events, compose);
  return [
    onBatch(
      orders.confirmed,
      'order-confirmed',
      recorder((event, name) => orderConfirmedEmail(event.data, name)),
      { batch: BATCH },
    ),
    onBatch(
      orders.cancelled,
      'order-cancelled',
      recorder((event, name) => orderCancelledEmail(event.data, name)),
      { batch: BATCH },
    ),
    onBatch(
      payments.refunded,
      'payment-refunded',
      recorder((event, name) => paymentRefundedEmail(event.data, name)),
      {
        batch: BATCH,
      },
    ),
    onBatch(
      shipments.shipped,
      'shipment-shipped',
      recorder((event, name) => shipmentShippedEmail(event.data, name)),
      { batch: BATCH },
    ),
    onBatch(
      shipments.delivered,
      'shipment-delivered',
      recorder((event, name) => shipmentDeliveredEmail(event.data, name)),
      { batch: BATCH },
    ),
  ];
}

export interface Email {
  subject: string;
  body: string;
}

/** The events that become emails: each names its customer and order. */
type EmailEvent =
  | typeof orders.confirmed
  | typeof orders.cancelled
  | typeof payments.refunded
  | typeof shipments.shipped
  | typeof shipments.delivered;

async function record<C extends EmailEvent>(
  tx: Transaction,
  client: RpcClient,
  log: Logger,
  wake: (tx: Transaction) => Promise<void>,
  events: Delivered<C>[],
  compose: (event: Delivered<C>['event'], name: string | null) => Email,
): Promise<void> {
  const refOf = (event: Delivered<C>['event']): { customerId: string; orderId: string } => event.data;
  // Any failure (the customer service away, slow) is worth another delivery of the events.
  const ids = [...new Set(events.map(({ event }) => refOf(event).customerId))];
  const { customers: found } = await client.call(customers.getMany, { ids });
  const recipients = new Map<string, Customer>();
  for (const customer of found) if (customer) recipients.set(customer.id, customer);

  let sendable = false;
  for (const { event, trace } of events) {
    const ref = refOf(event);
    const recipient = recipients.get(ref.customerId);
    const email = compose(event, recipient?.name ?? null);
    // Goes in with the COMMIT. A repeat of the event stops at the inbox (and event_id is unique).
    insertNotification(tx, {
      id: randomUUID(),
      eventId: event.id,
      eventType: event.type,
      customerId: ref.customerId,
      orderId: ref.orderId,
      email: recipient?.email ?? '',
      subject: email.subject,
      body: email.body,
      // Retrying cannot make the customer exist: keep the record, never send it.
      status: recipient ? 'PENDING' : 'FAILED',
      ...(recipient ? {} : { error: `customer ${ref.customerId} does not exist` }),
      // The sender's span continues the event's trace.
      trace: context.with(trace, currentTraceCarrier),
    });
    if (recipient) sendable = true;
    else
      context.with(trace, () => log.warn({ eventId: event.id, customerId: ref.customerId }, 'notification not sendable: unknown customer'));
  }
  if (sendable) await wake(tx);
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

/** Digits by currency: building an Intl.NumberFormat per email showed in the sender's profile. */
const digitsByCurrency = new Map<string, number>();

function minorUnitDigits(currency: string): number {
  let digits = digitsByCurrency.get(currency);
  if (digits === undefined) {
    try {
      digits = new Intl.NumberFormat('en', { style: 'currency', currency }).resolvedOptions().maximumFractionDigits ?? 2;
    } catch {
      digits = 2; // a well-formed code Intl does not know
    }
    digitsByCurrency.set(currency, digits);
  }
  return digits;
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

export function shipmentShippedEmail(data: { orderId: string; carrier: string; trackingNumber: string }, name: string | null): Email {
  return {
    subject: `Your order ${orderRef(data.orderId)} has shipped`,
    body: [
      greeting(name),
      '',
      `your order is on its way with ${data.carrier}.`,
      '',
      `Order: ${data.orderId}`,
      `Tracking number: ${data.trackingNumber}`,
      '',
      SIGNATURE,
      '',
    ].join('\n'),
  };
}

export function shipmentDeliveredEmail(data: { orderId: string; carrier: string; trackingNumber: string }, name: string | null): Email {
  return {
    subject: `Your order ${orderRef(data.orderId)} was delivered`,
    body: [
      greeting(name),
      '',
      `${data.carrier} has delivered your order. We hope you enjoy it.`,
      '',
      `Order: ${data.orderId}`,
      `Tracking number: ${data.trackingNumber}`,
      '',
      SIGNATURE,
      '',
    ].join('\n'),
  };
}
