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
// generic OpenTelemetry path. On the request-reply hot path (rpc-client.ts,
// rpc-server.ts, bench/rpc.ts) a request's header block is written straight
// from the ids, read back from its bytes when it holds only a traceparent, and
// a request's span is made only if something asks for it.
import { randomFillSync } from 'node:crypto';
import {
  context,
  createTraceState,
  ROOT_CONTEXT,
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
import { MsgHdrsImpl, headers as natsHeaders, type Msg, type MsgHdrs } from 'nats';

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
    const remote = remoteParent(headers);
    if (remote !== GENERIC) return remote ? trace.setSpanContext(active, remote) : active;
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

/**
 * Runs `work(arg)` inside the `<subject> process` span of a received message,
 * continuing the trace its headers carry: extractTraceContext and
 * withMessagingSpan in one step. On the carried path that saves building the
 * parent's context only to derive the child from it, and `arg` spares the
 * caller a closure per message.
 */
export function withIncomingSpan<A, T>(
  subject: string,
  kind: SpanKind,
  msg: Pick<Msg, 'headers'>,
  work: (arg: A) => Promise<T>,
  arg: A,
): Promise<T> {
  let sole: string | undefined;
  let headers: MsgHdrs | undefined;
  try {
    sole = carryOnly ? soleTraceparent(msg) : undefined;
    if (sole === undefined) headers = msg.headers;
  } catch {
    // A header block nats.js cannot decode (a key it refuses): no trace context to continue, the work runs all the same.
  }
  if (carryOnly) {
    const remote = sole !== undefined ? parseTraceparent(sole, undefined) : headers ? remoteParent(headers) : undefined;
    if (remote !== GENERIC) {
      const active = context.active();
      try {
        // A valid traceparent names the parent; without one the active span (if any) is.
        return context.with(carriedSpanContext(active, remote ?? validSpanContext(active)), work, undefined, arg);
      } catch (error) {
        return Promise.reject(error);
      }
    }
  }
  return withMessagingSpan(subject, 'process', kind, extractTraceContext(headers), () => work(arg));
}

/** The API's key of the active span: created with Symbol.for, so that every copy of the API finds the same one. */
const SPAN_KEY = Symbol.for('OpenTelemetry Context Key SPAN');

/**
 * `parent` with a carried child of `of` as its active span (the root of a new
 * trace when `of` is undefined): trace.setSpan(parent, child), made cheaper
 * for a context built per request. The span is made when first asked for (a
 * lookup that logs nothing and calls nothing onwards never asks), and the
 * parent's map is not copied (BaseContext copies it and makes three
 * closures). Setting or deleting a value builds a regular context.
 */
class CarriedSpanContext implements Context {
  readonly #parent: Context;
  readonly #of: SpanContext | undefined;
  #span: CarriedSpan | undefined;
  constructor(parent: Context, of: SpanContext | undefined) {
    this.#parent = parent;
    this.#of = of;
  }
  #active(): CarriedSpan {
    return (this.#span ??= this.#of ? carriedChildOf(this.#of) : carriedRoot());
  }
  getValue(key: symbol): unknown {
    return key === SPAN_KEY ? this.#active() : this.#parent.getValue(key);
  }
  setValue(key: symbol, value: unknown): Context {
    return trace.setSpan(this.#parent, this.#active()).setValue(key, value);
  }
  deleteValue(key: symbol): Context {
    return trace.setSpan(this.#parent, this.#active()).deleteValue(key);
  }
}

/**
 * CarriedSpanContext if the API finds the span under SPAN_KEY (the key is not
 * part of its contract, so this is checked once, at start), else trace.setSpan.
 */
const carriedSpanContext: (parent: Context, of: SpanContext | undefined) => Context = (() => {
  const probe = trace.wrapSpanContext({ traceId: '1'.repeat(32), spanId: '1'.repeat(16), traceFlags: TraceFlags.NONE });
  const works = trace.getSpan(ROOT_CONTEXT.setValue(SPAN_KEY, probe)) === probe;
  return works
    ? (parent, of) => new CarriedSpanContext(parent, of)
    : (parent, of) => trace.setSpan(parent, of ? carriedChildOf(of) : carriedRoot());
})();

/** A header block holding only a traceparent, as startSend writes it: 82 bytes, the value at 23-78. */
const SOLE_TRACEPARENT_PREFIX = Buffer.from('NATS/1.0\r\ntraceparent: ', 'latin1');
const SOLE_TRACEPARENT_LENGTH = SOLE_TRACEPARENT_PREFIX.length + 55 + 4;

/**
 * The traceparent of a message whose header block is that one header (what
 * the kit's clients send), read from the block's bytes; undefined otherwise,
 * and the headers are then read as usual. nats.js decodes a header block into
 * a map in several string passes (~1 µs, on every request); this looks at its
 * message internals (2.29: `_msg.hdr`, the block's length, and `_rdata`),
 * through the wrapper of a service message, and gives up on any other shape.
 */
function soleTraceparent(msg: Pick<Msg, 'headers'>): string | undefined {
  const impl = ((msg as { msg?: unknown }).msg ?? msg) as { _msg?: { hdr?: unknown }; _rdata?: unknown };
  const raw = impl._rdata;
  if (impl._msg?.hdr !== SOLE_TRACEPARENT_LENGTH || !(raw instanceof Uint8Array) || raw.length < SOLE_TRACEPARENT_LENGTH) return undefined;
  const end = SOLE_TRACEPARENT_LENGTH - 4;
  if (raw[end] !== 13 || raw[end + 1] !== 10 || raw[end + 2] !== 13 || raw[end + 3] !== 10) return undefined;
  for (let i = 0; i < SOLE_TRACEPARENT_PREFIX.length; i++) if (raw[i] !== SOLE_TRACEPARENT_PREFIX[i]) return undefined;
  return Buffer.from(raw.buffer, raw.byteOffset + SOLE_TRACEPARENT_PREFIX.length, 55).toString('latin1');
}

/** The trace context not to take the carried path for (baggage). */
const GENERIC = Symbol('generic');

/** The span context a message's headers carry, undefined when none (or not valid), GENERIC when they need the propagators. */
function remoteParent(headers: MsgHdrs): SpanContext | undefined | typeof GENERIC {
  let traceparent: string | undefined;
  let tracestate: string | undefined;
  // One pass over the entries instead of a lookup per name.
  for (const [key, values] of headers) {
    if (key === TRACEPARENT) traceparent = values[0];
    else if (key === TRACESTATE) tracestate = values.join(',');
    else if (key === BAGGAGE) return GENERIC;
  }
  return traceparent === undefined ? undefined : parseTraceparent(traceparent, tracestate);
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
    if (!parentContext || !trace.isSpanContextValid(parentContext)) {
      return { headers: new TraceparentHeaders(undefined, TraceFlags.SAMPLED), end: endNothing };
    }
    const state = parentContext.traceState?.serialize();
    if (!state) return { headers: new TraceparentHeaders(parentContext.traceId, parentContext.traceFlags), end: endNothing };
    const headers = new TraceHeaders();
    // Hex ids and a number: nothing for the header checks of append() to refuse.
    headers.headers.set(TRACEPARENT, [traceparent(parentContext.traceId, newSpanId(), parentContext.traceFlags)]);
    headers.append(TRACESTATE, state);
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
  const parentContext = validSpanContext(parent);
  return parentContext ? carriedChildOf(parentContext) : carriedRoot();
}

/** The span context of `from`'s active span, when there is a valid one. */
function validSpanContext(from: Context): SpanContext | undefined {
  const spanContext = trace.getSpanContext(from);
  return spanContext && trace.isSpanContextValid(spanContext) ? spanContext : undefined;
}

/** The root of a new trace, sampled as the SDK's default sampler would. */
function carriedRoot(): CarriedSpan {
  return new CarriedSpan({ traceId: newTraceId(), spanId: newSpanId(), traceFlags: TraceFlags.SAMPLED }, undefined);
}

/** A carried child of a valid span context. */
function carriedChildOf(parentContext: SpanContext): CarriedSpan {
  const own: SpanContext = { traceId: parentContext.traceId, spanId: newSpanId(), traceFlags: parentContext.traceFlags };
  if (parentContext.traceState) own.traceState = parentContext.traceState;
  return new CarriedSpan(own, parentContext);
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

/** `NATS/1.0\r\ntraceparent: 00-<trace id>-<span id>-<flags>\r\n\r\n`, the offsets of its parts, and the value's. */
const TRACEPARENT_BLOCK = Buffer.from(`NATS/1.0\r\ntraceparent: 00-${'0'.repeat(32)}-${'0'.repeat(16)}-00\r\n\r\n`, 'latin1');
const TRACE_ID_AT = 26;
const SPAN_ID_AT = 59;
const FLAGS_AT = 76;
const VALUE_AT = 23;

/**
 * Headers holding only a traceparent, the header block written once,
 * straight from the ids (random ones from the pool as hex, no strings in
 * between): what a request without tracestate or baggage sends. The map holds
 * the same value for whatever reads the headers; once they are changed,
 * encode() falls back to nats.js's way.
 */
class TraceparentHeaders extends MsgHdrsImpl {
  readonly #block: Buffer;
  readonly #values: string[];
  /** A child of the trace `traceId` (hex), or the root of a new trace when undefined. */
  constructor(traceId: string | undefined, traceFlags: number) {
    super();
    const block = Buffer.allocUnsafe(TRACEPARENT_BLOCK.length);
    TRACEPARENT_BLOCK.copy(block);
    if (traceId === undefined) writeRandomId(block, TRACE_ID_AT, 16);
    else block.write(traceId, TRACE_ID_AT, 'latin1');
    writeRandomId(block, SPAN_ID_AT, 8);
    block[FLAGS_AT] = HEX_DIGITS[(traceFlags >> 4) & 15]!;
    block[FLAGS_AT + 1] = HEX_DIGITS[traceFlags & 15]!;
    this.#block = block;
    this.#values = [block.toString('latin1', VALUE_AT, FLAGS_AT + 2)];
    this.headers.set(TRACEPARENT, this.#values);
  }
  override encode(): Uint8Array {
    const unchanged = this.headers.size === 1 && this.headers.get(TRACEPARENT) === this.#values && this.#values.length === 1;
    return unchanged ? this.#block : Buffer.from(this.toString());
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

const HEX_DIGITS = Buffer.from('0123456789abcdef', 'latin1');

/** Writes a random id of `bytes` bytes, not all zero, as lower-case hex into `target` at `at`. */
function writeRandomId(target: Buffer, at: number, bytes: number): void {
  if (idOffset + bytes > idPool.length) {
    randomFillSync(idPool);
    idOffset = 0;
  }
  let any = 0;
  for (let i = 0; i < bytes; i++) {
    const byte = idPool[idOffset + i]!;
    any |= byte;
    target[at + 2 * i] = HEX_DIGITS[byte >> 4]!;
    target[at + 2 * i + 1] = HEX_DIGITS[byte & 15]!;
  }
  idOffset += bytes;
  if (any === 0) writeRandomId(target, at, bytes);
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
