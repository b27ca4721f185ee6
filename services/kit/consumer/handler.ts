// What a service writes to consume events: `on` for one event at a time,
// `onBatch` for the events of a batch together. Both run inside the
// transaction that also records the events in the inbox (inbox.ts).
import type { Context } from '@opentelemetry/api';
import type { EnvelopeOf, EventContract } from '../../../subjects/index.ts';
import type { Transaction } from '../db.ts';
import type { Logger } from '../log.ts';
import { context } from '../tracing.ts';

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
  apply(events: Delivered<C>[], tx: Transaction, log: Logger): Promise<void>;
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
  handle: (event: EnvelopeOf<C>, tx: Transaction, context: EventContext) => Promise<void>,
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
  apply: (events: Delivered<C>[], tx: Transaction, log: Logger) => Promise<void>,
  options: HandlerOptions = {},
): EventHandler {
  const batch = Math.max(1, Math.trunc(options.batch ?? 1));
  return { contract, name, batch, apply } as unknown as EventHandler;
}
