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
} as const;
