// The consumer runner: one durable pull consumer per event handler, shared by
// every instance of the service. For each message:
//   - an envelope or payload outside its contract is poison: straight to DLQ;
//   - otherwise, in one transaction, the event id goes into `inbox` and the
//     handler applies its effect; a redelivered event finds its id there and
//     is acknowledged without effect;
//   - ack only after commit; on failure `nak` with a growing delay, and after
//     the delivery limit the message goes to DLQ with its error, then `term`.
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
import { SpanKind, extractTraceContext, withMessagingSpan } from './tracing.ts';

const envelope: Checker<typeof EventEnvelope> = checker(EventEnvelope);
const { escapeLiteral } = pg;

export interface EventContext {
  log: Logger;
  /** How many times this message has been delivered (1 the first time). */
  delivery: number;
}

export interface EventHandler<C extends EventContract = EventContract> {
  contract: C;
  /** Names the durable consumer: `<service>-<name>`. */
  name: string;
  handle(event: EnvelopeOf<C>, tx: Tx, context: EventContext): Promise<void>;
}

/** Pairs an event contract with its handler, typed by the contract. */
export function on<C extends EventContract>(
  contract: C,
  name: string,
  handle: (event: EnvelopeOf<C>, tx: Tx, context: EventContext) => Promise<void>,
): EventHandler {
  return { contract, name, handle } as unknown as EventHandler;
}

export interface ConsumerSettings {
  /** Deliveries before a failing message goes to DLQ. */
  maxDeliver: number;
  ackWaitMs: number;
  /** Messages of one consumer handled at once in one instance. */
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
  const inHand = new Set<Promise<void>>();

  const process = async (msg: JsMsg): Promise<void> => {
    const delivery = msg.info.deliveryCount;
    const started = performance.now();
    const observe = (outcome: EventOutcome) =>
      deps.metrics?.eventHandled(durable, contract.subject, outcome, (performance.now() - started) / 1000);
    let event: EnvelopeOf<EventContract>;
    try {
      const parsed: unknown = JSON.parse(msg.string());
      envelope.assert(parsed, `${contract.subject} envelope`);
      if (parsed.type !== contract.subject) throw new Error(`envelope type ${parsed.type} on ${contract.subject}`);
      contract.data.assert(parsed.data, `${contract.subject} event`);
      event = parsed as EnvelopeOf<EventContract>;
    } catch (error) {
      // Retrying cannot fix a message that breaks its contract.
      log.error({ err: error, seq: msg.seq }, 'poison event');
      await deadLetter(msg, error, 'poison');
      observe('dead_letter');
      return;
    }
    try {
      const applied = await withTransaction(
        deps.pool,
        async (tx, inboxed) => {
          if (inboxed?.rowCount === 0) return false;
          await handler.handle(event, tx, { log, delivery });
          return true;
        },
        // The inbox row rides with BEGIN: one round trip fewer per event.
        {
          startWith: `INSERT INTO inbox (consumer, event_id) VALUES (${escapeLiteral(durable)}, ${escapeLiteral(event.id)}) ON CONFLICT DO NOTHING`,
        },
      );
      msg.ack();
      if (!applied) log.debug({ eventId: event.id }, 'duplicate event skipped');
      observe(applied ? 'processed' : 'duplicate');
    } catch (error) {
      if (delivery >= settings.maxDeliver) {
        log.error({ err: error, eventId: event.id, delivery }, 'event failed for the last time');
        await deadLetter(msg, error, 'failed');
        observe('dead_letter');
      } else {
        const delay = Math.min(settings.maxBackoffMs, settings.backoffMs * 2 ** (delivery - 1));
        log.warn({ err: error, eventId: event.id, delivery, retryInMs: delay }, 'event failed; will retry');
        msg.nak(delay);
        observe('retry');
      }
    }
  };

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

  const loop = (async () => {
    for await (const msg of messages) {
      const parent = extractTraceContext(msg.headers);
      const task = withMessagingSpan(contract.subject, 'process', SpanKind.CONSUMER, parent, () => process(msg))
        .catch((error) => log.error({ err: error }, 'event handling crashed'))
        .finally(() => inHand.delete(task));
      inHand.add(task);
      while (inHand.size >= settings.concurrency) await Promise.race(inHand);
    }
  })();

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
      await Promise.race([Promise.all([loop, ...inHand]), timeout]);
    },
  };
}
