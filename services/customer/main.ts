// The customer service process.
import '../kit/telemetry.ts'; // first: instruments http, pg, fastify and graphql before they load
import { createLogger, loadConfigOrExit, startService, startTracing, stopOnSignals } from '../kit/index.ts';
import { CustomerSettings, customerService } from './app.ts';

const settings = loadConfigOrExit(CustomerSettings);
startTracing(customerService.name, settings.ZIPKIN_URL);
const log = createLogger(customerService.name, settings.LOG_LEVEL);
const running = await startService(customerService, settings, log);
stopOnSignals(running.stop, log);
