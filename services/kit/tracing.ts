// Trace context across NATS: W3C `traceparent`/`tracestate` ride in message
// headers on every request and event. Spans are OpenTelemetry spans named
// `<subject> send` and `<subject> process`; they are exported to Zipkin when
// ZIPKIN_URL is set, and otherwise only carried.
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
import { NodeTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-node';
import { ZipkinExporter } from '@opentelemetry/exporter-zipkin';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import type { MsgHdrs } from 'nats';

let provider: NodeTracerProvider | undefined;

/** Starts tracing for this process once; later calls are no-ops (tests run several services in one process). */
export function startTracing(service: string, zipkinUrl?: string): void {
  if (provider) return;
  provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: service }),
    spanProcessors: zipkinUrl ? [new BatchSpanProcessor(new ZipkinExporter({ url: zipkinUrl, serviceName: service }))] : [],
  });
  // Registers the W3C trace-context propagator and the AsyncLocalStorage context manager.
  provider.register();
}

export async function stopTracing(): Promise<void> {
  await provider?.shutdown();
  provider = undefined;
}

const headerSetter: TextMapSetter<MsgHdrs> = {
  set: (carrier, key, value) => carrier.set(key, value),
};
const headerGetter: TextMapGetter<MsgHdrs | undefined> = {
  keys: (carrier) => (carrier ? carrier.keys() : []),
  get: (carrier, key) => (carrier?.has(key) ? carrier.get(key) : undefined),
};

export function injectTraceContext(headers: MsgHdrs, from: Context = context.active()): void {
  propagation.inject(from, headers, headerSetter);
}

export function extractTraceContext(headers: MsgHdrs | undefined): Context {
  if (!headers) return context.active();
  return propagation.extract(context.active(), headers, headerGetter);
}

/** Trace context as a plain object, for keeping in an outbox row. */
export function currentTraceCarrier(): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier;
}

const tracer = () => trace.getTracer('shop-kit');

export type MessagingOperation = 'send' | 'process';

/**
 * Runs `work` inside a span `<subject> <operation>` whose parent is `parent`
 * (the active context by default), recording failures on the span.
 */
export function withMessagingSpan<T>(
  subject: string,
  operation: MessagingOperation,
  kind: SpanKind,
  parent: Context,
  work: (span: Span) => Promise<T>,
): Promise<T> {
  const span = tracer().startSpan(
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
  return context.with(trace.setSpan(parent, span), async () => {
    try {
      return await work(span);
    } catch (error) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
      throw error;
    } finally {
      span.end();
    }
  });
}

export { SpanKind, context };
