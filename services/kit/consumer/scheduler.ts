// Scheduling: delivered messages wait in a queue; up to `parallel`
// transactions take them, at most `batch` each. Batches start on the next
// turn of the event loop, after every message that arrived in this one has
// queued, so they form by themselves from what arrived while the previous
// ones ran and a lone message is never held back.
import type { JsMsg } from 'nats';
import type { Logger } from '../log.ts';

export interface Scheduler {
  /** Ends when `messages` ends (the consumer stopped or was deleted). */
  readonly pulling: Promise<void>;
  /** Resolves once nothing is queued or in hand. */
  drained(): Promise<void>;
}

/**
 * Takes messages from `messages` and hands them to `handle` in batches of at
 * most `batch`, with at most `concurrency` messages queued or in hand at
 * once. `handle` settles every message it gets (ack, nak or term) and should
 * not throw; what it throws is logged.
 */
export function scheduleBatches(
  messages: AsyncIterable<JsMsg>,
  { batch, concurrency }: { batch: number; concurrency: number },
  handle: (batch: JsMsg[]) => Promise<void>,
  log: Logger,
): Scheduler {
  const parallel = Math.max(1, Math.floor(concurrency / batch));
  const queue: JsMsg[] = [];
  const inHand = new Set<Promise<void>>();
  let startPending = false;
  let roomInQueue: (() => void) | undefined;

  const startBatches = () => {
    startPending = false;
    while (inHand.size < parallel && queue.length > 0) {
      const task = handle(queue.splice(0, batch))
        .catch((error) => log.error({ err: error }, 'event handling crashed'))
        .finally(() => {
          inHand.delete(task);
          scheduleStart();
        });
      inHand.add(task);
    }
    roomInQueue?.();
  };
  const scheduleStart = () => {
    if (startPending) return;
    startPending = true;
    setImmediate(startBatches);
  };

  const pulling = (async () => {
    for await (const msg of messages) {
      queue.push(msg);
      scheduleStart();
      while (queue.length >= concurrency) await new Promise<void>((resolve) => (roomInQueue = resolve));
      roomInQueue = undefined;
    }
  })();

  return {
    pulling,
    async drained() {
      while (queue.length > 0 || inHand.size > 0) await Promise.all([...inHand, new Promise((resolve) => setImmediate(resolve))]);
    },
  };
}
