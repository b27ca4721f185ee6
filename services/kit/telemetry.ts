// Telemetry that must start before anything else: every main.ts imports this
// file first, so the official OpenTelemetry instrumentations hook `http`,
// `pg`, `fastify` and `graphql` before any of them is loaded (ES modules run
// their imports in order; these are CommonJS modules, patched as they load).
// Their spans go to the tracer provider that startTracing() registers a
// moment later (tracing.ts), so they join the kit's own `<subject> send` /
// `<subject> process` spans in one trace.
//
// Only when ZIPKIN_URL is set: without an exporter there is nobody to tell,
// and the hooks would only cost time.
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { PgInstrumentation } from '@opentelemetry/instrumentation-pg';
import { GraphQLInstrumentation } from '@opentelemetry/instrumentation-graphql';
import { FastifyOtelInstrumentation } from '@fastify/otel';

/** Probes and scrapes of the operations port and the BFF's health: not worth a trace each. */
const isProbe = (path: string | undefined) => /^\/(metrics|health\/)/.test(path ?? '');

if (process.env.ZIPKIN_URL) {
  registerInstrumentations({
    instrumentations: [
      new HttpInstrumentation({ ignoreIncomingRequestHook: (request) => isProbe(request.url) }),
      // Only inside a request or an event: the outbox relay's sweeps would otherwise start a trace every second.
      new PgInstrumentation({ requireParentSpan: true }),
      new GraphQLInstrumentation({ mergeItems: true, ignoreTrivialResolveSpans: true }),
      new FastifyOtelInstrumentation({ registerOnInitialization: true, ignorePaths: ({ url }) => isProbe(url) }),
    ],
  });
}
