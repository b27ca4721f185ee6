// The payment service: charges reserved orders through a payment provider
// (the built-in simulator) and refunds cancelled ones.
import { join } from 'node:path';
import { payments, settings as live } from '../../subjects/index.ts';
import { ServiceSettings, type LiveSettings, type ServiceDefinition } from '../kit/index.ts';
import { paymentConsumers } from './events.ts';
import { paymentEndpoints } from './handlers.ts';
import { PaymentSimulator, SimulatorSettings } from './simulator.ts';

export const PaymentSettings = {
  ...ServiceSettings,
  ...SimulatorSettings,
};

export const paymentService: ServiceDefinition<SimulatorSettings> = {
  name: 'payments',
  version: '1.0.0',
  description: 'Payments: charges reserved orders, refunds cancelled ones',
  migrations: join(import.meta.dirname, 'migrations'),
  emits: [payments.captured, payments.declined, payments.refunded],
  calls: [],
  settings: PaymentSettings,
  build({ pool, databaseUrl, settings }) {
    // The simulator gets connections of its own, like a provider reached over the network: the
    // service's pool is held by the consumers' transactions while they wait on the provider.
    const provider = PaymentSimulator.open(databaseUrl, simulatorRules(settings));
    return {
      endpoints: paymentEndpoints(pool),
      consumers: paymentConsumers(provider),
      // Stopped after the consumers, so no charge is cut off half-way.
      background: [{ name: 'payment-provider', start() {}, stop: () => provider.close() }],
    };
  },
};

/**
 * The simulator's rules as a view of the live settings: each read gives the
 * current value (environment at start, then the `config` bucket), so a change
 * applies to the next provider call.
 */
function simulatorRules(settings: LiveSettings): SimulatorSettings {
  return {
    get PAYMENT_DECLINE_TOKENS() {
      return settings.get(live.payments.declineTokens);
    },
    get PAYMENT_AMOUNT_LIMIT() {
      return settings.get(live.payments.amountLimit);
    },
    get PAYMENT_DELAY_MS() {
      return settings.get(live.payments.delayMs);
    },
    get PAYMENT_FAILURE_RATE() {
      return settings.get(live.payments.failureRate);
    },
    get PAYMENT_FAIL_FIRST_ATTEMPTS() {
      return settings.get(live.payments.failFirstAttempts);
    },
  };
}
