// The customer service process.
import '../kit/telemetry.ts'; // first: starts tracing, instrumenting http, pg and graphql before they load
import { runService } from '../kit/index.ts';
import { customerService } from './app.ts';

await runService(customerService);
