// The consumer runner: one durable pull consumer per event handler, shared by
// every instance of the service. Its parts, in consumer/:
//   handler.ts      `on` and `onBatch`: what a service writes;
//   setup.ts        the durable consumer on the server, and the settings;
//   scheduler.ts    delivered messages queued and taken in batches;
//   delivery.ts     a batch decoded, applied, acked after commit, retried
//                   with a growing delay or sent to DLQ;
//   inbox.ts        each event applied once, in one transaction with its
//                   inbox row;
//   dead-letter.ts  the DLQ stream's copy of a message and why.
// docs/transactions.md tells how the transactions are shaped.
import type { ConsumeOptions, Consumer, ConsumerMessages, JetStreamClient, JetStreamManager, JsMsg, NatsConnection } from 'nats';
import type { EventContract } from '../../subjects/index.ts';
import type { Pool } from './db.ts';
import type { Logger } from './log.ts';
import { deliveryHandler, type DeliveryParts } from './consumer/delivery.ts';
import type { EventHandler } from './consumer/handler.ts';
import { scheduleBatches } from './consumer/scheduler.ts';
import { defaultConsumerSettings, ensureDurableConsumer, type ConsumerSettings } from './consumer/setup.ts';

export { on, onBatch, type Delivered, type EventContext, type EventHandler, type HandlerOptions } from './consumer/handler.ts';
export { defaultConsumerSettings, type ConsumerSettings } from './consumer/setup.ts';
export { DeadLetterHeaders } from './consumer/dead-letter.ts';

export interface RunningConsumer {
  readonly durable: string;
  readonly stream: string;
  /** True while this instance pulls from the consumer (for readiness). */
  readonly attached: boolean;
  /** Stops pulling, then waits (at most `timeoutMs`) for messages in hand. */
  stop(timeoutMs: number): Promise<void>;
}

/** Creates (or updates) `<service>-<handler.name>` and handles its messages until stopped. */
export async function startConsumer(
  service: string,
  handler: EventHandler,
  deps: {
    nc: NatsConnection;
    js: JetStreamClient;
    jsm: JetStreamManager;
    pool: Pool;
    log: Logger;
    metrics?: DeliveryParts['metrics'];
  },
  settings: ConsumerSettings = defaultConsumerSettings,
): Promise<RunningConsumer> {
  const contract: EventContract = handler.contract;
  const durable = `${service}-${handler.name}`;
  const log = deps.log.child({ consumer: durable, subject: contract.subject });
  await ensureDurableConsumer(deps.jsm, contract, durable, settings);

  const consumer = await deps.js.consumers.get(contract.stream, durable);
  const messages = pullAfresh(consumer, { max_messages: settings.concurrency * 2 }, log);
  // The new leader's own word that it leads: the pulls waiting at the old one may be void
  // without a 409 (see pullAfresh), so pull afresh from this one.
  const leaderMoves = deps.nc.subscribe(leaderElectedSubject(contract.stream, durable), {
    callback: (error) => {
      if (error) log.warn({ err: error }, 'cannot follow the consumer leader advisories');
      else messages.renew('a new leader of the consumer was elected; pulling from it');
    },
  });
  const handle = deliveryHandler({ handler, durable, pool: deps.pool, js: deps.js, log, settings, metrics: deps.metrics });
  const scheduler = scheduleBatches(messages, { batch: handler.batch, concurrency: settings.concurrency }, handle, log);

  let attached = true;
  const detach = () => {
    attached = false;
  };
  scheduler.pulling.then(detach, detach);

  return {
    durable,
    stream: contract.stream,
    get attached() {
      return attached;
    },
    async stop(timeoutMs) {
      leaderMoves.unsubscribe();
      messages.stop();
      const timeout = new Promise<void>((resolve) => setTimeout(resolve, timeoutMs).unref());
      await Promise.race([scheduler.pulling.then(scheduler.drained), timeout]);
    },
  };
}

/** The advisory JetStream publishes when a consumer's leader is elected (nats.conf lets the owner read its own). */
export function leaderElectedSubject(stream: string, durable: string): string {
  return `$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.${stream}.${durable}`;
}

/** A consumer's messages as long as it runs; stop() ends them once those already delivered are taken. */
interface Pulled extends AsyncIterable<JsMsg> {
  stop(): void;
  /** Ends the pulls waiting now and pulls afresh (messages already delivered are still taken). */
  renew(reason: string): void;
}

/**
 * nats.js's consume(), started afresh when the consumer's leader changes (a
 * node in lame duck mode hands it over, or its node died): our waiting pulls
 * are void then, but nats.js 2.29 waits for them until it has missed two idle
 * heartbeats: 30-45 s in which this instance takes nothing (and so does every
 * other instance of the service, their pulls voided alike). A new consume()
 * pulls from the new leader at once. The sign of the change is the new
 * leader's own advisory (startConsumer calls renew on it): the server
 * documents it and sends it on every election. The new leader's "409
 * Leadership Change" reaches us only as the text of a nats.js debug event,
 * which nats.js says can be ignored and may word differently in any release,
 * so it is not read; nor would it be enough: a 2.9 leader hands its waiting
 * pulls to the next one only once it knows every peer's version, so pulls
 * made just after an earlier move get no 409.
 */
export function pullAfresh(consumer: Consumer, options: ConsumeOptions, log: Logger): Pulled {
  let stopped = false;
  /** The consume() now running, and whether it was ended to pull afresh. */
  let current: { pulling: ConsumerMessages; renewed: boolean } | undefined;

  const renew = (reason: string) => {
    if (stopped || !current || current.renewed) return;
    log.info(reason);
    current.renewed = true;
    current.pulling.stop();
  };

  async function* pull(): AsyncGenerator<JsMsg> {
    while (!stopped) {
      const round = { pulling: await consumer.consume(options), renewed: false };
      current = round;
      if (stopped) round.pulling.stop();
      // Ends after the messages already delivered, when stopped (by us, or by nats.js with an error: thrown).
      yield* round.pulling;
      if (!round.renewed) return;
    }
  }

  const messages = pull();
  return {
    [Symbol.asyncIterator]: () => messages,
    stop() {
      stopped = true;
      current?.pulling.stop();
    },
    renew,
  };
}
