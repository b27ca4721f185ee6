import { Type, type Static } from '@sinclair/typebox';
import { rpc } from './contract.ts';
import { Id, Page, PageRequest, Timestamp } from './common.ts';

export const Notification = Type.Object(
  {
    id: Id,
    customerId: Id,
    orderId: Type.Union([Id, Type.Null()]),
    eventType: Type.String({ description: 'The subject of the event that caused it.' }),
    email: Type.String(),
    subject: Type.String(),
    status: Type.Union([Type.Literal('PENDING'), Type.Literal('SENT'), Type.Literal('FAILED')]),
    attempts: Type.Integer({ minimum: 0 }),
    lastError: Type.Union([Type.String(), Type.Null()], {
      description: 'Error of the latest failed attempt, or why it was never sent; null when none failed.',
    }),
    sentAt: Type.Union([Timestamp, Type.Null()]),
    createdAt: Timestamp,
  },
  { additionalProperties: false },
);
export type Notification = Static<typeof Notification>;

export const notifications = {
  listByCustomer: rpc({
    subject: 'notifications.listByCustomer',
    description: 'Emails sent (or being sent) to a customer, newest first.',
    idempotent: true,
    request: Type.Object({ customerId: Id, ...PageRequest }, { additionalProperties: false }),
    reply: Page(Notification),
  }),
  listByOrder: rpc({
    subject: 'notifications.listByOrder',
    description:
      'Emails sent (or being sent) about one order, newest first. `customerId` is the customer the order belongs to: ' +
      "another customer's id answers an empty list, so a caller cannot read someone else's emails.",
    idempotent: true,
    request: Type.Object({ orderId: Id, customerId: Id }, { additionalProperties: false }),
    reply: Type.Object(
      {
        items: Type.Array(Notification, {
          description: 'One per event about the order (confirmed, cancelled, refunded, shipped, delivered).',
        }),
      },
      { additionalProperties: false },
    ),
  }),
  listByOrders: rpc({
    subject: 'notifications.listByOrders',
    description:
      'listByOrder for several orders at once (for loaders): one list per order, in the order asked, each empty unless ' +
      'the order belongs to the customer given with it.',
    idempotent: true,
    request: Type.Object(
      {
        orders: Type.Array(Type.Object({ orderId: Id, customerId: Id }, { additionalProperties: false }), {
          maxItems: 500,
          description: 'At most 500 orders per call.',
        }),
      },
      { additionalProperties: false },
    ),
    reply: Type.Object({ lists: Type.Array(Type.Array(Notification)) }, { additionalProperties: false }),
  }),
} as const;
