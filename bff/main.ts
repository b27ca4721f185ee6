// The BFF process: GraphQL API, subscriptions and the storefront on one port.
import '../services/kit/telemetry.ts'; // first: starts tracing, instrumenting http, pg and graphql before they load
import {
  ProcessMetrics,
  connectNats,
  createLogger,
  loadConfigOrExit,
  portTaken,
  startProcessOps,
  stopOnSignals,
  stopTracing,
} from '../services/kit/index.ts';
import { BffSettings, build } from './app.ts';

const settings = loadConfigOrExit(BffSettings);
const log = createLogger('bff', settings.LOG_LEVEL);
const nc = await connectNats('bff', settings, log);
const metrics = new ProcessMetrics('bff');
const app = await build({ nc, log, settings, metrics });
try {
  await app.listen({ port: settings.BFF_PORT, host: settings.BFF_HOST });
} catch (error) {
  if ((error as { code?: string }).code !== 'EADDRINUSE') throw error;
  // One line that says what to do, not a stack trace.
  process.stderr.write(`bff: ${portTaken(settings.BFF_PORT, 'BFF_PORT')}\n`);
  process.exit(1);
}
// The operations port (OPS_PORT): /metrics, and readiness as the API's own /health/ready says.
const ops = await startProcessOps(
  {
    nc,
    metrics,
    log,
    checks: {
      api: async () => {
        const { statusCode, body } = await app.inject({ method: 'GET', url: '/health/ready' });
        if (statusCode !== 200) throw new Error(body);
      },
    },
  },
  settings,
);
log.info({ port: settings.BFF_PORT, host: settings.BFF_HOST }, 'service started');

stopOnSignals(async () => {
  log.info('service stopping');
  ops?.draining();
  // Stop taking requests and close subscriptions, bounded by the shutdown grace.
  await Promise.race([app.close(), new Promise((resolve) => setTimeout(resolve, settings.SHUTDOWN_TIMEOUT_MS).unref())]);
  await nc.drain().catch(() => {});
  await ops?.close();
  await stopTracing();
  log.info('service stopped');
}, log);
