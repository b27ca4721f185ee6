// Bench-only child process for `npm run bench:rpc`, part (b): Moleculer's
// counterpart of bench/no-io-server.ts. A ServiceBroker with one service,
// `customers`, whose action `get` validates its params with Moleculer's
// built-in validator (fastest-validator) as the contract `customers.get`
// (subjects/customers.ts) is checked, and answers the same fixed customer as
// the kit's no-I/O endpoint, with no I/O behind it. It prints "ready" once
// the broker has started.
import { fixedCustomer as fixed } from './fixed-customer.ts';
import { moleculerBroker } from './moleculer.ts';

const natsUrl = process.env.NATS_URL;
if (!natsUrl) throw new Error('NATS_URL is not set');

/** The contract's `Id` (subjects/common.ts): any hex UUID, either case. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// The broker stops itself on SIGTERM (Moleculer registers the signal handlers).
const broker = moleculerBroker('bench-moleculer-server', natsUrl);
broker.createService({
  name: 'customers',
  actions: {
    get: {
      // The contract's request, ById: `{ id: <uuid> }` and nothing else
      // ($$strict: true is additionalProperties: false).
      params: { $$strict: true, id: { type: 'string', pattern: UUID } },
      handler: async () => fixed,
    },
  },
});
await broker.start();
process.stdout.write('ready\n');
