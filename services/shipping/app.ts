// The shipping service: a shipment for every confirmed order, moved through
// a carrier (the built-in simulator) to SHIPPED and DELIVERED; the authority
// on whether an order may still be cancelled (shipments.hold).
import { Type } from '@sinclair/typebox';
import { join } from 'node:path';
import { orders, shipments, settings as live } from '../../subjects/index.ts';
import { ServiceSettings, type LiveSettings, type ServiceDefinition } from '../kit/index.ts';
import { CarrierSettings, CarrierSimulator } from './carrier.ts';
import { ShipmentDispatcher } from './dispatcher.ts';
import { shippingConsumers } from './events.ts';
import { shippingEndpoints } from './handlers.ts';

export const ShippingSettings = {
  ...ServiceSettings,
  ...CarrierSettings,
  SHIPPING_LEASE_MS: Type.Integer({
    minimum: 1000,
    maximum: 3_600_000,
    default: 60_000,
    description:
      'How long a shipment taken by a dispatcher stays with it before another may take it: the wait before a step cut off by a crash is tried again. Longer than a carrier call.',
  }),
  SHIPPING_POLL_MS: Type.Integer({
    minimum: 10,
    maximum: 60_000,
    default: 500,
    description: 'How often each instance looks for shipments due at the carrier.',
  }),
  SHIPPING_RETRY_BASE_MS: Type.Integer({
    minimum: 10,
    maximum: 3_600_000,
    default: 2000,
    description: 'Wait after a failed carrier call; doubles after each further one (at most a minute).',
  }),
  SHIPPING_HOLD_MS: Type.Integer({
    minimum: 1000,
    maximum: 24 * 3_600_000,
    default: 60_000,
    description:
      "How long a shipment held for a cancellation waits for the order's cancellation before the order service is asked about it. Far longer than a cancel takes.",
  }),
};

export interface ShippingConfig {
  SHIPPING_LEASE_MS: number;
  SHIPPING_POLL_MS: number;
  SHIPPING_RETRY_BASE_MS: number;
  SHIPPING_HOLD_MS: number;
}

export const shippingService: ServiceDefinition<ShippingConfig> = {
  name: 'shipments',
  version: '1.0.0',
  description: 'Shipping: a shipment per confirmed order, moved through the carrier to DELIVERED',
  migrations: join(import.meta.dirname, 'migrations'),
  emits: [shipments.created, shipments.shipped, shipments.delivered, shipments.cancelled],
  // A hold whose cancellation never came: was the order cancelled after all?
  calls: [orders.get],
  settings: ShippingSettings,
  build({ pool, client, log, settings: current }, settings) {
    const rules = carrierRules(current);
    const dispatcher = new ShipmentDispatcher(pool, new CarrierSimulator(rules), client, log, {
      leaseMs: settings.SHIPPING_LEASE_MS,
      pollMs: settings.SHIPPING_POLL_MS,
      retryBaseMs: settings.SHIPPING_RETRY_BASE_MS,
      holdMs: settings.SHIPPING_HOLD_MS,
      get shipAfterMs() {
        return rules.SHIPPING_SHIP_AFTER_MS;
      },
      get deliverAfterMs() {
        return rules.SHIPPING_DELIVER_AFTER_MS;
      },
    });
    return {
      endpoints: shippingEndpoints(pool, { holdMs: settings.SHIPPING_HOLD_MS }),
      consumers: shippingConsumers({
        get shipAfterMs() {
          return rules.SHIPPING_SHIP_AFTER_MS;
        },
        wake: () => dispatcher.wake(),
      }),
      background: [dispatcher],
    };
  },
};

/** The carrier's rules as a view of the live settings: a change applies to the next carrier call or step scheduled. */
function carrierRules(settings: LiveSettings): CarrierSettings {
  return {
    get SHIPPING_SHIP_AFTER_MS() {
      return settings.get(live.shipments.shipAfterMs);
    },
    get SHIPPING_DELIVER_AFTER_MS() {
      return settings.get(live.shipments.deliverAfterMs);
    },
    get SHIPPING_FAILURE_RATE() {
      return settings.get(live.shipments.failureRate);
    },
    get SHIPPING_FAIL_FIRST_ATTEMPTS() {
      return settings.get(live.shipments.failFirstAttempts);
    },
    get SHIPPING_CARRIER_DELAY_MS() {
      return settings.get(live.shipments.carrierDelayMs);
    },
  };
}
