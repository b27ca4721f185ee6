// Order updates for GraphQL subscribers. Each BFF instance reads
// `orders.events.>` from the ORDERS stream and `shipments.events.>` from
// SHIPMENTS (a shipment is part of its order), each through an ordered
// consumer of its own (ephemeral: nothing to clean up when the instance goes,
// and it resumes in sequence after a reconnect), from the newest event on.
// For an event about an order someone here is watching, it fetches the order
// (orders.get) and publishes it on that order's pubsub topic; events nobody
// watches cost nothing.
import { DeliverPolicy, type ConsumerMessages, type JsMsg, type NatsConnection } from 'nats';
import { EventEnvelope, checker, orders, streams, type Checker, type Order, type StreamDefinition } from '../subjects/index.ts';
import { ensureStreams, type Logger, type RpcClient } from '../services/kit/index.ts';
import { readUntilStopped } from './reading.ts';

const envelope: Checker<typeof EventEnvelope> = checker(EventEnvelope);

/** The streams whose events change what an order shows (the AsyncAPI document names them as the BFF's). */
export const FEED_STREAMS: readonly StreamDefinition[] = [streams.ORDERS, streams.SHIPMENTS];

/**
 * An order as it is after an event. A shipment's step leaves the order's own
 * history as it was, so it says so: a subscriber still passes it on.
 */
export interface OrderUpdate {
  order: Order;
  shipmentChanged: boolean;
}

export interface OrderFeedOptions {
  replicas: number;
  /** Delay before starting the consumer again after it failed. */
  retryMs?: number;
}

export class OrderFeed {
  readonly #nc: NatsConnection;
  readonly #client: RpcClient;
  readonly #log: Logger;
  readonly #publish: (topic: string, update: OrderUpdate) => void;
  readonly #options: Required<OrderFeedOptions>;
  readonly #watchers = new Map<string, number>();
  readonly #messages = new Set<ConsumerMessages>();
  #running: Promise<void> | undefined;
  readonly #stopping = new AbortController();
  /** The streams being read right now. */
  readonly #reading = new Set<string>();

  constructor(
    nc: NatsConnection,
    client: RpcClient,
    log: Logger,
    publish: (topic: string, update: OrderUpdate) => void,
    options: OrderFeedOptions,
  ) {
    this.#nc = nc;
    this.#client = client;
    this.#log = log.child({ component: 'order-feed' });
    this.#publish = publish;
    this.#options = { retryMs: 1000, ...options };
  }

  /** The pubsub topic of one order's updates. */
  topic(orderId: string): string {
    return `order-updated.${orderId}`;
  }

  /** Counts a watcher of `orderId` until the returned release is called (once). */
  watch(orderId: string): () => void {
    this.#watchers.set(orderId, (this.#watchers.get(orderId) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.#watchers.get(orderId) ?? 1) - 1;
      if (left > 0) this.#watchers.set(orderId, left);
      else this.#watchers.delete(orderId);
    };
  }

  /** Orders watched right now, for tests and metrics. */
  get watched(): number {
    return this.#watchers.size;
  }

  /** True while every stream is being read. */
  get ready(): boolean {
    return this.#reading.size === FEED_STREAMS.length;
  }

  /** Starts reading in the background; failures are logged and retried, never thrown. */
  start(): void {
    this.#running ??= Promise.all(
      FEED_STREAMS.map((source) =>
        readUntilStopped(() => this.#consume(source), {
          signal: this.#stopping.signal,
          retryMs: this.#options.retryMs,
          onFailure: (error) => this.#log.warn({ err: error, stream: source.name }, 'order feed failed; starting again'),
          afterRead: () => this.#reading.delete(source.name),
        }),
      ),
    ).then(() => {});
  }

  async stop(): Promise<void> {
    this.#stopping.abort();
    for (const messages of this.#messages) messages.stop();
    await this.#running;
  }

  async #consume(source: StreamDefinition): Promise<void> {
    // The stream may not exist yet when the BFF starts before the service that writes it.
    await ensureStreams(await this.#nc.jetstreamManager(), [source], this.#options.replicas, this.#log);
    const subjects = source.subjects[0]!;
    const consumer = await this.#nc.jetstream().consumers.get(source.name, {
      filterSubjects: subjects,
      deliver_policy: DeliverPolicy.New,
    });
    const messages = await consumer.consume({ max_messages: 256 });
    this.#messages.add(messages);
    try {
      if (this.#stopping.signal.aborted) messages.stop();
      this.#reading.add(source.name);
      this.#log.info(`order feed reading ${subjects}`);
      for await (const msg of messages) this.#handle(msg);
    } finally {
      this.#messages.delete(messages);
    }
  }

  #handle(msg: JsMsg): void {
    let orderId: string;
    try {
      const event: unknown = msg.json();
      envelope.assert(event, msg.subject);
      orderId = (event.data as { orderId?: unknown }).orderId as string;
      if (typeof orderId !== 'string') throw new Error('event data has no orderId');
    } catch (error) {
      this.#log.warn({ err: error, subject: msg.subject, seq: msg.seq }, 'skipping an unreadable order event');
      return;
    }
    if (!this.#watchers.has(orderId)) return;
    // The event says that something changed; the order service says what it is now.
    this.#client.call(orders.get, { id: orderId }).then(
      (order) => this.#publish(this.topic(orderId), { order, shipmentChanged: msg.subject.startsWith('shipments.') }),
      (error: unknown) => this.#log.warn({ err: error, orderId }, 'could not fetch an updated order'),
    );
  }
}
