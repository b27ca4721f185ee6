// The order service: places orders and drives the saga to CONFIRMED or CANCELLED.
import { Type } from '@sinclair/typebox';
import { join } from 'node:path';
import { customers, orders, products, shipments, settings as live } from '../../subjects/index.ts';
import { ServiceError, ServiceSettings, type Endpoint, type LiveSettings, type ServiceDefinition } from '../kit/index.ts';
import { orderEndpoints } from './handlers.ts';
import { orderConsumers, sagaObserver } from './events.ts';
import { deadlineSweeper } from './deadline.ts';
import { idempotencyKeyPruner } from './idempotency-keys.ts';

export const OrderSettings = {
  ...ServiceSettings,
  ORDER_DEADLINE_SWEEP_MS: Type.Integer({
    minimum: 10,
    maximum: 10 * 60 * 1000,
    default: 1000,
    description: 'How often each instance looks for PENDING orders past their deadline.',
  }),
  ORDER_IDEMPOTENCY_KEY_HOURS: Type.Integer({
    minimum: 24,
    maximum: 24 * 365,
    default: 24,
    description: "How long orders.place keeps an idempotency key (a repeat within it answers the key's order); 24 at least.",
  }),
};

export const orderService: ServiceDefinition<{ ORDER_DEADLINE_SWEEP_MS: number; ORDER_IDEMPOTENCY_KEY_HOURS: number }> = {
  name: 'orders',
  version: '1.0.0',
  description: 'Orders and the saga that confirms or cancels them',
  migrations: join(import.meta.dirname, 'migrations'),
  emits: [orders.placed, orders.confirmed, orders.cancelled],
  // Placing an order checks its customer and the address it ships to, and prices its lines;
  // cancelling a confirmed one holds its shipment.
  calls: [customers.shippingAddress, products.getMany, shipments.hold],
  settings: OrderSettings,
  build({ pool, client, log, settings: current, metrics }, settings) {
    // Read at each order, so a change of orders.deadline_ms applies to the next one.
    const options = {
      get deadlineMs() {
        return current.get(live.orders.deadlineMs);
      },
    };
    const saga = sagaObserver(metrics);
    return {
      endpoints: whileAccepting(orderEndpoints(pool, client, options), current),
      consumers: orderConsumers(saga),
      background: [
        deadlineSweeper(pool, log, { intervalMs: settings.ORDER_DEADLINE_SWEEP_MS, saga }),
        idempotencyKeyPruner(pool, log, { hours: settings.ORDER_IDEMPOTENCY_KEY_HOURS }),
      ],
    };
  },
};

/** The feature flag features.orders_accepting: while it is false, orders.place refuses (and stores nothing). */
function whileAccepting(endpoints: readonly Endpoint[], current: LiveSettings): Endpoint[] {
  return endpoints.map((entry) =>
    entry.contract !== orders.place
      ? entry
      : {
          contract: entry.contract,
          async handle(input, request) {
            if (!current.get(live.features.ordersAccepting)) {
              throw new ServiceError('SERVICE_UNAVAILABLE', 'ordering is paused by the operator; try again later');
            }
            return entry.handle(input, request);
          },
        },
  );
}
