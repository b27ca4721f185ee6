// The durable consumer on the server: one per event handler, named
// `<service>-<handler>`, shared by every instance of the service, created
// or brought up to date at start.
import { AckPolicy, DeliverPolicy, nanos, type JetStreamManager } from 'nats';
import type { EventContract } from '../../../subjects/index.ts';

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

/** The delay before delivery number `delivery + 1` of a message that failed: doubling, bounded. */
export function retryDelay(settings: ConsumerSettings, delivery: number): number {
  return Math.min(settings.maxBackoffMs, settings.backoffMs * 2 ** (delivery - 1));
}

/** Creates the durable consumer `durable` of `contract`'s events, or updates its settings. */
export async function ensureDurableConsumer(
  jsm: JetStreamManager,
  contract: EventContract,
  durable: string,
  settings: ConsumerSettings,
): Promise<void> {
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
    await jsm.consumers.info(contract.stream, durable);
    await jsm.consumers.update(contract.stream, durable, config);
  } catch (error) {
    if ((error as { code?: string }).code !== '404') throw error;
    await jsm.consumers.add(contract.stream, config);
  }
}
