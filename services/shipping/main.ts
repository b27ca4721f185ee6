// The shipping service process.
import '../kit/telemetry.ts'; // first: instruments http, pg, fastify and graphql before they load
import { runService } from '../kit/index.ts';
import { shippingService } from './app.ts';

await runService(shippingService);
