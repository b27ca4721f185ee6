// OpenTelemetry, started before anything else: every main.ts imports this
// file first, so the official instrumentations hook `http`, `pg`, `fastify`
// and `graphql` before any of them is loaded (ES modules run their imports in
// order; these are CommonJS modules, patched as they load). Their spans and
// the kit's `<subject> send` / `<subject> process` spans (tracing.ts) join in
// one trace.
//
// They run with or without an exporter: without one, the HTTP server span
// still gives a BFF request its trace id (for the logs) from the first line.
//
// The standard OTEL_* variables set it up (docs/tracing.md). The process is
// named by OTEL_SERVICE_NAME, else by the registry (subjects/services.ts)
// entry of the folder of its entry script, else by that script's path.
import { dirname, relative, resolve } from 'node:path';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { PgInstrumentation } from '@opentelemetry/instrumentation-pg';
import { GraphQLInstrumentation } from '@opentelemetry/instrumentation-graphql';
import { FastifyOtelInstrumentation } from '@fastify/otel';
import { processByFolder } from '../../subjects/services.ts';
import { startTracing } from './tracing.ts';

/** Probes and scrapes of the operations port and the BFF's health: not worth a trace each. */
const isProbe = (path: string | undefined) => /^\/(metrics|health\/)/.test(path ?? '');

/** The registry name of the process whose entry script is `script`, else the script's path in the project. */
function processName(script: string | undefined): string {
  if (!script) return 'unknown_service:node';
  const root = resolve(import.meta.dirname, '../..');
  const path = relative(root, resolve(script));
  return processByFolder(dirname(path))?.name ?? path.replace(/\.[cm]?[jt]s$/, '');
}

startTracing(processName(process.argv[1]), process.env.ZIPKIN_URL, {
  instrumentations: [
    new HttpInstrumentation({ ignoreIncomingRequestHook: (request) => isProbe(request.url) }),
    // Only inside a request or an event: the outbox relay's sweeps would otherwise start a trace every second.
    new PgInstrumentation({ requireParentSpan: true }),
    new GraphQLInstrumentation({ mergeItems: true, ignoreTrivialResolveSpans: true }),
    new FastifyOtelInstrumentation({ registerOnInitialization: true, ignorePaths: ({ url }) => isProbe(url) }),
  ],
});
