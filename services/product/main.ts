// The product service process.
import '../kit/telemetry.ts'; // first: instruments http, pg, fastify and graphql before they load
import { createLogger, loadConfigOrExit, startService, startTracing, stopOnSignals } from '../kit/index.ts';
import { ProductSettings, productService } from './app.ts';

const settings = loadConfigOrExit(ProductSettings);
startTracing(productService.name, settings.ZIPKIN_URL);
const log = createLogger(productService.name, settings.LOG_LEVEL);
const running = await startService(productService, settings, log);
stopOnSignals(running.stop, log);
