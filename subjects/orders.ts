import { Type, type Static } from '@sinclair/typebox';
import { rpc, event } from './contract.ts';
import { Id, Money, Page, PageRequest, Timestamp } from './common.ts';
import { PostalAddressFields } from './customers.ts';

export const OrderStatus = Type.Union([Type.Literal('PENDING'), Type.Literal('CONFIRMED'), Type.Literal('CANCELLED')]);
export type OrderStatus = Static<typeof OrderStatus>;

/** Why an order was cancelled, as a stable code (the text reason rides beside it). */
export const CancelReason = Type.Union([
  Type.Literal('OUT_OF_STOCK'),
  Type.Literal('PAYMENT_DECLINED'),
  Type.Literal('CUSTOMER_CANCELLED'),
  Type.Literal('DEADLINE_EXCEEDED'),
]);
export type CancelReason = Static<typeof CancelReason>;

export const OrderLine = Type.Object(
  {
    productId: Id,
    sku: Type.String(),
    name: Type.String(),
    quantity: Type.Integer({ minimum: 1 }),
    unitPrice: Money,
    lineTotal: Money,
  },
  { additionalProperties: false },
);

export const StatusChange = Type.Object(
  { status: OrderStatus, at: Timestamp, reason: Type.Union([Type.String(), Type.Null()]) },
  { additionalProperties: false },
);

/** The saved address (addressId) as it was when the order was placed: a copy, so later edits do not rewrite the order. */
export const ShippingAddress = Type.Object({ addressId: Id, ...PostalAddressFields }, { additionalProperties: false });
export type ShippingAddress = Static<typeof ShippingAddress>;

export const Order = Type.Object(
  {
    id: Id,
    customerId: Id,
    status: OrderStatus,
    lines: Type.Array(OrderLine),
    total: Money,
    cancelReason: Type.Union([CancelReason, Type.Null()]),
    shippingAddress: Type.Union([ShippingAddress, Type.Null()], {
      description: 'Null when the customer had no saved address when ordering (such orders are accepted).',
    }),
    history: Type.Array(StatusChange),
    deadlineAt: Timestamp,
    createdAt: Timestamp,
    updatedAt: Timestamp,
  },
  { additionalProperties: false },
);
export type Order = Static<typeof Order>;

const LineRequest = Type.Object({ productId: Id, quantity: Type.Integer({ minimum: 1, maximum: 1000 }) }, { additionalProperties: false });

/** What the payment step needs, carried along the saga's events. */
export const PaymentRequest = Type.Object(
  { token: Type.String({ minLength: 1, maxLength: 200 }), amount: Money },
  { additionalProperties: false },
);

export const ReservationLine = Type.Object({ productId: Id, quantity: Type.Integer({ minimum: 1 }) }, { additionalProperties: false });

/** Chosen by the client, one per checkout (a UUID does): the same key from the same customer is the same order. */
export const IdempotencyKey = Type.String({
  minLength: 1,
  maxLength: 255,
  pattern: '^[\\x21-\\x7E]+$',
  description: 'Printable ASCII without spaces, up to 255 characters.',
});

const OrderRef = { orderId: Id, customerId: Id };

export const orders = {
  place: rpc({
    subject: 'orders.place',
    description:
      'Place an order at current prices; replies at once with the PENDING order. It ships to shippingAddressId, one of the ' +
      "customer's saved addresses (ADDRESS_NOT_FOUND otherwise), or to their default; the address is copied into the order. " +
      'Idempotent by customer and idempotencyKey: ' +
      'a repeat answers the order that key made (as it is now), after waiting for an attempt still in flight; ' +
      'the key with another request is IDEMPOTENCY_KEY_REUSED. Keys are kept ORDER_IDEMPOTENCY_KEY_HOURS (24 h at least).',
    idempotent: true,
    request: Type.Object(
      {
        customerId: Id,
        idempotencyKey: IdempotencyKey,
        lines: Type.Array(LineRequest, { minItems: 1, maxItems: 50 }),
        paymentToken: Type.String({ minLength: 1, maxLength: 200, description: 'Card token for the payment provider.' }),
        shippingAddressId: Type.Optional(Id),
      },
      { additionalProperties: false },
    ),
    reply: Order,
  }),
  get: rpc({
    subject: 'orders.get',
    description: 'One order; with customerId, an order of someone else answers ORDER_NOT_FOUND.',
    idempotent: true,
    request: Type.Object({ id: Id, customerId: Type.Optional(Id) }, { additionalProperties: false }),
    reply: Order,
  }),
  listByCustomer: rpc({
    subject: 'orders.listByCustomer',
    description: "A customer's orders, newest first.",
    idempotent: true,
    request: Type.Object({ customerId: Id, ...PageRequest }, { additionalProperties: false }),
    reply: Page(Order),
  }),
  cancel: rpc({
    subject: 'orders.cancel',
    description:
      'Cancel one of your orders; a confirmed one is refunded. Repeating it answers the cancelled order again; ORDER_NOT_CANCELLABLE when the saga cancelled it.',
    idempotent: true,
    request: Type.Object(
      { id: Id, customerId: Id, reason: Type.Optional(Type.String({ maxLength: 500 })) },
      { additionalProperties: false },
    ),
    reply: Order,
  }),
  placed: event({
    subject: 'orders.events.placed',
    stream: 'ORDERS',
    description: 'An order was stored as PENDING; the saga starts.',
    data: Type.Object(
      { ...OrderRef, lines: Type.Array(ReservationLine, { minItems: 1 }), payment: PaymentRequest, deadlineAt: Timestamp },
      { additionalProperties: false },
    ),
  }),
  confirmed: event({
    subject: 'orders.events.confirmed',
    stream: 'ORDERS',
    description: 'Stock reserved and payment captured: the order is CONFIRMED.',
    data: Type.Object({ ...OrderRef, total: Money }, { additionalProperties: false }),
  }),
  cancelled: event({
    subject: 'orders.events.cancelled',
    stream: 'ORDERS',
    description: 'The order is CANCELLED; its stock is released and a captured payment refunded.',
    data: Type.Object(
      {
        ...OrderRef,
        reasonCode: CancelReason,
        reason: Type.String(),
        previousStatus: OrderStatus,
        total: Money,
      },
      { additionalProperties: false },
    ),
  }),
} as const;
