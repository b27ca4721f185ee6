// Bench-only child process for `npm run bench:rpc`, part (b): the same reply
// served two ways, with no I/O behind either, so what is measured is the
// request-reply path itself.
// - `customers.get` through the kit (serveEndpoints: NATS micro service,
//   contract checks in and out, trace context, error mapping), answered by a
//   handler that returns a fixed customer;
// - a raw responder (nc.subscribe + msg.respond) on a bench-only subject,
//   answering the same customer as pre-encoded bytes.
// It must not run beside the real customer service: both would share the
// `customers` queue group. It prints "ready" once both listen.
import { customers } from '../subjects/index.ts';
import { fixedCustomer as fixed } from './fixed-customer.ts';
import {
  ProcessMetrics,
  ServiceSettings,
  connectNats,
  createLogger,
  endpoint,
  loadConfig,
  serveEndpoints,
  startTracing,
  stopTracing,
} from '../services/kit/index.ts';

/** The raw responder's subject, named by bench/rpc.ts. */
const RAW_SUBJECT = process.env.BENCH_RAW_SUBJECT ?? 'bench.raw.customers.get';

const settings = loadConfig(ServiceSettings);
const fixedBytes = Buffer.from(JSON.stringify(fixed));

// As a service runs an endpoint: OpenTelemetry started as in every process
// (with no OTEL_* exporter set: trace ids made and carried, nothing recorded),
// a logger, one connection, every answer told to the process's metrics.
startTracing('customers', settings.ZIPKIN_URL);
const log = createLogger('customers', settings.LOG_LEVEL);
const nc = await connectNats('bench-no-io', settings, log);

const server = await serveEndpoints(
  nc,
  { name: 'customers', version: '0.0.0-bench', description: 'bench: customers.get answering a fixed customer' },
  [endpoint(customers.get, async () => fixed)],
  log,
  new ProcessMetrics('customers').requestAnswered,
);
const raw = nc.subscribe(RAW_SUBJECT, {
  queue: 'bench-raw',
  callback: (_error, msg) => {
    msg.respond(fixedBytes);
  },
});
await nc.flush();
process.stdout.write('ready\n');

process.once('SIGTERM', () => {
  void (async () => {
    raw.unsubscribe();
    await server.stop(1000);
    await nc.drain().catch(() => {});
    await stopTracing();
    process.exit(0);
  })();
});
