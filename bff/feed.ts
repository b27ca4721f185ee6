// Order updates for GraphQL subscribers. Each BFF instance reads
// `orders.events.>` from the ORDERS stream through an ordered consumer of its
// own (ephemeral: nothing to clean up when the instance goes, and it resumes
// in sequence after a reconnect), from the newest event on. For an event about
// an order someone here is watching, it fetches the order (orders.get) and
// publishes it on that order's pubsub topic; events nobody watches cost nothing.
import { DeliverPolicy, type ConsumerMessages, type JsMsg, type NatsConnection } from 'nats';
import { EventEnvelope, checker, orders, streams, type Checker, type Order } from '../subjects/index.ts';
import { ensureStreams, type Logger, type RpcClient } from '../services/kit/index.ts';

const envelope: Checker<typeof EventEnvelope> = checker(EventEnvelope);

export interface OrderFeedOptions {
  replicas: number;
  /** Delay before starting the consumer again after it failed. */
  retryMs?: number;
}

export class OrderFeed {
  readonly #nc: NatsConnection;
  readonly #client: RpcClient;
  readonly #log: Logger;
  readonly #publish: (topic: string, order: Order) => void;
  readonly #options: Required<OrderFeedOptions>;
  readonly #watchers = new Map<string, number>();
  #messages: ConsumerMessages | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;
  #ready = false;
  #wake: (() => void) | undefined;

  constructor(
    nc: NatsConnection,
    client: RpcClient,
    log: Logger,
    publish: (topic: string, order: Order) => void,
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

  /** True while the consumer is reading. */
  get ready(): boolean {
    return this.#ready;
  }

  /** Starts reading in the background; failures are logged and retried, never thrown. */
  start(): void {
    this.#running ??= this.#run();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#messages?.stop();
    this.#wake?.();
    await this.#running;
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      try {
        await this.#consume();
      } catch (error) {
        if (this.#stopped) break;
        this.#log.warn({ err: error }, 'order feed failed; starting again');
      }
      this.#ready = false;
      if (this.#stopped) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.#options.retryMs);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  async #consume(): Promise<void> {
    // The ORDERS stream may not exist yet when the BFF starts before the order service.
    await ensureStreams(await this.#nc.jetstreamManager(), [streams.ORDERS], this.#options.replicas, this.#log);
    const consumer = await this.#nc.jetstream().consumers.get(streams.ORDERS.name, {
      filterSubjects: 'orders.events.>',
      deliver_policy: DeliverPolicy.New,
    });
    const messages = await consumer.consume({ max_messages: 256 });
    this.#messages = messages;
    if (this.#stopped) messages.stop();
    this.#ready = true;
    this.#log.info('order feed reading orders.events.>');
    for await (const msg of messages) this.#handle(msg);
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
      (order) => this.#publish(this.topic(orderId), order),
      (error: unknown) => this.#log.warn({ err: error, orderId }, 'could not fetch an updated order'),
    );
  }
}
