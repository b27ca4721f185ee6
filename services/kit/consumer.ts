// The consumer runner: one durable pull consumer per event handler, shared by
// every instance of the service. For each message:
//   - an envelope or payload outside its contract is poison: straight to DLQ;
//   - otherwise, in one transaction, the event id goes into `inbox` and the
//     handler applies its effect; a redelivered event finds its id there and
//     is acknowledged without effect;
//   - ack only after commit; on failure `nak` with a growing delay, and after
//     the delivery limit the message goes to DLQ with its error, then `term`.
//
// A handler may take several messages per transaction (`batch`): the inbox
// rows of a batch go in with BEGIN as one statement and one COMMIT ends them
// all. `on` handles the events of a batch one after another; `onBatch` gets
// them together, to apply them in a few set-based statements. Batches form
// by themselves from what arrived while the previous ones ran, so a lone
// event is never held back. A batch that fails is rolled back whole and its
// messages are handled one by one, each with its own retries, so one bad
// event costs its neighbours nothing but the repeat.
import {
  AckPolicy,
  DeliverPolicy,
  headers as natsHeaders,
  nanos,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from 'nats';
import {
  EventEnvelope,
  checker,
  type Checker,
  deadLetterSubject,
  type EnvelopeOf,
  type EventContract,
} from '../../subjects/index.ts';
import pg from 'pg';
import { withTransaction, type Pool, type Tx } from './db.ts';
import type { Logger } from './log.ts';
import type { EventOutcome } from './metrics.ts';
import { SpanKind, context, extractTraceContext, withMessagingSpan } from './tracing.ts';
import type { Context } from '@opentelemetry/api';

const envelope: Checker<typeof EventEnvelope> = checker(EventEnvelope);
const { escapeLiteral } = pg;

export interface EventContext {
  log: Logger;
  /** How many times this message has been delivered (1 the first time). */
  delivery: number;
}

/** An event in hand: what a batch handler gets for each message. */
export interface Delivered<C extends EventContract = EventContract> {
  event: EnvelopeOf<C>;
  /** How many times its message has been delivered (1 the first time). */
  delivery: number;
  /**
   * The context of its `<subject> process` span: run what is done for this
   * event inside it (context.with), so that the events it causes
   * (writeEvent, writeEvents) carry its trace.
   */
  trace: Context;
}

export interface EventHandler<C extends EventContract = EventContract> {
  contract: C;
  /** Names the durable consumer: `<service>-<name>`. */
  name: string;
  /** Most events applied in one transaction; 1 gives each its own. */
  batch: number;
  /** Applies events new to the inbox, in delivery order, inside `tx`. */
  apply(events: Delivered<C>[], tx: Tx, log: Logger): Promise<void>;
}

export interface HandlerOptions {
  /**
   * Most events per transaction (default 1). Worth it where an event costs a
   * few statements: BEGIN, the inbox and COMMIT are then paid once per batch.
   * Not for a handler that waits on something slow (a remote call): with
   * `on`, its waits would add up inside one transaction.
   */
  batch?: number;
}

/** A handler of one event at a time (in batches, one after another in one transaction). */
export function on<C extends EventContract>(
  contract: C,
  name: string,
  handle: (event: EnvelopeOf<C>, tx: Tx, context: EventContext) => Promise<void>,
  options: HandlerOptions = {},
): EventHandler {
  return onBatch(
    contract,
    name,
    async (events, tx, log) => {
      for (const { event, delivery, trace } of events) await context.with(trace, () => handle(event, tx, { log, delivery }));
    },
    options,
  );
}

/** A handler given the events of a batch together (and single events as a batch of one). */
export function onBatch<C extends EventContract>(
  contract: C,
  name: string,
  apply: (events: Delivered<C>[], tx: Tx, log: Logger) => Promise<void>,
  options: HandlerOptions = {},
): EventHandler {
  const batch = Math.max(1, Math.trunc(options.batch ?? 1));
  return { contract, name, batch, apply } as unknown as EventHandler;
}

export interface ConsumerSettings {
  /** Deliveries before a failing message goes to DLQ. */
  maxDeliver: number;
  ackWaitMs: number;
  /** Messages of one consumer handled at once in one instance (in batches of the handler's `batch`). */
  concurrency: number;
  /** First `nak` delay; doubles with each delivery, up to `maxBackoffMs`. */
  backoffMs: number;
  maxBackoffMs: number;
}

// 12 deliveries with delays doubling from 250 ms to at most a minute: a
// remote outage of about four minutes is ridden out before a dead letter.
export const defaultConsumerSettings: ConsumerSettings = {
  maxDeliver: 12,
  ackWaitMs: 30_000,
  concurrency: 32,
  backoffMs: 250,
  maxBackoffMs: 60_000,
};

/** Headers a dead letter carries beside the original payload and headers. */
export const DeadLetterHeaders = {
  error: 'Shop-Dlq-Error',
  subject: 'Shop-Dlq-Subject',
  stream: 'Shop-Dlq-Stream',
  sequence: 'Shop-Dlq-Sequence',
  consumer: 'Shop-Dlq-Consumer',
  deliveries: 'Shop-Dlq-Deliveries',
} as const;

export interface RunningConsumer {
  readonly durable: string;
  readonly stream: string;
  /** True while this instance pulls from the consumer (for readiness). */
  readonly attached: boolean;
  /** Stops pulling, then waits (at most `timeoutMs`) for messages in hand. */
  stop(timeoutMs: number): Promise<void>;
}

export async function startConsumer(
  service: string,
  handler: EventHandler,
  deps: {
    js: JetStreamClient;
    jsm: JetStreamManager;
    pool: Pool;
    log: Logger;
    /** Told how each delivery ended and how long it took (metrics.ts). */
    metrics?: { eventHandled(consumer: string, subject: string, outcome: EventOutcome, seconds: number): void };
  },
  settings: ConsumerSettings = defaultConsumerSettings,
): Promise<RunningConsumer> {
  const contract: EventContract = handler.contract;
  const durable = `${service}-${handler.name}`;
  const log = deps.log.child({ consumer: durable, subject: contract.subject });
  const config = {
    durable_name: durable,
    filter_subject: contract.subject,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(settings.ackWaitMs),
    // The runner counts deliveries itself and sends the last one to DLQ; the server
    // must never stop redelivering on its own, or a failed DLQ write would lose it.
    max_deliver: -1,
    max_ack_pending: Math.max(1000, settings.concurrency * 4),
  };
  try {
    await deps.jsm.consumers.info(contract.stream, durable);
    await deps.jsm.consumers.update(contract.stream, durable, config);
  } catch (error) {
    if ((error as { code?: string }).code !== '404') throw error;
    await deps.jsm.consumers.add(contract.stream, config);
  }

  const consumer = await deps.js.consumers.get(contract.stream, durable);
  const messages: ConsumerMessages = await consumer.consume({ max_messages: settings.concurrency * 2 });

  /** The event in `msg`, or undefined when it breaks its contract (then it has gone to DLQ). */
  const decode = async (msg: JsMsg): Promise<EnvelopeOf<EventContract> | undefined> => {
    try {
      const parsed: unknown = JSON.parse(msg.string());
      envelope.assert(parsed, `${contract.subject} envelope`);
      if (parsed.type !== contract.subject) throw new Error(`envelope type ${parsed.type} on ${contract.subject}`);
      contract.data.assert(parsed.data, `${contract.subject} event`);
      return parsed as EnvelopeOf<EventContract>;
    } catch (error) {
      // Retrying cannot fix a message that breaks its contract.
      log.error({ err: error, seq: msg.seq }, 'poison event');
      await deadLetter(msg, error, 'poison');
      return undefined;
    }
  };

  const observer = (started: number) => (outcome: EventOutcome) =>
    deps.metrics?.eventHandled(durable, contract.subject, outcome, (performance.now() - started) / 1000);

  /**
   * Starts the `<subject> process` span of `msg`, ended when `done` settles
   * (failed if it rejects); returns the span's context. The span's work is
   * `done` itself, so withMessagingSpan runs it synchronously and we keep
   * its context for work done later, together with other events'.
   */
  const processSpan = (msg: JsMsg, done: Promise<unknown>): Context => {
    let inside: Context = context.active();
    withMessagingSpan(contract.subject, 'process', SpanKind.CONSUMER, extractTraceContext(msg.headers), () => {
      inside = context.active();
      return done;
    }).catch(() => {});
    return inside;
  };

  /** One message in its own transaction, with its own retries and dead letter. */
  const handleOne = async (msg: JsMsg): Promise<void> => {
    const delivery = msg.info.deliveryCount;
    const observe = observer(performance.now());
    const event = await decode(msg);
    if (!event) return observe('dead_letter');
    const settled = Promise.withResolvers<void>();
    const trace = processSpan(msg, settled.promise);
    try {
      const applied = await withTransaction(
        deps.pool,
        async (tx, inboxed) => {
          if (inboxed?.rowCount === 0) return false;
          await handler.apply([{ event, delivery, trace }], tx, log);
          return true;
        },
        // The inbox row rides with BEGIN: one round trip fewer per event.
        { startWith: inboxInsert([event.id]) },
      );
      settled.resolve();
      msg.ack();
      if (!applied) log.debug({ eventId: event.id }, 'duplicate event skipped');
      observe(applied ? 'processed' : 'duplicate');
    } catch (error) {
      settled.reject(error);
      context.with(trace, () => {
        if (delivery >= settings.maxDeliver) {
          log.error({ err: error, eventId: event.id, delivery }, 'event failed for the last time');
        } else {
          const delay = Math.min(settings.maxBackoffMs, settings.backoffMs * 2 ** (delivery - 1));
          log.warn({ err: error, eventId: event.id, delivery, retryInMs: delay }, 'event failed; will retry');
          msg.nak(delay);
        }
      });
      if (delivery < settings.maxDeliver) return observe('retry');
      await deadLetter(msg, error, 'failed');
      observe('dead_letter');
    }
  };

  /** Several messages in one transaction; when it fails, each again on its own. */
  const handleBatch = async (batch: JsMsg[]): Promise<void> => {
    const observe = observer(performance.now());
    const decoded: { msg: JsMsg; event: EnvelopeOf<EventContract> }[] = [];
    for (const msg of batch) {
      const event = await decode(msg);
      if (event) decoded.push({ msg, event });
      else observe('dead_letter');
    }
    if (decoded.length === 0) return;
    const settled = Promise.withResolvers<void>();
    let applied: Set<JsMsg>;
    try {
      applied = await withTransaction(
        deps.pool,
        async (tx, inboxed) => {
          // New to the inbox, and the first of its id in this batch: applied; the rest are repeats.
          const fresh = new Set((inboxed?.rows ?? []).map((row: { event_id: string }) => row.event_id));
          const todo = decoded.filter(({ event }) => fresh.delete(event.id));
          if (todo.length > 0) {
            await handler.apply(
              todo.map(({ msg, event }) => ({ event, delivery: msg.info.deliveryCount, trace: processSpan(msg, settled.promise) })),
              tx,
              log,
            );
          }
          return new Set(todo.map(({ msg }) => msg));
        },
        { startWith: `${inboxInsert(decoded.map(({ event }) => event.id))} RETURNING event_id` },
      );
    } catch (error) {
      settled.reject(error);
      log.warn({ err: error, events: decoded.length }, 'batch failed; handling its events one by one');
      await Promise.all(decoded.map(({ msg }) => handleOne(msg)));
      return;
    }
    settled.resolve();
    for (const { msg, event } of decoded) {
      msg.ack();
      if (!applied.has(msg)) log.debug({ eventId: event.id }, 'duplicate event skipped');
      observe(applied.has(msg) ? 'processed' : 'duplicate');
    }
  };

  const inboxInsert = (eventIds: string[]) =>
    `INSERT INTO inbox (consumer, event_id) VALUES ${eventIds
      .map((id) => `(${escapeLiteral(durable)}, ${escapeLiteral(id)})`)
      .join(', ')} ON CONFLICT DO NOTHING`;

  const deadLetter = async (msg: JsMsg, error: unknown, kind: 'poison' | 'failed'): Promise<void> => {
    const headers = natsHeaders();
    for (const [key, values] of msg.headers ?? []) {
      if (!key.startsWith('Nats-')) for (const value of values) headers.append(key, value);
    }
    const reason = `${kind}: ${error instanceof Error ? error.message : String(error)}`.replace(/[\r\n]+/g, ' ');
    headers.set(DeadLetterHeaders.error, reason.slice(0, 1000));
    headers.set(DeadLetterHeaders.subject, msg.subject);
    headers.set(DeadLetterHeaders.stream, contract.stream);
    headers.set(DeadLetterHeaders.sequence, String(msg.seq));
    headers.set(DeadLetterHeaders.consumer, durable);
    headers.set(DeadLetterHeaders.deliveries, String(msg.info.deliveryCount));
    try {
      await deps.js.publish(deadLetterSubject(contract.stream, durable), msg.data, {
        msgID: `${durable}:${msg.seq}`,
        headers,
      });
    } catch (publishError) {
      // Not stored as a dead letter: keep it in the stream and try again later.
      log.error({ err: publishError, seq: msg.seq }, 'dead letter could not be stored; will retry');
      msg.nak(settings.maxBackoffMs);
      return;
    }
    // nats-server 2.9 ignores term() with a reason: call it bare.
    msg.term();
  };

  // Delivered messages wait in `queue`; up to `parallel` transactions take
  // them, at most `handler.batch` each. Batches start on the next turn of the
  // event loop, after every message that arrived in this one has queued.
  const parallel = Math.max(1, Math.floor(settings.concurrency / handler.batch));
  const queue: JsMsg[] = [];
  const inHand = new Set<Promise<void>>();
  let startPending = false;
  let roomInQueue: (() => void) | undefined;
  const startBatches = () => {
    startPending = false;
    while (inHand.size < parallel && queue.length > 0) {
      const batch = queue.splice(0, handler.batch);
      const task = (batch.length === 1 ? handleOne(batch[0]!) : handleBatch(batch))
        .catch((error) => log.error({ err: error }, 'event handling crashed'))
        .finally(() => {
          inHand.delete(task);
          scheduleBatches();
        });
      inHand.add(task);
    }
    roomInQueue?.();
  };
  const scheduleBatches = () => {
    if (startPending) return;
    startPending = true;
    setImmediate(startBatches);
  };

  const loop = (async () => {
    for await (const msg of messages) {
      queue.push(msg);
      scheduleBatches();
      while (queue.length >= settings.concurrency) await new Promise<void>((resolve) => (roomInQueue = resolve));
      roomInQueue = undefined;
    }
  })();
  /** Resolves once nothing is queued or in hand. */
  const drained = async () => {
    while (queue.length > 0 || inHand.size > 0) await Promise.all([...inHand, new Promise((resolve) => setImmediate(resolve))]);
  };

  let attached = true;
  const detach = () => {
    attached = false;
  };
  loop.then(detach, detach);

  return {
    durable,
    stream: contract.stream,
    get attached() {
      return attached;
    },
    async stop(timeoutMs) {
      messages.stop();
      const timeout = new Promise<void>((resolve) => setTimeout(resolve, timeoutMs).unref());
      await Promise.race([loop.then(drained), timeout]);
    },
  };
}
