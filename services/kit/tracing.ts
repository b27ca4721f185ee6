// OpenTelemetry in one process: the SDK (NodeSDK, set up by the standard
// OTEL_* variables) and trace context across NATS.
//
// Every request and event carries the W3C `traceparent` and `tracestate`
// (and `baggage`, when there is some) in its NATS headers, written and read
// by the registered propagators through nats.js's own headers. The kit's
// spans are `<subject> send` (the caller or producer) and `<subject> process`
// (the server or consumer), with the messaging attributes.
//
// docs/tracing.md says where traces go, what each variable does, and why a
// process without an exporter still makes trace ids but records nothing.
import {
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
import { NodeSDK, type NodeSDKConfiguration } from '@opentelemetry/sdk-node';
import { AlwaysOffSampler, NoopSpanProcessor, ParentBasedSampler } from '@opentelemetry/sdk-trace';
import { ZipkinExporter } from '@opentelemetry/exporter-zipkin';
import { headers as natsHeaders, type Msg, type MsgHdrs } from 'nats';

const TRACER_NAME = 'shop-kit';

let sdk: NodeSDK | undefined;
let tracer = trace.getTracer(TRACER_NAME);

export interface TracingOptions {
  /** Instrumentations of libraries (telemetry.ts passes http, pg, fastify and graphql). */
  instrumentations?: NodeSDKConfiguration['instrumentations'];
}

/**
 * Starts OpenTelemetry for this process, once: telemetry.ts does it first
 * thing in every process; tests and benches that run a service in their own
 * process call it themselves. Later calls change nothing.
 *
 * `serviceName` names the process unless OTEL_SERVICE_NAME is set.
 * `zipkinUrl` (ZIPKIN_URL) is a shorthand for the Zipkin exporter at that
 * URL, unless OTEL_TRACES_EXPORTER names the exporters itself.
 */
export function startTracing(serviceName: string, zipkinUrl?: string, { instrumentations = [] }: TracingOptions = {}): void {
  if (sdk) return;
  sdk = new NodeSDK({
    ...(process.env.OTEL_SERVICE_NAME ? {} : { serviceName }),
    ...traceExport(zipkinUrl, process.env),
    instrumentations,
    // Traces only: metrics are Prometheus on the operations port (metrics.ts), logs JSON lines on stdout (log.ts).
    metricReaders: [],
    logRecordProcessors: [],
  });
  sdk.start();
  tracer = trace.getTracer(TRACER_NAME);
}

/**
 * Where spans go. NodeSDK reads OTEL_TRACES_EXPORTER and each exporter's own
 * variables; this only adds the ZIPKIN_URL shorthand and decides the case
 * with no exporter at all, where NodeSDK would either send to an OTLP
 * collector on localhost (nothing set) or register no tracer (`none`).
 */
function traceExport(zipkinUrl: string | undefined, env: NodeJS.ProcessEnv): Partial<NodeSDKConfiguration> {
  const named = (env.OTEL_TRACES_EXPORTER ?? '')
    .split(',')
    .map((name) => name.trim())
    .filter(Boolean);
  if (named.length > 0 && named.join() !== 'none') return {};
  if (named.length === 0) {
    if (zipkinUrl) return { traceExporter: new ZipkinExporter({ url: zipkinUrl }) };
    if (env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) return {};
  }
  // No exporter: a tracer all the same, so that every request and event has
  // trace and span ids for the logs and passes its trace on. Nothing is
  // exported, so nothing of our own is recorded (parentbased_always_off); a
  // trace sampled upstream stays sampled through this process.
  return {
    spanProcessors: [new NoopSpanProcessor()],
    ...(env.OTEL_TRACES_SAMPLER ? {} : { sampler: new ParentBasedSampler({ root: new AlwaysOffSampler() }) }),
  };
}

/** Exports the spans still waiting, then stops; a later startTracing starts afresh (tests). */
export async function stopTracing(): Promise<void> {
  const running = sdk;
  sdk = undefined;
  if (!running) return;
  await running.shutdown();
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

export { SpanKind, context };
