// Trace context across NATS: W3C `traceparent`/`tracestate` ride in message
// headers on every request and event. Spans are OpenTelemetry spans named
// `<subject> send` and `<subject> process`; they are exported to Zipkin when
// ZIPKIN_URL is set, and otherwise only carried.
//
// "Only carried" has a fast path: with no exporter a recorded span is thrown
// away at its end, yet creating one (ids, clock reads, attributes) and
// running the generic propagators cost more than the rest of a request's
// trip through the kit. So while this module's provider runs without an
// exporter, messaging spans are light `CarriedSpan`s: new span ids in the
// caller's trace, the same sampling flag, the same context handling, and
// traceparent written and read directly. Anything unusual (baggage) takes the
// generic OpenTelemetry path.
import { randomFillSync } from 'node:crypto';
import {
  context,
  createTraceState,
  propagation,
  trace,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  type Context,
  type Span,
  type SpanContext,
  type TextMapGetter,
  type TextMapSetter,
} from '@opentelemetry/api';
import { NodeTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-node';
import { ZipkinExporter } from '@opentelemetry/exporter-zipkin';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import { MsgHdrsImpl, headers as natsHeaders, type MsgHdrs } from 'nats';

let provider: NodeTracerProvider | undefined;
/** True while our provider runs without an exporter: messaging spans are carried, not recorded. */
let carryOnly = false;

/** Starts tracing for this process once; later calls are no-ops (tests run several services in one process). */
export function startTracing(service: string, zipkinUrl?: string): void {
  if (provider) return;
  provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: service }),
    spanProcessors: zipkinUrl ? [new BatchSpanProcessor(new ZipkinExporter({ url: zipkinUrl, serviceName: service }))] : [],
  });
  // Registers the W3C trace-context propagator and the AsyncLocalStorage context manager.
  provider.register();
  carryOnly = !zipkinUrl;
}

export async function stopTracing(): Promise<void> {
  carryOnly = false;
  await provider?.shutdown();
  provider = undefined;
}

const TRACEPARENT = 'traceparent';
const TRACESTATE = 'tracestate';
const BAGGAGE = 'baggage';

const headerSetter: TextMapSetter<MsgHdrs> = {
  set: (carrier, key, value) => carrier.set(key, value),
};
const headerGetter: TextMapGetter<MsgHdrs | undefined> = {
  keys: (carrier) => (carrier ? carrier.keys() : []),
  get: (carrier, key) => (carrier?.has(key) ? carrier.get(key) : undefined),
};

export function injectTraceContext(headers: MsgHdrs, from: Context = context.active()): void {
  if (carryOnly && !propagation.getBaggage(from)) {
    const spanContext = trace.getSpanContext(from);
    if (spanContext && trace.isSpanContextValid(spanContext)) writeTraceHeaders(headers, spanContext, spanContext.spanId);
    return;
  }
  propagation.inject(from, headers, headerSetter);
}

export function extractTraceContext(headers: MsgHdrs | undefined): Context {
  const active = context.active();
  if (!headers) return active;
  if (carryOnly) {
    let traceparent: string | undefined;
    let tracestate: string | undefined;
    let generic = false;
    // One pass over the entries instead of a lookup per name.
    for (const [key, values] of headers) {
      if (key === TRACEPARENT) traceparent = values[0];
      else if (key === TRACESTATE) tracestate = values.join(',');
      else if (key === BAGGAGE) generic = true;
    }
    if (!generic) {
      const spanContext = traceparent === undefined ? undefined : parseTraceparent(traceparent, tracestate);
      return spanContext ? trace.setSpanContext(active, spanContext) : active;
    }
  }
  return propagation.extract(active, headers, headerGetter);
}

/** Trace context as a plain object, for keeping in an outbox row. */
export function currentTraceCarrier(): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier;
}

const tracer = () => trace.getTracer('shop-kit');

export type MessagingOperation = 'send' | 'process';

function messagingAttributes(subject: string, operation: MessagingOperation) {
  return {
    'messaging.system': 'nats',
    'messaging.destination.name': subject,
    'messaging.operation.type': operation,
  };
}

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
  if (carryOnly) {
    const span = carriedChild(parent);
    try {
      return context.with(trace.setSpan(parent, span), work, undefined, span);
    } catch (error) {
      return Promise.reject(error);
    }
  }
  const span = tracer().startSpan(`${subject} ${operation}`, { kind, attributes: messagingAttributes(subject, operation) }, parent);
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

/** The trace side of one outgoing message: the headers to send it with, and the end of its span. */
export interface OutgoingTrace {
  /** Headers carrying the trace context; undefined when there is none to carry (tracing not started). */
  readonly headers: MsgHdrs | undefined;
  /** Ends the `<subject> send` span, marked failed when `error` is given. */
  end(error?: unknown): void;
}

const endNothing = () => {};

/**
 * Starts the `<subject> send` span of a message sent now and answered later
 * (a request), without running anything inside it: the span's context only
 * has to reach the headers.
 */
export function startSend(subject: string, kind: SpanKind, parent: Context = context.active()): OutgoingTrace {
  if (carryOnly && !propagation.getBaggage(parent)) {
    const parentContext = trace.getSpanContext(parent);
    const headers = new TraceHeaders();
    if (parentContext && trace.isSpanContextValid(parentContext)) {
      // Hex ids and a number: nothing for the header checks of append() to refuse.
      headers.headers.set(TRACEPARENT, [traceparent(parentContext.traceId, newSpanId(), parentContext.traceFlags)]);
      const state = parentContext.traceState?.serialize();
      if (state) headers.append(TRACESTATE, state);
    } else {
      headers.headers.set(TRACEPARENT, [traceparent(newTraceId(), newSpanId(), TraceFlags.SAMPLED)]);
    }
    return { headers, end: endNothing };
  }
  const span = tracer().startSpan(`${subject} send`, { kind, attributes: messagingAttributes(subject, 'send') }, parent);
  const headers = natsHeaders();
  propagation.inject(trace.setSpan(parent, span), headers, headerSetter);
  return {
    // No propagator registered: nothing to carry, so no header block to encode, send and parse.
    headers: headers.keys().length > 0 ? headers : undefined,
    end(error) {
      if (error !== undefined) {
        span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
      }
      span.end();
    },
  };
}

// --- The carried (non-recorded) path -------------------------------------

/**
 * A span that is carried, not recorded: it has ids of its own in its
 * parent's trace and keeps the parent's sampling flag, so trace context and
 * log correlation work exactly as with a recorded span.
 */
class CarriedSpan implements Span {
  readonly #spanContext: SpanContext;
  /** Named as on the SDK's spans, so code that looks at a span's parent finds it. */
  readonly parentSpanContext: SpanContext | undefined;
  constructor(spanContext: SpanContext, parentSpanContext: SpanContext | undefined) {
    this.#spanContext = spanContext;
    this.parentSpanContext = parentSpanContext;
  }
  spanContext(): SpanContext {
    return this.#spanContext;
  }
  setAttribute(): this {
    return this;
  }
  setAttributes(): this {
    return this;
  }
  addEvent(): this {
    return this;
  }
  addLink(): this {
    return this;
  }
  addLinks(): this {
    return this;
  }
  setStatus(): this {
    return this;
  }
  updateName(): this {
    return this;
  }
  end(): void {}
  isRecording(): boolean {
    return false;
  }
  recordException(): void {}
}

function carriedChild(parent: Context): CarriedSpan {
  const parentContext = trace.getSpanContext(parent);
  if (parentContext && trace.isSpanContextValid(parentContext)) {
    const own: SpanContext = { traceId: parentContext.traceId, spanId: newSpanId(), traceFlags: parentContext.traceFlags };
    if (parentContext.traceState) own.traceState = parentContext.traceState;
    return new CarriedSpan(own, parentContext);
  }
  // A root, sampled as the SDK's default sampler would.
  return new CarriedSpan({ traceId: newTraceId(), spanId: newSpanId(), traceFlags: TraceFlags.SAMPLED }, undefined);
}

/** Writes traceparent (and tracestate) for a span `spanId` in the trace of `of`. */
function writeTraceHeaders(headers: MsgHdrs, of: SpanContext, spanId: string): void {
  headers.append(TRACEPARENT, traceparent(of.traceId, spanId, of.traceFlags));
  const state = of.traceState?.serialize();
  if (state) headers.append(TRACESTATE, state);
}

function traceparent(traceId: string, spanId: string, traceFlags: number): string {
  const flags = traceFlags & 0xff;
  return `00-${traceId}-${spanId}-${flags < 16 ? '0' : ''}${flags.toString(16)}`;
}

/**
 * nats.js's headers, encoded through a pooled Buffer instead of a
 * TextEncoder call: the header block is encoded again for every request.
 */
class TraceHeaders extends MsgHdrsImpl {
  override encode(): Uint8Array {
    return Buffer.from(this.toString());
  }
}

// version-traceid-parentid-flags, all lower-case hex; a future version may append fields.
const TRACEPARENT_FORMAT = /^[\da-f]{2}-[\da-f]{32}-[\da-f]{16}-[\da-f]{2}(?:-|$)/;
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_SPAN_ID = '0'.repeat(16);

/** A W3C traceparent as a remote span context, or undefined when it is not one. */
function parseTraceparent(header: string, tracestate: string | undefined): SpanContext | undefined {
  const value = header.trim();
  // A test and fixed offsets: cheaper than a regular expression with captures, on every request.
  if (!TRACEPARENT_FORMAT.test(value)) return undefined;
  const version = value.slice(0, 2);
  if (version === 'ff' || (version === '00' && value.length !== 55)) return undefined;
  const traceId = value.slice(3, 35);
  const spanId = value.slice(36, 52);
  if (traceId === ZERO_TRACE_ID || spanId === ZERO_SPAN_ID) return undefined;
  const spanContext: SpanContext = { traceId, spanId, traceFlags: Number.parseInt(value.slice(53, 55), 16), isRemote: true };
  if (tracestate) spanContext.traceState = createTraceState(tracestate);
  return spanContext;
}

// Random ids from a pool refilled in blocks: one call into crypto per 256 ids.
const idPool = Buffer.allocUnsafe(4096);
let idOffset = idPool.length;

function randomHex(bytes: number): string {
  if (idOffset + bytes > idPool.length) {
    randomFillSync(idPool);
    idOffset = 0;
  }
  const hex = idPool.toString('hex', idOffset, idOffset + bytes);
  idOffset += bytes;
  return hex;
}

function newTraceId(): string {
  let id = randomHex(16);
  while (id === ZERO_TRACE_ID) id = randomHex(16);
  return id;
}

function newSpanId(): string {
  let id = randomHex(8);
  while (id === ZERO_SPAN_ID) id = randomHex(8);
  return id;
}

export { SpanKind, context };
