// The order service process.
import '../kit/telemetry.ts'; // first: instruments http, pg, fastify and graphql before they load
import { createLogger, loadConfigOrExit, startService, startTracing, stopOnSignals } from '../kit/index.ts';
import { OrderSettings, orderService } from './app.ts';

const settings = loadConfigOrExit(OrderSettings);
startTracing(orderService.name, settings.ZIPKIN_URL);
const log = createLogger(orderService.name, settings.LOG_LEVEL);
const running = await startService(orderService, settings, log);
stopOnSignals(running.stop, log);
