// The typed contracts of the shop: every subject with its schemas and types.
// Every part imports its message shapes from here and nowhere else.
export * from './contract.ts';
export * from './common.ts';
export * from './errors.ts';
export * from './streams.ts';
export * from './settings.ts';
export * from './services.ts';
export { customers, Customer, Role, Address, AddressInput, MAX_ADDRESSES } from './customers.ts';
export { products, Product, encodeCatalogCursor, decodeCatalogCursor, type CatalogPosition } from './products.ts';
export { orders, Order, OrderStatus, CancelReason, OrderLine, StatusChange, ShippingAddress } from './orders.ts';
export { inventory } from './inventory.ts';
export { payments, Payment, PaymentStatus } from './payments.ts';
export { notifications, Notification } from './notifications.ts';
export { shipments, Shipment, ShipmentStatus, ShipmentStep } from './shipments.ts';

import { customers } from './customers.ts';
import { products } from './products.ts';
import { orders } from './orders.ts';
import { inventory } from './inventory.ts';
import { payments } from './payments.ts';
import { notifications } from './notifications.ts';
import { shipments } from './shipments.ts';
import type { EventContract, RpcContract, StateContract } from './contract.ts';

const all = [customers, products, orders, inventory, payments, notifications, shipments].flatMap((group) => Object.values(group)) as (
  | RpcContract
  | EventContract
  | StateContract
)[];

/** Every request-reply operation, for tooling (AsyncAPI, permissions, tests). */
export const allOperations: readonly RpcContract[] = all.filter((c): c is RpcContract => c.kind === 'rpc');
/** Every event, for tooling. */
export const allEvents: readonly EventContract[] = all.filter((c): c is EventContract => c.kind === 'event');
/** Every state bucket (read models), for tooling. */
export const allStates: readonly StateContract[] = all.filter((c): c is StateContract => c.kind === 'state');
