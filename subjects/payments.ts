import { Type, type Static } from '@sinclair/typebox';
import { rpc, event } from './contract.ts';
import { Id, Money, Timestamp } from './common.ts';

export const PaymentStatus = Type.Union([Type.Literal('CAPTURED'), Type.Literal('DECLINED'), Type.Literal('REFUNDED')]);

export const Payment = Type.Object(
  {
    id: Id,
    orderId: Id,
    customerId: Id,
    amount: Money,
    status: PaymentStatus,
    declineReason: Type.Union([Type.String(), Type.Null()]),
    providerReference: Type.Union([Type.String(), Type.Null()]),
    createdAt: Timestamp,
    updatedAt: Timestamp,
  },
  { additionalProperties: false },
);
export type Payment = Static<typeof Payment>;

const PaymentRef = { paymentId: Id, orderId: Id, customerId: Id, amount: Money };

export const payments = {
  getByOrder: rpc({
    subject: 'payments.getByOrder',
    description: 'The payment of an order; PAYMENT_NOT_FOUND before one was attempted.',
    idempotent: true,
    request: Type.Object({ orderId: Id }, { additionalProperties: false }),
    reply: Payment,
  }),
  getByOrders: rpc({
    subject: 'payments.getByOrders',
    description: 'The payments of several orders, in the order asked, null where none was attempted (for loaders).',
    idempotent: true,
    request: Type.Object(
      { orderIds: Type.Array(Id, { maxItems: 500, description: 'At most 500 orders per call.' }) },
      { additionalProperties: false },
    ),
    reply: Type.Object({ payments: Type.Array(Type.Union([Payment, Type.Null()])) }, { additionalProperties: false }),
  }),
  captured: event({
    subject: 'payments.events.captured',
    stream: 'PAYMENTS',
    description: 'The order total was charged.',
    data: Type.Object(PaymentRef, { additionalProperties: false }),
  }),
  declined: event({
    subject: 'payments.events.declined',
    stream: 'PAYMENTS',
    description: 'The provider refused the charge.',
    data: Type.Object({ ...PaymentRef, reason: Type.String() }, { additionalProperties: false }),
  }),
  refunded: event({
    subject: 'payments.events.refunded',
    stream: 'PAYMENTS',
    description: 'A captured payment was given back after the order was cancelled.',
    data: Type.Object(PaymentRef, { additionalProperties: false }),
  }),
} as const;
