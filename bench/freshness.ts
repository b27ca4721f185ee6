// The BFF's freshness (issue 14): how long a change takes from its commit in
// the product service to its answer through the BFF's read model, measured
// two ways while something else (the saga, bench/saga.ts with
// BENCH_SAGA_FRESHNESS=1) loads the shop:
//
// - a watcher restocks a product of its own through `products.restock` (the
//   service commits, then replies) and asks the BFF's GraphQL `product(id)`
//   every `pollMs` until the new stock shows; one restock at a time, one every
//   `everyMs`. "reply->visible" starts at the restock's reply (after the
//   commit: a lower bound), "sent->visible" at its request (an upper bound);
//   both end when the answer showing it arrives (resolution: the poll
//   interval plus one GraphQL round trip). Each is split at the time
//   JetStream stored the state (the bucket's message, read afterwards):
//   "reply->stored" is the product service's relay, "stored->visible" the
//   delivery to the BFF, its replica and the poll (wall clocks of one machine);
// - the BFF's own `shop_read_model_lag_seconds` histogram for the catalog
//   (from the state's write in its transaction to applied in the replica),
//   read from its /metrics before and after: every catalog change of the
//   phase, the saga's reservations included. Its percentiles are estimated
//   inside the buckets as Prometheus' histogram_quantile does; the share
//   within 100 ms is exact (a bucket bound).
import { setTimeout as sleep } from 'node:timers/promises';
import { performance } from 'node:perf_hooks';
import type { JetStreamManager } from 'nats';
import { products, stateSubject } from '../subjects/index.ts';
import type { RpcClient } from '../services/kit/index.ts';
import { Latencies, round, type LatencySummary } from '../scripts/lib/measure.ts';
import type { GraphQLHttp } from '../scripts/lib/shop.ts';

const PRODUCT = `query ($id: ID!) { product(id: $id) { available } }`;

/** A restock not visible after this long counts as not seen (and the watcher moves on). */
const GIVE_UP_MS = 10_000;

export interface LagHistogram {
  /** Cumulative counts by upper bound in seconds (Infinity last). */
  buckets: [number, number][];
  count: number;
}

export interface FreshnessFigures {
  restocks: number;
  replyToVisibleMs: LatencySummary;
  sentToVisibleMs: LatencySummary;
  /** reply->visible split where JetStream stored the state. */
  replyToStoredMs: LatencySummary;
  storedToVisibleMs: LatencySummary;
  /** Restocks still not visible after GIVE_UP_MS. */
  notSeen: number;
  /** The BFF's shop_read_model_lag_seconds{bucket="catalog"} over the phase. */
  metric: { states: number; p50Ms: number; p99Ms: number; within100Ms: number };
}

/** The catalog's lag histogram from a /metrics text (Prometheus exposition format). */
export function parseLagHistogram(text: string, bucket = 'catalog'): LagHistogram {
  const buckets: [number, number][] = [];
  let count = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith('shop_read_model_lag_seconds_') || !line.includes(`bucket="${bucket}"`)) continue;
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (line.startsWith('shop_read_model_lag_seconds_bucket{')) {
      const le = /le="([^"]+)"/.exec(line)?.[1];
      if (le !== undefined) buckets.push([le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le), value]);
    } else if (line.startsWith('shop_read_model_lag_seconds_count{')) {
      count = value;
    }
  }
  return { buckets: buckets.sort((a, b) => a[0] - b[0]), count };
}

/** `after` less `before`: what was observed in between. */
function difference(before: LagHistogram, after: LagHistogram): LagHistogram {
  const earlier = new Map(before.buckets);
  return { buckets: after.buckets.map(([le, n]) => [le, n - (earlier.get(le) ?? 0)]), count: after.count - before.count };
}

/** The q-quantile in ms, interpolated inside its bucket as histogram_quantile does (the last finite bound when beyond it). */
function quantileMs(histogram: LagHistogram, q: number): number {
  if (histogram.count === 0) return Number.NaN;
  const rank = q * histogram.count;
  let lower = 0;
  let below = 0;
  for (const [le, cumulative] of histogram.buckets) {
    if (cumulative >= rank) {
      if (!Number.isFinite(le)) return lower * 1000;
      return (lower + ((le - lower) * (rank - below)) / Math.max(1, cumulative - below)) * 1000;
    }
    lower = le;
    below = cumulative;
  }
  return lower * 1000;
}

/** Reads the BFF's lag histogram from its operations port. */
export async function readLagHistogram(opsPort: number): Promise<LagHistogram> {
  const response = await fetch(`http://127.0.0.1:${opsPort}/metrics`);
  if (!response.ok) throw new Error(`the BFF's /metrics answered ${response.status}`);
  return parseLagHistogram(await response.text());
}

export interface WatcherOptions {
  /** One restock this often (the next waits until the previous one is visible). */
  everyMs: number;
  /** Between two reads of the product through the BFF. */
  pollMs: number;
}

/** Restocks its products in turn and times each until the BFF answers the new stock; from start() to stop(). */
export class FreshnessWatcher {
  readonly #client: RpcClient;
  readonly #gql: GraphQLHttp;
  readonly #productIds: readonly string[];
  readonly #options: WatcherOptions;
  readonly #opsPort: number;
  readonly #jsm: JetStreamManager;
  #replyToStored = new Latencies();
  #storedToVisible = new Latencies();
  #replyToVisible = new Latencies();
  #sentToVisible = new Latencies();
  #notSeen = 0;
  #stopped = false;
  #running: Promise<void> | undefined;
  #metricBefore: LagHistogram | undefined;
  #next = 0;

  constructor(
    client: RpcClient,
    gql: GraphQLHttp,
    jsm: JetStreamManager,
    productIds: readonly string[],
    opsPort: number,
    options: WatcherOptions,
  ) {
    this.#client = client;
    this.#jsm = jsm;
    this.#gql = gql;
    this.#productIds = productIds;
    this.#opsPort = opsPort;
    this.#options = options;
  }

  async start(): Promise<void> {
    this.#replyToVisible = new Latencies();
    this.#sentToVisible = new Latencies();
    this.#replyToStored = new Latencies();
    this.#storedToVisible = new Latencies();
    this.#notSeen = 0;
    this.#stopped = false;
    this.#metricBefore = await readLagHistogram(this.#opsPort);
    this.#running = this.#run();
  }

  async stop(): Promise<FreshnessFigures> {
    this.#stopped = true;
    await this.#running;
    const metric = difference(this.#metricBefore!, await readLagHistogram(this.#opsPort));
    const within100 = metric.buckets.find(([le]) => le === 0.1)?.[1] ?? Number.NaN;
    return {
      restocks: this.#sentToVisible.count + this.#notSeen,
      replyToVisibleMs: this.#replyToVisible.summary(),
      sentToVisibleMs: this.#sentToVisible.summary(),
      replyToStoredMs: this.#replyToStored.summary(),
      storedToVisibleMs: this.#storedToVisible.summary(),
      notSeen: this.#notSeen,
      metric: {
        states: metric.count,
        p50Ms: round(quantileMs(metric, 0.5), 1),
        p99Ms: round(quantileMs(metric, 0.99), 1),
        within100Ms: metric.count ? round(within100 / metric.count, 4) : Number.NaN,
      },
    };
  }

  async #available(id: string): Promise<number | undefined> {
    const answer = await this.#gql.request<{ product: { available: number } | null }>(PRODUCT, { id });
    return answer.data?.product?.available;
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      const slot = performance.now();
      const id = this.#productIds[this.#next++ % this.#productIds.length]!;
      const sent = performance.now();
      const { available } = await this.#client.call(products.restock, { productId: id, quantity: 1 });
      const replied = performance.now();
      const repliedAt = Date.now();
      for (;;) {
        const seen = await this.#available(id);
        const at = performance.now();
        // Only restocks change the watcher's products, so the stock shows the restock once it is >= the reply's.
        if (seen !== undefined && seen >= available) {
          this.#replyToVisible.add(at - replied);
          this.#sentToVisible.add(at - sent);
          const stored = (await this.#jsm.streams.getMessage('KV_catalog', { last_by_subj: stateSubject(products.catalog, id) })).time;
          this.#replyToStored.add(stored.getTime() - repliedAt);
          this.#storedToVisible.add(repliedAt + (at - replied) - stored.getTime());
          break;
        }
        if (at - replied > GIVE_UP_MS) {
          this.#notSeen++;
          break;
        }
        await sleep(this.#options.pollMs);
      }
      await sleep(Math.max(0, slot + this.#options.everyMs - performance.now()));
    }
  }
}
