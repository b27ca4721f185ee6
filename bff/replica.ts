// A read model in memory: every item of one state bucket (subjects' state
// contracts: the catalog, customers' profiles), read from the start of the
// bucket (the newest state per key), then followed, through an ordered
// consumer of this instance's own (ephemeral: nothing to clean up when the
// instance goes; it resumes in sequence after a reconnect). Each BFF instance
// keeps its own.
//
// An item never goes back in time: a state whose version is not above the one
// held is ignored. The owning service's relays put a key's states in version
// order (a compare-and-set, kit/outbox.ts), but a write's own reply (read your
// writes, `apply`) may come before its state does, and an operator may put
// into the bucket by hand.
//
// Items a listing shows (`listed`, by default all but those with
// `archivedAt` set) are also kept sorted by `compare`, for keyset pages.
import { DeliverPolicy, type ConsumerMessages, type JsMsg, type NatsConnection } from 'nats';
import { EventEnvelope, checker, type Checker, type StateContract } from '../subjects/index.ts';
import { openStateBucket, stateStream, type Logger } from '../services/kit/index.ts';
import { readUntilStopped } from './reading.ts';

const envelope: Checker<typeof EventEnvelope> = checker(EventEnvelope);

/** What a replica needs of an item: its key and its version. */
export interface Versioned {
  id: string;
  version?: number | undefined;
}

export interface ReplicaOptions<T, P> {
  /** Replicas of the bucket when this process creates it. */
  replicas: number;
  log: Logger;
  /** The order of listings (keyset pages); no listing without it. */
  compare?: (a: P, b: P) => number;
  /** Whether a listing shows the item; all but archived ones (`archivedAt` set) by default. */
  listed?: (item: T) => boolean;
  /** Told of each state applied once caught up, with the seconds since it was written (`shop_read_model_lag_seconds`). */
  onLag?: (seconds: number) => void;
  /** Delay before starting the consumer again after it failed. */
  retryMs?: number;
}

const notArchived = (item: unknown) => (item as { archivedAt?: unknown }).archivedAt === undefined;

export class Replica<T extends Versioned & P, P extends object = T> {
  readonly contract: StateContract;
  readonly #nc: NatsConnection;
  readonly #log: Logger;
  readonly #options: ReplicaOptions<T, P>;
  readonly #listed: (item: T) => boolean;
  readonly #items = new Map<string, T>();
  /** The listed items in `compare` order, built when first asked for and kept up to date after. */
  #sorted: T[] | undefined;
  /**
   * Listed items not yet in `#sorted` (new ones, or moved by a change of
   * their sort key), merged in by the next page: a splice per item would
   * move the whole array each time, quadratic while a large catalog arrives.
   */
  readonly #unsorted = new Map<string, T>();
  #messages: ConsumerMessages | undefined;
  #running: Promise<void> | undefined;
  readonly #stopping = new AbortController();
  #ready = false;
  #readyWaiters: (() => void)[] = [];

  constructor(nc: NatsConnection, contract: StateContract, options: ReplicaOptions<T, P>) {
    this.#nc = nc;
    this.contract = contract;
    this.#log = options.log.child({ component: 'replica', bucket: contract.bucket });
    this.#options = options;
    this.#listed = options.listed ?? notArchived;
  }

  /** True once the replica has read the bucket as it was when it started (stays true while following). */
  get ready(): boolean {
    return this.#ready;
  }

  get size(): number {
    return this.#items.size;
  }

  /** Resolves once ready. */
  caughtUp(): Promise<void> {
    if (this.#ready) return Promise.resolve();
    return new Promise((resolve) => this.#readyWaiters.push(resolve));
  }

  /** Starts reading in the background; failures are logged and retried, never thrown. */
  start(): void {
    this.#running ??= readUntilStopped(() => this.#consume(), {
      signal: this.#stopping.signal,
      retryMs: this.#options.retryMs ?? 1000,
      onFailure: (error) => this.#log.warn({ err: error }, 'replica stopped reading; starting again'),
    });
  }

  async stop(): Promise<void> {
    this.#stopping.abort();
    this.#messages?.stop();
    await this.#running;
  }

  get(id: string): T | undefined {
    return this.#items.get(id);
  }

  /**
   * Keeps `item` when it is newer than the one held (or the first): a state
   * from the bucket, or a write's own reply. Returns whether it was kept.
   */
  apply(item: T): boolean {
    const held = this.#items.get(item.id);
    if (held && (held.version ?? 0) >= (item.version ?? 0)) return false;
    this.#items.set(item.id, item);
    if (this.#sorted) this.#resort(held, item);
    return true;
  }

  /** Up to `first` listed items after `after` in `compare` order, and whether more follow. */
  page(first: number, after?: P): { items: T[]; hasMore: boolean } {
    const sorted = this.#sortedItems();
    const start = after === undefined ? 0 : this.#firstAbove(sorted, after);
    const items = sorted.slice(start, start + first);
    return { items, hasMore: start + first < sorted.length };
  }

  #compare(): (a: P, b: P) => number {
    const compare = this.#options.compare;
    if (!compare) throw new Error(`the ${this.contract.bucket} replica has no order to list by`);
    return compare;
  }

  #sortedItems(): T[] {
    const compare = this.#compare();
    if (!this.#sorted) {
      this.#sorted = [...this.#items.values()].filter(this.#listed).sort(compare);
      this.#unsorted.clear();
    } else if (this.#unsorted.size > 0) {
      this.#sorted = mergeSorted(this.#sorted, [...this.#unsorted.values()].sort(compare), compare);
      this.#unsorted.clear();
    }
    return this.#sorted;
  }

  /** Index of the first item of `sorted` ordered after `position`. */
  #firstAbove(sorted: readonly T[], position: P): number {
    const compare = this.#compare();
    let low = 0;
    let high = sorted.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (compare(sorted[middle]!, position) <= 0) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  /** Moves `held` (the item's previous state, if any) to where `item` belongs in the sorted listing. */
  #resort(held: T | undefined, item: T): void {
    const sorted = this.#sorted!;
    const compare = this.#compare();
    if (held && this.#listed(held) && !this.#unsorted.delete(held.id)) {
      const index = this.#firstAbove(sorted, held) - 1;
      if (index >= 0 && sorted[index]!.id === held.id) {
        if (this.#listed(item) && compare(held, item) === 0) {
          sorted[index] = item; // same place: the common case (stock changed)
          return;
        }
        sorted.splice(index, 1); // rare: an item renamed or archived
      }
    }
    if (this.#listed(item)) this.#unsorted.set(item.id, item);
  }

  async #consume(): Promise<void> {
    // The bucket may not exist yet when the BFF starts before the owning service.
    await openStateBucket(this.#nc, this.contract, this.#options.replicas);
    const stream = stateStream(this.contract);
    const started = performance.now();
    const { state } = await (await this.#nc.jetstreamManager()).streams.info(stream);
    // The newest state of every key, then every later one: versions make reading one twice harmless.
    // Not nats.js's kv.watch(): on the same bucket it took 21 % more CPU to catch up (docs/decisions.md).
    const consumer = await this.#nc.jetstream().consumers.get(stream, { deliver_policy: DeliverPolicy.LastPerSubject });
    // One message per key was there at start: only past that many is the delivery's pending count worth reading.
    let delivered = 0;
    // A callback, not the async iterator: no promise and queue per message (~7 % of a catch-up in a profile).
    const messages = await consumer.consume({
      max_messages: 4096,
      callback: (msg) => {
        this.#handle(msg);
        if (!this.#ready && ++delivered >= (state.num_subjects ?? 0) && msg.info.pending === 0) this.#caughtUp(started);
      },
    });
    this.#messages = messages;
    if (this.#stopping.signal.aborted) messages.stop();
    if (state.messages === 0) this.#caughtUp(started);
    // Resolves when the reading stops: with an error when it failed (read again), without when stopped.
    const failure = await messages.closed();
    if (failure) throw failure;
  }

  #caughtUp(started: number): void {
    if (this.#ready) return;
    this.#ready = true;
    this.#log.info({ items: this.#items.size, ms: Math.round(performance.now() - started) }, 'replica caught up; following');
    for (const resolve of this.#readyWaiters.splice(0)) resolve();
  }

  #handle(msg: JsMsg): void {
    if (msg.data.length === 0) {
      // A delete or purge marker (an operator's `nats kv del`): the item is gone.
      const id = msg.subject.slice(msg.subject.lastIndexOf('.') + 1);
      const held = this.#items.get(id);
      if (held) {
        this.#items.delete(id);
        this.#sorted = undefined;
        this.#unsorted.clear();
      }
      return;
    }
    let item: T;
    let occurredAt: string;
    try {
      const event: unknown = msg.json();
      envelope.assert(event, msg.subject);
      this.contract.value.assert(event.data, `${this.contract.bucket} state`);
      item = event.data as T;
      occurredAt = event.occurredAt;
    } catch (error) {
      this.#log.warn({ err: error, subject: msg.subject, seq: msg.info.streamSequence }, 'skipping an unreadable state');
      return;
    }
    if (this.apply(item) && this.#ready) this.#options.onLag?.((Date.now() - Date.parse(occurredAt)) / 1000);
  }
}

/** One sorted array of two: O(n + m) compares, where inserting each of m would move n items m times. */
function mergeSorted<T>(sorted: readonly T[], additions: readonly T[], compare: (a: T, b: T) => number): T[] {
  const merged: T[] = new Array(sorted.length + additions.length);
  let i = 0;
  let j = 0;
  let k = 0;
  while (i < sorted.length && j < additions.length) {
    merged[k++] = compare(sorted[i]!, additions[j]!) <= 0 ? sorted[i++]! : additions[j++]!;
  }
  while (i < sorted.length) merged[k++] = sorted[i++]!;
  while (j < additions.length) merged[k++] = additions[j++]!;
  return merged;
}
