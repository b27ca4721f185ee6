// What happens to a delivered message:
//   - an envelope or payload outside its contract is poison: straight to DLQ;
//   - otherwise its event is applied once (inbox.ts), and the message acked
//     after commit; on failure `nak` with a growing delay, and after the
//     delivery limit it goes to DLQ with its error.
// Several messages may share one transaction (a batch). A batch that fails,
// for whatever reason (its handler, or the database before the handler ran),
// is rolled back whole and its messages are handled one by one, each with its
// own retries, so one bad event costs its neighbours nothing but the repeat.
import type { Context } from '@opentelemetry/api';
import type { JetStreamClient, JsMsg } from 'nats';
import { EventEnvelope, checker, type Checker, type EnvelopeOf, type EventContract } from '../../../subjects/index.ts';
import type { Pool } from '../db.ts';
import type { Logger } from '../log.ts';
import type { EventOutcome } from '../metrics.ts';
import { SpanKind, context, incomingTraceContext, withMessagingSpan } from '../tracing.ts';
import { storeDeadLetter, type DeadLetterKind } from './dead-letter.ts';
import type { EventHandler } from './handler.ts';
import { applyOnce } from './inbox.ts';
import { retryDelay, type ConsumerSettings } from './setup.ts';

const envelope: Checker<typeof EventEnvelope> = checker(EventEnvelope);

export interface DeliveryParts {
  handler: EventHandler;
  /** The durable consumer's name: the inbox's and the dead letters' `consumer`. */
  durable: string;
  pool: Pool;
  js: JetStreamClient;
  log: Logger;
  settings: ConsumerSettings;
  /** Told how each delivery ended and how long it took (metrics.ts). */
  metrics?: { eventHandled(consumer: string, subject: string, outcome: EventOutcome, seconds: number): void } | undefined;
}

/** Handles the messages of one batch (one message: a batch of one); settles each of them. */
export function deliveryHandler(parts: DeliveryParts): (batch: JsMsg[]) => Promise<void> {
  const { handler, durable, pool, js, log, settings } = parts;
  const contract: EventContract = handler.contract;

  const observer = (started: number) => (outcome: EventOutcome) =>
    parts.metrics?.eventHandled(durable, contract.subject, outcome, (performance.now() - started) / 1000);

  /** Stores `msg` as a dead letter; when DLQ cannot take it, keeps it in the stream for a later try. */
  const deadLetter = async (msg: JsMsg, error: unknown, kind: DeadLetterKind): Promise<void> => {
    try {
      await storeDeadLetter(js, msg, { stream: contract.stream, consumer: durable }, error, kind);
    } catch (publishError) {
      log.error({ err: publishError, seq: msg.seq }, 'dead letter could not be stored; will retry');
      msg.nak(settings.maxBackoffMs);
    }
  };

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

  /**
   * Starts the `<subject> process` span of `msg`, ended when `done` settles
   * (failed if it rejects); returns the span's context. The span's work is
   * `done` itself, so withMessagingSpan runs it synchronously and we keep
   * its context for work done later, together with other events'.
   */
  const processSpan = (msg: JsMsg, done: Promise<unknown>): Context => {
    let inside: Context = context.active();
    withMessagingSpan(contract.subject, 'process', SpanKind.CONSUMER, incomingTraceContext(msg), () => {
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
      const applied = await applyOnce(pool, durable, [{ event }], (fresh, tx) =>
        handler.apply(
          fresh.map(() => ({ event, delivery, trace })),
          tx,
          log,
        ),
      );
      settled.resolve();
      msg.ack();
      if (applied.size === 0) log.debug({ eventId: event.id }, 'duplicate event skipped');
      observe(applied.size > 0 ? 'processed' : 'duplicate');
    } catch (error) {
      settled.reject(error);
      if (delivery < settings.maxDeliver) {
        const delay = retryDelay(settings, delivery);
        context.with(trace, () => log.warn({ err: error, eventId: event.id, delivery, retryInMs: delay }, 'event failed; will retry'));
        msg.nak(delay);
        return observe('retry');
      }
      context.with(trace, () => log.error({ err: error, eventId: event.id, delivery }, 'event failed for the last time'));
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
    // Ends the spans of the events applied. It may fail before any span has
    // started (the pool cannot connect, BEGIN fails): nothing listens then,
    // and an unhandled rejection would end the process.
    const settled = Promise.withResolvers<void>();
    settled.promise.catch(() => {});
    let applied: Set<(typeof decoded)[number]>;
    try {
      applied = await applyOnce(pool, durable, decoded, (fresh, tx) =>
        handler.apply(
          fresh.map(({ msg, event }) => ({ event, delivery: msg.info.deliveryCount, trace: processSpan(msg, settled.promise) })),
          tx,
          log,
        ),
      );
    } catch (error) {
      settled.reject(error);
      log.warn({ err: error, events: decoded.length }, 'batch failed; handling its events one by one');
      await Promise.all(decoded.map(({ msg }) => handleOne(msg)));
      return;
    }
    settled.resolve();
    for (const delivered of decoded) {
      delivered.msg.ack();
      if (!applied.has(delivered)) log.debug({ eventId: delivered.event.id }, 'duplicate event skipped');
      observe(applied.has(delivered) ? 'processed' : 'duplicate');
    }
  };

  return (batch) => (batch.length === 1 ? handleOne(batch[0]!) : handleBatch(batch));
}
