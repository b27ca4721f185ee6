// The order service process.
import '../kit/telemetry.ts'; // first: starts tracing, instrumenting http, pg and graphql before they load
import { runService } from '../kit/index.ts';
import { orderService } from './app.ts';

await runService(orderService);
