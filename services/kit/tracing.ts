// OpenTelemetry in one process: the SDK, set up by the standard OTEL_*
// variables, and trace context across NATS.
//
// Every request and event carries the W3C `traceparent` and `tracestate`
// (and `baggage`, when there is some) in its NATS headers, written and read
// by the registered propagators through nats.js's own headers. The kit's
// spans are `<subject> send` (the caller or producer) and `<subject> process`
// (the server or consumer), with the messaging attributes.
//
// Tracing costs what it records. With an exporter, NodeSDK (loaded then,
// with the exporters it names) and every instrumentation the caller gives.
// Without one, the SDK's tracer alone, whose spans record nothing: trace ids
// for the logs and context carried on, nothing else loaded or done.
// docs/tracing.md says where traces go, what each variable does, and why.
import { createServer, type IncomingMessage, type Server, type ServerOptions, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import {
  ROOT_CONTEXT,
  context,
  propagation,
  trace,
  SpanKind,
  SpanStatusCode,
  type Context,
  type Span,
  type TextMapGetter,
  type TextMapSetter,
} from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { CompositePropagator, RPCType, W3CBaggagePropagator, W3CTraceContextPropagator, getRPCMetadata } from '@opentelemetry/core';
import type { NodeSDKConfiguration } from '@opentelemetry/sdk-node';
import { AlwaysOffSampler, NoopSpanProcessor, ParentBasedSampler, TracerProvider } from '@opentelemetry/sdk-trace';
import type { FastifyInstance } from 'fastify';
import { headers as natsHeaders, type Msg, type MsgHdrs } from 'nats';

const TRACER_NAME = 'shop-kit';
// What only an exporting process needs, loaded only there.
const require = createRequire(import.meta.url);

/** Stops what startTracing started; undefined while nothing runs. */
let running: (() => Promise<void>) | undefined;
/** Whether spans are exported (then instrumentation-http traces HTTP requests, see tracedHttpServer). */
let exporting = false;
let tracer = trace.getTracer(TRACER_NAME);

type Instrumentations = NonNullable<NodeSDKConfiguration['instrumentations']>;

export interface TracingOptions {
  /**
   * Instrumentations of libraries, made once startTracing knows whether
   * spans are exported: telemetry.ts passes http's, pg's and graphql's
   * only when `exporting` (without an exporter nobody sees their spans).
   */
  instrumentations?: (exporting: boolean) => Instrumentations;
}

/**
 * Starts OpenTelemetry for this process, once: telemetry.ts does it first
 * thing in every process; tests and benches that run a service in their own
 * process call it themselves. Later calls change nothing, and so does
 * OTEL_SDK_DISABLED=true.
 *
 * `serviceName` names the process unless OTEL_SERVICE_NAME is set.
 * `zipkinUrl` (ZIPKIN_URL) is a shorthand for the Zipkin exporter at that
 * URL, unless OTEL_TRACES_EXPORTER names the exporters itself.
 */
export function startTracing(serviceName: string, zipkinUrl?: string, { instrumentations = () => [] }: TracingOptions = {}): void {
  const env = process.env;
  if (running || env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return;
  const exporter = traceExport(zipkinUrl, env);
  exporting = exporter !== undefined;
  running =
    exporter || env.OTEL_TRACES_SAMPLER || env.OTEL_PROPAGATORS
      ? startNodeSdk(serviceName, exporter, instrumentations(exporter !== undefined))
      : startIdsOnly(instrumentations(false));
  tracer = trace.getTracer(TRACER_NAME);
}

/**
 * NodeSDK, set up by the standard variables, for a process that exports
 * (or that names its own sampler or propagators). `exporter` undefined: none.
 */
function startNodeSdk(serviceName: string, exporter: Partial<NodeSDKConfiguration> | undefined, instrumentations: Instrumentations) {
  const { NodeSDK } = require('@opentelemetry/sdk-node') as typeof import('@opentelemetry/sdk-node');
  const sdk = new NodeSDK({
    ...(process.env.OTEL_SERVICE_NAME ? {} : { serviceName }),
    // No exporter, but a sampler or propagators of its own: as below, through NodeSDK.
    ...(exporter ?? { spanProcessors: [new NoopSpanProcessor()], ...(process.env.OTEL_TRACES_SAMPLER ? {} : { sampler: idsOnly() }) }),
    instrumentations,
    // Traces only: metrics are Prometheus on the operations port (metrics.ts), logs JSON lines on stdout (log.ts).
    metricReaders: [],
    logRecordProcessors: [],
  });
  sdk.start();
  return () => sdk.shutdown();
}

/**
 * No exporter: what NodeSDK would register, without loading it. Its tracer
 * makes trace and span ids for every request and event (the logs' trace_id)
 * and the W3C propagators carry them on; the sampler records nothing of the
 * shop's own, and a trace that arrives sampled stays sampled (the processes
 * further on that export still record their part of it).
 */
function startIdsOnly(instrumentations: Instrumentations) {
  const provider = new TracerProvider({ sampler: idsOnly() });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()] }));
  trace.setGlobalTracerProvider(provider);
  for (const instrumentation of instrumentations.flat()) instrumentation.setTracerProvider(provider);
  return () => provider.shutdown();
}

/** parentbased_always_off: ids for every span, recording only what a caller records. */
const idsOnly = () => new ParentBasedSampler({ root: new AlwaysOffSampler() });

/**
 * The exporters when the variables name some, else undefined. NodeSDK reads
 * OTEL_TRACES_EXPORTER and each exporter's own variables; this only adds the
 * ZIPKIN_URL shorthand and decides the case with no exporter at all, where
 * NodeSDK would either send to an OTLP collector on localhost (nothing set)
 * or register no tracer (`none`).
 */
function traceExport(zipkinUrl: string | undefined, env: NodeJS.ProcessEnv): Partial<NodeSDKConfiguration> | undefined {
  const named = (env.OTEL_TRACES_EXPORTER ?? '')
    .split(',')
    .map((name) => name.trim())
    .filter(Boolean);
  if (named.length > 0) return named.join() === 'none' ? undefined : {};
  if (zipkinUrl) {
    const { ZipkinExporter } = require('@opentelemetry/exporter-zipkin') as typeof import('@opentelemetry/exporter-zipkin');
    return { traceExporter: new ZipkinExporter({ url: zipkinUrl }) };
  }
  if (env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) return {};
  return undefined;
}

/** Exports the spans still waiting, then stops; a later startTracing starts afresh (tests). */
export async function stopTracing(): Promise<void> {
  const stop = running;
  running = undefined;
  exporting = false;
  if (!stop) return;
  await stop();
  trace.disable();
  propagation.disable();
  context.disable();
  tracer = trace.getTracer(TRACER_NAME);
}

const headerSetter: TextMapSetter<MsgHdrs> = {
  set: (headers, key, value) => headers.set(key, value),
};

/** A message's headers by name, read in one pass: the propagators look up several names, each lookup a scan in nats.js. */
type HeaderValues = Map<string, string[]>;
const headerGetter: TextMapGetter<HeaderValues> = {
  keys: (headers) => [...headers.keys()],
  get: (headers, key) => headers.get(key),
};

/** Writes the trace context of `from` (the active one by default) into a message's headers. */
export function injectTraceContext(headers: MsgHdrs, from: Context = context.active()): void {
  propagation.inject(from, headers, headerSetter);
}

/** The active context continued with the trace context a message's headers carry. */
function extractTraceContext(headers: MsgHdrs | undefined): Context {
  const active = context.active();
  return headers ? propagation.extract(active, new Map(headers), headerGetter) : active;
}

/**
 * The trace context of a received message. A header block nats.js cannot
 * decode (a key it refuses) throws when read: such a message starts a trace
 * of its own, and is handled all the same.
 */
export function incomingTraceContext(msg: Pick<Msg, 'headers'>): Context {
  let headers: MsgHdrs | undefined;
  try {
    headers = msg.headers;
  } catch {
    headers = undefined;
  }
  return extractTraceContext(headers);
}

/** Trace context as a plain object, for keeping in an outbox row. */
export function currentTraceCarrier(): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier;
}

export type MessagingOperation = 'send' | 'process';

function messagingSpan(subject: string, operation: MessagingOperation, kind: SpanKind, parent: Context): Span {
  return tracer.startSpan(
    `${subject} ${operation}`,
    {
      kind,
      attributes: {
        'messaging.system': 'nats',
        'messaging.destination.name': subject,
        'messaging.operation.type': operation,
      },
    },
    parent,
  );
}

function endSpan(span: Span, error?: unknown): void {
  if (error !== undefined) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
  }
  span.end();
}

/**
 * Runs `work` inside a span `<subject> <operation>` whose parent is `parent`,
 * recording a failure on the span. `work` starts at once, before this returns.
 */
export function withMessagingSpan<T>(
  subject: string,
  operation: MessagingOperation,
  kind: SpanKind,
  parent: Context,
  work: (span: Span) => Promise<T>,
): Promise<T> {
  const span = messagingSpan(subject, operation, kind, parent);
  return context.with(trace.setSpan(parent, span), async () => {
    try {
      const result = await work(span);
      endSpan(span);
      return result;
    } catch (error) {
      endSpan(span, error);
      throw error;
    }
  });
}

/** The trace side of one message sent now and answered later: its headers, and the end of its span. */
export interface OutgoingTrace {
  /** Headers carrying the trace context; undefined when no propagator is registered (nothing to carry). */
  readonly headers: MsgHdrs | undefined;
  /** Ends the `<subject> send` span, marked failed when `error` is given. */
  end(error?: unknown): void;
}

/**
 * Starts the `<subject> send` span of a request, a child of `parent`: no
 * work runs inside it, only its context reaches the headers; the reply (or
 * the timeout) ends it.
 */
export function startSend(subject: string, kind: SpanKind, parent: Context = context.active()): OutgoingTrace {
  const span = messagingSpan(subject, 'send', kind, parent);
  const headers = natsHeaders();
  propagation.inject(trace.setSpan(parent, span), headers, headerSetter);
  return {
    headers: headers.keys().length > 0 ? headers : undefined,
    end: (error) => endSpan(span, error),
  };
}

/** What fastify gives a server factory (its options, with its defaults filled in). */
interface HttpServerSettings {
  http?: ServerOptions | null;
  connectionTimeout?: number;
  keepAliveTimeout?: number;
  requestTimeout?: number;
  maxRequestsPerSocket?: number;
}

/**
 * A fastify `serverFactory`: the HTTP server fastify would make, whose
 * requests each run in a trace, continuing a caller's `traceparent`, from
 * their first log line ("incoming request") to their last.
 *
 * When spans are exported, instrumentation-http does that (and records the
 * server span); then this is fastify's server as it is. Without an exporter
 * telemetry.ts does not load instrumentation-http: its span would record
 * nothing, and it costs a BFF request two to three times as much as all the
 * rest of tracing (it binds the request's and response's event listeners to
 * the trace and works out the span's attributes, sampled or not). Here, that
 * span is the SDK tracer's own, non-recording (unless the caller records the
 * trace): ids for the logs, a parent for the NATS calls, nothing else.
 */
export function tracedHttpServer(
  handler: (request: IncomingMessage, response: ServerResponse) => void,
  settings: HttpServerSettings,
): Server {
  const server = createServer(
    settings.http ?? {},
    exporting || !running
      ? handler
      : (request, response) => {
          const parent = propagation.extract(ROOT_CONTEXT, request.headers);
          const span = tracer.startSpan(request.method ?? 'HTTP', { kind: SpanKind.SERVER }, parent);
          response.once('close', () => span.end());
          context.with(trace.setSpan(parent, span), handler, undefined, request, response);
        },
  );
  // As fastify sets them on a server of its own making.
  if (settings.keepAliveTimeout !== undefined) server.keepAliveTimeout = settings.keepAliveTimeout;
  if (settings.requestTimeout !== undefined) server.requestTimeout = settings.requestTimeout;
  if (settings.connectionTimeout !== undefined) server.setTimeout(settings.connectionTimeout);
  if (settings.maxRequestsPerSocket) server.maxRequestsPerSocket = settings.maxRequestsPerSocket;
  return server;
}

/**
 * Names each HTTP request's server span (instrumentation-http's) by the
 * route that served it, `POST /graphql`, with `http.route`: the route
 * travels to the instrumentation in the request's RPC metadata, as the
 * frameworks' own instrumentations pass it.
 */
export function traceHttpRoutes(app: FastifyInstance): void {
  // Without an exporter there is no such span (nor a name anyone would see): no hook.
  if (!exporting) return;
  app.addHook('onRequest', (request, _reply, done) => {
    const rpc = getRPCMetadata(context.active());
    if (rpc?.type === RPCType.HTTP && request.routeOptions.url) rpc.route = request.routeOptions.url;
    done();
  });
}

export { SpanKind, context };
