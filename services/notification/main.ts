// The notification service process.
import '../kit/telemetry.ts'; // first: instruments http, pg, fastify and graphql before they load
import { createLogger, loadConfigOrExit, startService, startTracing, stopOnSignals } from '../kit/index.ts';
import { NotificationSettings, notificationService } from './app.ts';

const settings = loadConfigOrExit(NotificationSettings);
startTracing(notificationService.name, settings.ZIPKIN_URL);
const log = createLogger(notificationService.name, settings.LOG_LEVEL);
const running = await startService(notificationService, settings, log);
stopOnSignals(running.stop, log);
