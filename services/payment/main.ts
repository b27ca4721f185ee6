// The payment service process.
import '../kit/telemetry.ts'; // first: instruments http, pg, fastify and graphql before they load
import { createLogger, loadConfigOrExit, startService, startTracing, stopOnSignals } from '../kit/index.ts';
import { PaymentSettings, paymentService } from './app.ts';

const settings = loadConfigOrExit(PaymentSettings);
startTracing(paymentService.name, settings.ZIPKIN_URL);
const log = createLogger(paymentService.name, settings.LOG_LEVEL);
const running = await startService(paymentService, settings, log);
stopOnSignals(running.stop, log);
