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
import type { JetStreamClient, JetStreamManager } from 'nats';
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
  const messages = await consumer.consume({ max_messages: settings.concurrency * 2 });
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
      messages.stop();
      const timeout = new Promise<void>((resolve) => setTimeout(resolve, timeoutMs).unref());
      await Promise.race([scheduler.pulling.then(scheduler.drained), timeout]);
    },
  };
}
