import { Type, type Static } from '@sinclair/typebox';
import { rpc, event } from './contract.ts';
import { Id, Timestamp } from './common.ts';

/**
 * LABEL_CREATED when the order is confirmed, SHIPPED when the carrier picked
 * it up, DELIVERED at the door; CANCELLED when its order was cancelled before
 * it shipped (the only way out of LABEL_CREATED besides SHIPPED).
 */
export const ShipmentStatus = Type.Union([
  Type.Literal('LABEL_CREATED'),
  Type.Literal('SHIPPED'),
  Type.Literal('DELIVERED'),
  Type.Literal('CANCELLED'),
]);
export type ShipmentStatus = Static<typeof ShipmentStatus>;

export const ShipmentStep = Type.Object(
  { status: ShipmentStatus, at: Timestamp, note: Type.Union([Type.String(), Type.Null()]) },
  { additionalProperties: false },
);

export const Shipment = Type.Object(
  {
    id: Id,
    orderId: Id,
    customerId: Id,
    status: ShipmentStatus,
    carrier: Type.String(),
    trackingNumber: Type.Union([Type.String(), Type.Null()], { description: 'Given by the carrier when it ships; null before.' }),
    /** Oldest first. */
    history: Type.Array(ShipmentStep),
    createdAt: Timestamp,
    updatedAt: Timestamp,
  },
  { additionalProperties: false },
);
export type Shipment = Static<typeof Shipment>;

const ShipmentRef = { shipmentId: Id, orderId: Id, customerId: Id, carrier: Type.String() };

export const shipments = {
  getByOrders: rpc({
    subject: 'shipments.getByOrders',
    description: 'The shipments of several orders, in the order asked: null for an order without one (not confirmed yet, or cancelled).',
    idempotent: true,
    request: Type.Object({ orderIds: Type.Array(Id, { minItems: 1, maxItems: 500 }) }, { additionalProperties: false }),
    reply: Type.Object({ shipments: Type.Array(Type.Union([Shipment, Type.Null()])) }, { additionalProperties: false }),
  }),
  hold: rpc({
    subject: 'shipments.hold',
    description:
      'Asked by the order service before it cancels a confirmed order: stops its shipment from shipping (or records that none may be created). ' +
      'ORDER_NOT_CANCELLABLE once it has shipped. The shipment is cancelled when orders.events.cancelled arrives; ' +
      'a hold whose cancellation never comes is released (shipping asks the order service). Repeating it answers the same.',
    idempotent: true,
    request: Type.Object({ orderId: Id, customerId: Id }, { additionalProperties: false }),
    reply: Type.Object(
      {
        status: Type.Union([Type.Literal('HELD'), Type.Literal('CANCELLED')], {
          description: 'HELD: it will not ship; CANCELLED already.',
        }),
      },
      { additionalProperties: false },
    ),
  }),
  created: event({
    subject: 'shipments.events.created',
    stream: 'SHIPMENTS',
    description: 'A confirmed order got its shipment: label created, waiting for the carrier.',
    data: Type.Object(ShipmentRef, { additionalProperties: false }),
  }),
  shipped: event({
    subject: 'shipments.events.shipped',
    stream: 'SHIPMENTS',
    description: 'The carrier picked the parcel up; it has a tracking number. Its order can no longer be cancelled.',
    data: Type.Object({ ...ShipmentRef, trackingNumber: Type.String() }, { additionalProperties: false }),
  }),
  delivered: event({
    subject: 'shipments.events.delivered',
    stream: 'SHIPMENTS',
    description: 'The carrier delivered the parcel.',
    data: Type.Object({ ...ShipmentRef, trackingNumber: Type.String() }, { additionalProperties: false }),
  }),
  cancelled: event({
    subject: 'shipments.events.cancelled',
    stream: 'SHIPMENTS',
    description: 'The order was cancelled before its shipment shipped; it never will.',
    data: Type.Object(ShipmentRef, { additionalProperties: false }),
  }),
} as const;
