import { Type } from '@sinclair/typebox';
import { event } from './contract.ts';
import { Id } from './common.ts';
import { PaymentRequest, ReservationLine } from './orders.ts';

const OrderRef = { orderId: Id, customerId: Id };

/** Inventory events come from the product service, which owns the stock. */
export const inventory = {
  reserved: event({
    subject: 'inventory.events.reserved',
    stream: 'INVENTORY',
    description: 'Every line of the order is reserved; carries the payment request on to the payment step.',
    data: Type.Object({ ...OrderRef, lines: Type.Array(ReservationLine), payment: PaymentRequest }, { additionalProperties: false }),
  }),
  rejected: event({
    subject: 'inventory.events.rejected',
    stream: 'INVENTORY',
    description: 'At least one line could not be reserved; nothing was reserved.',
    data: Type.Object(
      {
        ...OrderRef,
        reason: Type.String(),
        shortages: Type.Array(
          Type.Object({ productId: Id, requested: Type.Integer(), available: Type.Integer() }, { additionalProperties: false }),
        ),
      },
      { additionalProperties: false },
    ),
  }),
  released: event({
    subject: 'inventory.events.released',
    stream: 'INVENTORY',
    description: 'The reservation of a cancelled order went back to stock.',
    data: Type.Object({ ...OrderRef, lines: Type.Array(ReservationLine) }, { additionalProperties: false }),
  }),
} as const;
