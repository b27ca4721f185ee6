// OpenTelemetry, started before anything else: every main.ts imports this
// file first, so the official instrumentations hook `http`, `pg` and
// `graphql` before any of them is loaded (ES modules run their imports in
// order; these are CommonJS modules, patched as they load). Their spans and
// the kit's `<subject> send` / `<subject> process` spans (tracing.ts) join in
// one trace.
//
// They are loaded only in a process that exports spans: without an exporter
// nobody would see theirs. (Without one, the BFF's requests still get their
// trace ids and continue a caller's `traceparent`: tracing.ts
// tracedHttpServer.)
//
// The standard OTEL_* variables set it up (docs/tracing.md). The process is
// named by OTEL_SERVICE_NAME, else by the registry (subjects/services.ts)
// entry of the folder of its entry script, else by that script's path.
import { createRequire } from 'node:module';
import { dirname, relative, resolve } from 'node:path';
import { processByFolder } from '../../subjects/services.ts';
import { startTracing } from './tracing.ts';

const require = createRequire(import.meta.url);

/** Probes and scrapes of the operations port and the BFF's health: not worth a trace each. */
const isProbe = (path: string | undefined) => /^\/(metrics|health\/)/.test(path ?? '');

/** The path in the project of this process's entry script. */
const script = process.argv[1] && relative(resolve(import.meta.dirname, '../..'), resolve(process.argv[1]));
const entry = script ? processByFolder(dirname(script)) : undefined;
/** The registry name of this process, else its script's path in the project. */
const processName = entry?.name ?? script?.replace(/\.[cm]?[jt]s$/, '') ?? 'unknown_service:node';

/** HTTP in and out, each query (inside a request or an event), GraphQL's parse, validation and execution. */
function recorded() {
  const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http') as typeof import('@opentelemetry/instrumentation-http');
  const { PgInstrumentation } = require('@opentelemetry/instrumentation-pg') as typeof import('@opentelemetry/instrumentation-pg');
  const { GraphQLInstrumentation } =
    require('@opentelemetry/instrumentation-graphql') as typeof import('@opentelemetry/instrumentation-graphql');
  return [
    new HttpInstrumentation({ ignoreIncomingRequestHook: (request) => isProbe(request.url) }),
    // Only inside a request or an event: the outbox relay's sweeps would otherwise start a trace every second.
    new PgInstrumentation({ requireParentSpan: true }),
    // No span per resolver: the NATS calls a resolver makes have spans of their own (`<subject> send`).
    new GraphQLInstrumentation({ ignoreResolveSpans: true }),
  ];
}

startTracing(processName, process.env.ZIPKIN_URL, {
  instrumentations: (exporting) => (exporting ? recorded() : []),
});
