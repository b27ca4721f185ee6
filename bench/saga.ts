// The saga benchmark (`npm run bench:saga`, part of `npm run bench`): orders
// per second from placing an order to CONFIRMED, and how long that takes, on
// the whole shop run as production runs it (scripts/lib/shop.ts startShop: every
// service and the BFF a child process, its own nats-server, fresh databases,
// an SMTP sink).
//
// Orders enter where the BFF's placeOrder sends them: `orders.place`, called
// through the kit's RpcClient (BENCH_SAGA_VIA=bff sends them through the BFF's
// GraphQL placeOrder instead). The bench hears the outcome as every other
// subscriber does: `orders.events.confirmed` / `orders.events.cancelled`, on a
// plain NATS subscription. Two phases on one shop:
//   1. fixed offered rates (BENCH_SAGA_RATES, "100,300" per second), each for
//      BENCH_SAGA_SECONDS: orders sent on schedule whatever the shop's answers
//      (open loop), then given time to settle;
//   2. saturation: BENCH_SAGA_INFLIGHT (256) orders kept in flight, each new
//      one placed when one settles (closed loop), for BENCH_SAGA_SECONDS.
// Latency "placed->confirmed" counts from the moment the order is sent to the
// moment its confirmation is heard; "reply->confirmed" from the PENDING reply.
// Every order asks for 1 to 3 of BENCH_SAGA_PRODUCTS (100) products with stock
// enough for the run and a card the simulator captures, so all confirm.
//
// Then, once the shop has stopped, the database bound (bench/saga-bound.ts):
// the same orders' SQL run from one process with BENCH_SAGA_INFLIGHT orders
// in flight, no NATS, no service processes; the saturation phase is printed
// as a ratio of it (BENCH_SAGA_BOUND=0 skips it).
//
// BENCH_SAGA_FRESHNESS=1: the BFF's read-model freshness too
// (bench/freshness.ts): alone for BENCH_SAGA_SECONDS first, then during every
// measured phase, a watcher restocks products of its own and times each until
// the BFF answers the new stock, and the BFF's shop_read_model_lag_seconds is
// read before and after.
//
// BENCH_CPU_PROF=<dir>: every process of the shop writes a V8 CPU profile
// there when it stops (the whole run; the saturation phase dominates it).
import { randomUUID } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import type { NatsConnection } from 'nats';
import { customers, orders, products } from '../subjects/index.ts';
import { RpcClient, connectNats, createLogger } from '../services/kit/index.ts';
import { GraphQLHttp, REGISTER, startShop, type Shop } from '../scripts/lib/shop.ts';
import {
  Latencies,
  StatusLine,
  cpuUsed,
  describeMachine,
  fmt,
  machine,
  progress,
  round,
  table,
  type LatencySummary,
} from '../scripts/lib/measure.ts';
import { intEnv, writeResults } from './common.ts';
import { runDatabaseBound, type BoundResult } from './saga-bound.ts';
import { FreshnessWatcher, type FreshnessFigures } from './freshness.ts';

export interface SagaSettings {
  /** Offered orders per second in the fixed-rate phases, one phase each. */
  rates: number[];
  /** Length of each measured phase. */
  seconds: number;
  warmupSeconds: number;
  /** Orders in flight in the saturation phase. */
  inflight: number;
  products: number;
  customers: number;
  via: 'rpc' | 'bff';
  /** Which measured phases to run: 'rate', 'saturation'. */
  phases: ('rate' | 'saturation')[];
  cpuProfileDir: string | undefined;
  /** Also run the database bound (bench/saga-bound.ts) after the shop stops. */
  bound: boolean;
  /** Measure the BFF's read-model freshness (bench/freshness.ts): alone first, then in each measured phase. */
  freshness: boolean;
  /** The freshness watcher: one restock this often, and a read through the BFF this often until it shows. */
  freshnessEveryMs: number;
  freshnessPollMs: number;
}

export function sagaSettings(): SagaSettings {
  return {
    rates: (process.env.BENCH_SAGA_RATES ?? process.env.BENCH_SAGA_RATE ?? '100,300')
      .split(',')
      .map(Number)
      .filter((rate) => Number.isFinite(rate) && rate > 0),
    seconds: intEnv('BENCH_SAGA_SECONDS', 20),
    warmupSeconds: intEnv('BENCH_SAGA_WARMUP_SECONDS', 5),
    inflight: intEnv('BENCH_SAGA_INFLIGHT', 256),
    products: intEnv('BENCH_SAGA_PRODUCTS', 100),
    customers: intEnv('BENCH_SAGA_CUSTOMERS', 50),
    via: process.env.BENCH_SAGA_VIA === 'bff' ? 'bff' : 'rpc',
    phases: (process.env.BENCH_SAGA_PHASES ?? 'rate,saturation')
      .split(',')
      .map((phase) => phase.trim())
      .filter((phase): phase is 'rate' | 'saturation' => phase === 'rate' || phase === 'saturation'),
    cpuProfileDir: process.env.BENCH_CPU_PROF || undefined,
    bound: process.env.BENCH_SAGA_BOUND !== '0',
    freshness: process.env.BENCH_SAGA_FRESHNESS === '1',
    freshnessEveryMs: intEnv('BENCH_SAGA_FRESHNESS_EVERY_MS', 100),
    freshnessPollMs: intEnv('BENCH_SAGA_FRESHNESS_POLL_MS', 2),
  };
}

export interface SagaPhase {
  name: string;
  offered: string;
  seconds: number;
  placed: number;
  confirmed: number;
  /** Orders that did not confirm: cancelled, failed to place, or unheard of by the end. */
  notConfirmed: { cancelled: number; placeFailed: number; unsettled: number };
  confirmedPerSecond: number;
  placedToConfirmedMs: LatencySummary;
  replyToConfirmedMs: LatencySummary;
  placeReplyMs: LatencySummary;
  /** Between the saga's steps, as heard by the bench. */
  hopsMs: Record<string, LatencySummary>;
  /** CPU seconds per process over the phase, and CPU milliseconds per confirmed order. */
  cpuSeconds: Record<string, number>;
  cpuMsPerOrder: Record<string, number>;
  /** A sample of errors from placing orders. */
  errors: string[];
  /** The BFF's freshness over the phase (BENCH_SAGA_FRESHNESS=1). */
  freshness?: FreshnessFigures;
}

export interface SagaResult {
  settings: SagaSettings;
  phases: SagaPhase[];
  /** The same orders' SQL run from one process (bench/saga-bound.ts), after the shop stopped; absent with BENCH_SAGA_BOUND=0. */
  bound?: BoundResult;
  /** The BFF's freshness with no orders coming in, before the phases (BENCH_SAGA_FRESHNESS=1). */
  idleFreshness?: FreshnessFigures;
  /** Warnings and errors the shop's processes logged during the run. */
  problems: Record<string, { count: number; first: string[] }>;
}

/** The saga's steps as the bench hears them, in order; each one's event carries the order id. */
const STEPS = [
  ['placed', orders.placed.subject],
  ['reserved', 'inventory.events.reserved'],
  ['captured', 'payments.events.captured'],
] as const;
type Step = (typeof STEPS)[number][0];

interface Outcome {
  status: 'CONFIRMED' | 'CANCELLED';
  at: number;
  /** When each earlier step's event was heard. */
  steps: Partial<Record<Step, number>>;
}

/** Hears every order's events on plain subscriptions and hands the outcome to whoever waits for that order. */
class Outcomes {
  readonly #waiting = new Map<string, (outcome: Outcome) => void>();
  /** Outcomes heard before anyone waited (an order whose reply is still on its way). */
  readonly #early = new Map<string, Outcome>();
  readonly #steps = new Map<string, Partial<Record<Step, number>>>();

  constructor(nc: NatsConnection) {
    const orderIdOf = (data: Uint8Array) => (JSON.parse(Buffer.from(data).toString()) as { data: { orderId: string } }).data.orderId;
    for (const [step, subject] of STEPS) {
      nc.subscribe(subject, {
        callback: (error, msg) => {
          if (error) return;
          const at = performance.now();
          const orderId = orderIdOf(msg.data);
          const steps = this.#steps.get(orderId);
          if (steps) steps[step] = at;
          else this.#steps.set(orderId, { [step]: at });
        },
      });
    }
    for (const [subject, status] of [
      [orders.confirmed.subject, 'CONFIRMED'],
      [orders.cancelled.subject, 'CANCELLED'],
    ] as const) {
      nc.subscribe(subject, {
        callback: (error, msg) => {
          if (error) return;
          const at = performance.now();
          const orderId = orderIdOf(msg.data);
          const outcome = { status, at, steps: this.#steps.get(orderId) ?? {} };
          this.#steps.delete(orderId);
          const resolve = this.#waiting.get(orderId);
          if (resolve) {
            this.#waiting.delete(orderId);
            resolve(outcome);
          } else {
            this.#early.set(orderId, outcome);
          }
        },
      });
    }
  }

  /** The order's outcome, or undefined when none is heard within `timeoutMs`. */
  wait(orderId: string, timeoutMs = 60_000): Promise<Outcome | undefined> {
    const early = this.#early.get(orderId);
    if (early) {
      this.#early.delete(orderId);
      return Promise.resolve(early);
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(orderId);
        resolve(undefined);
      }, timeoutMs);
      this.#waiting.set(orderId, (outcome) => {
        clearTimeout(timer);
        resolve(outcome);
      });
    });
  }
}

interface Shopper {
  id: string;
  token?: string;
}

type Line = { productId: string; quantity: number };
type PlaceOrder = (shopper: Shopper, lines: Line[]) => Promise<string>;

const PLACE_ORDER = `mutation ($lines: [OrderLineInput!]!, $token: String!) {
  placeOrder(lines: $lines, paymentToken: $token) { id status }
}`;

/** Collects one phase's figures. */
class Phase {
  readonly placedToConfirmed = new Latencies();
  readonly replyToConfirmed = new Latencies();
  readonly placeReply = new Latencies();
  /** Time spent between consecutive steps of confirmed orders: each is one service's work plus its outbox relay. */
  readonly hops = {
    'reply->placed (order relay)': new Latencies(),
    'placed->reserved (product)': new Latencies(),
    'reserved->captured (payment)': new Latencies(),
    'captured->confirmed (order)': new Latencies(),
  };
  placed = 0;
  confirmed = 0;
  cancelled = 0;
  placeFailed = 0;
  unsettled = 0;
  /** Confirmations heard inside the measured window. */
  confirmedInWindow = 0;
  readonly errors: string[] = [];
  windowStart = 0;
  windowEnd = Number.POSITIVE_INFINITY;

  /** Places one order and follows it to its outcome; never throws. */
  async order(place: PlaceOrder, outcomes: Outcomes, shopper: Shopper, lines: Line[]): Promise<void> {
    const sent = performance.now();
    let orderId: string;
    try {
      orderId = await place(shopper, lines);
    } catch (error) {
      this.placeFailed++;
      if (this.errors.length < 10) this.errors.push((error as Error).message);
      return;
    }
    const replied = performance.now();
    this.placed++;
    this.placeReply.add(replied - sent);
    const outcome = await outcomes.wait(orderId);
    if (!outcome) {
      this.unsettled++;
      return;
    }
    if (outcome.status !== 'CONFIRMED') {
      this.cancelled++;
      return;
    }
    this.confirmed++;
    if (outcome.at >= this.windowStart && outcome.at <= this.windowEnd) this.confirmedInWindow++;
    this.placedToConfirmed.add(outcome.at - sent);
    this.replyToConfirmed.add(outcome.at - replied);
    const { placed, reserved, captured } = outcome.steps;
    if (placed !== undefined && reserved !== undefined && captured !== undefined) {
      this.hops['reply->placed (order relay)'].add(placed - replied);
      this.hops['placed->reserved (product)'].add(reserved - placed);
      this.hops['reserved->captured (payment)'].add(captured - reserved);
      this.hops['captured->confirmed (order)'].add(outcome.at - captured);
    }
  }
}

export async function runSagaBench(settings: SagaSettings = sagaSettings()): Promise<SagaResult> {
  if (settings.cpuProfileDir) await mkdir(settings.cpuProfileDir, { recursive: true });
  progress(`saga: starting the shop (5 services and the BFF as child processes, nats-server, SMTP sink)`);
  const shop: Shop = await startShop({ bff: true, cpuProfileDir: settings.cpuProfileDir, opsPorts: settings.freshness });
  const log = createLogger('bench', 'warn');
  const nc = await connectNats('bench', { NATS_URL: shop.natsUrl }, log);
  const client = new RpcClient(nc, { timeoutMs: 30_000, retries: 0 });
  const gql = new GraphQLHttp(shop.bffUrl!, settings.inflight + 16);
  const phases: SagaPhase[] = [];
  let problems: SagaResult['problems'] = {};
  let idleFreshness: FreshnessFigures | undefined;
  try {
    progress(`saga: ${settings.products} products, ${settings.customers} customers`);
    const catalog: string[] = [];
    for (let i = 0; i < settings.products; i++) {
      const product = await client.call(products.create, {
        sku: `saga-${i}`,
        name: `Saga product ${i}`,
        price: { amount: 100 + i, currency: 'EUR' },
        initialStock: 1_000_000_000,
      });
      catalog.push(product.id);
    }
    const shoppers: Shopper[] = [];
    // Registration hashes a password (scrypt): a few at a time.
    for (let i = 0; i < settings.customers; i += 8) {
      const batch = Array.from({ length: Math.min(8, settings.customers - i) }, (_, j) => i + j);
      shoppers.push(
        ...(await Promise.all(
          batch.map(async (n) => {
            const email = `saga-${n}@bench.test`;
            const password = 'bench-password';
            if (settings.via === 'rpc') {
              return { id: (await client.call(customers.register, { email, name: `Shopper ${n}`, password })).id };
            }
            const { register } = await gql.ok<{ register: { token: string; customer: { id: string } } }>(REGISTER, {
              email,
              name: `Shopper ${n}`,
              password,
            });
            return { id: register.customer.id, token: register.token };
          }),
        )),
      );
    }

    // The freshness watcher's own products: no order touches them, so their stock moves only by its restocks.
    let watcher: FreshnessWatcher | undefined;
    if (settings.freshness) {
      const watched: string[] = [];
      for (let i = 0; i < 4; i++) {
        const product = await client.call(products.create, {
          sku: `fresh-${i}`,
          name: `Freshness product ${i}`,
          price: { amount: 100, currency: 'EUR' },
          initialStock: 0,
        });
        watched.push(product.id);
      }
      watcher = new FreshnessWatcher(client, gql, await nc.jetstreamManager(), watched, shop.opsPorts.get('bff')!, {
        everyMs: settings.freshnessEveryMs,
        pollMs: settings.freshnessPollMs,
      });
    }

    const place: PlaceOrder =
      settings.via === 'rpc'
        ? async (shopper, lines) =>
            (await client.call(orders.place, { idempotencyKey: randomUUID(), customerId: shopper.id, lines, paymentToken: 'tok_bench_ok' }))
              .id
        : async (shopper, lines) =>
            (await gql.ok<{ placeOrder: { id: string } }>(PLACE_ORDER, { lines, token: 'tok_bench_ok' }, shopper.token)).placeOrder.id;
    const outcomes = new Outcomes(nc);
    let next = 0;
    const nextOrder = (): [Shopper, Line[]] => {
      const n = next++;
      const count = 1 + (n % 3);
      const first = (n * 7) % catalog.length;
      const lines = Array.from({ length: count }, (_, k) => ({
        productId: catalog[(first + k * 37) % catalog.length]!,
        quantity: 1 + (k % 2),
      }));
      return [shoppers[n % shoppers.length]!, lines];
    };

    const status = new StatusLine(2000);
    const watch = (phase: Phase, label: string) => {
      const started = performance.now();
      const timer = setInterval(() => {
        const elapsed = (performance.now() - started) / 1000;
        status.show(
          `  ${label} ${elapsed.toFixed(0)}s: placed ${phase.placed}, confirmed ${phase.confirmed} ` +
            `(${fmt(phase.confirmed / Math.max(elapsed, 0.001))}/s), failed ${phase.placeFailed}`,
        );
      }, 500);
      return () => {
        clearInterval(timer);
        status.done();
      };
    };

    /** Closed loop: `inflight` orders always on their way, for `seconds`. */
    const closedLoop = async (phase: Phase, inflight: number, seconds: number) => {
      const end = performance.now() + seconds * 1000;
      phase.windowStart = performance.now();
      phase.windowEnd = end;
      await Promise.all(
        Array.from({ length: inflight }, async () => {
          while (performance.now() < end) await phase.order(place, outcomes, ...nextOrder());
        }),
      );
    };

    /** Open loop: orders sent on a fixed schedule of `rate` per second, for `seconds`; then waits for them to settle. */
    const openLoop = async (phase: Phase, rate: number, seconds: number) => {
      const total = Math.round(rate * seconds);
      const start = performance.now();
      phase.windowStart = start;
      phase.windowEnd = start + seconds * 1000;
      const inFlight: Promise<void>[] = [];
      let sent = 0;
      while (sent < total) {
        const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * rate) + 1);
        for (; sent < due; sent++) inFlight.push(phase.order(place, outcomes, ...nextOrder()));
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      // Each order gives up on its outcome after a minute (counted as unsettled).
      await Promise.all(inFlight);
    };

    const measure = async (name: string, offered: string, run: (phase: Phase) => Promise<void>): Promise<SagaPhase> => {
      const phase = new Phase();
      const watching = name !== 'warm-up' ? watcher : undefined;
      await watching?.start();
      const before = await shop.cpuSnapshot();
      const stop = watch(phase, name);
      await run(phase);
      const after = await shop.cpuSnapshot();
      stop();
      const freshness = await watching?.stop();
      const unsettled = phase.unsettled;
      const seconds = (phase.windowEnd - phase.windowStart) / 1000;
      const cpu = cpuUsed(before, after);
      const cpuMsPerOrder = Object.fromEntries(
        Object.entries(cpu).map(([process, used]) => [process, round((used * 1000) / Math.max(1, phase.confirmed), 3)]),
      );
      const result: SagaPhase = {
        name,
        offered,
        seconds: round(seconds, 2),
        placed: phase.placed,
        confirmed: phase.confirmed,
        notConfirmed: { cancelled: phase.cancelled, placeFailed: phase.placeFailed, unsettled },
        confirmedPerSecond: round(phase.confirmedInWindow / seconds, 1),
        placedToConfirmedMs: phase.placedToConfirmed.summary(),
        replyToConfirmedMs: phase.replyToConfirmed.summary(),
        placeReplyMs: phase.placeReply.summary(),
        hopsMs: Object.fromEntries(Object.entries(phase.hops).map(([hop, latencies]) => [hop, latencies.summary()])),
        cpuSeconds: cpu,
        cpuMsPerOrder,
        errors: phase.errors,
        ...(freshness ? { freshness } : {}),
      };
      progress(
        `  ${name}: ${fmt(result.confirmedPerSecond)} confirmed/s, placed->confirmed p50 ${result.placedToConfirmedMs.p50} ms ` +
          `p99 ${result.placedToConfirmedMs.p99} ms (${result.confirmed} confirmed, ${phase.cancelled} cancelled, ` +
          `${phase.placeFailed} failed, ${unsettled} unsettled)`,
      );
      return result;
    };

    progress(`saga: warm-up, ${settings.warmupSeconds}s at ${Math.min(64, settings.inflight)} in flight`);
    await measure('warm-up', `${Math.min(64, settings.inflight)} in flight`, (phase) =>
      closedLoop(phase, Math.min(64, settings.inflight), settings.warmupSeconds),
    );
    if (watcher) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      progress(`saga: the BFF's freshness with no orders, ${settings.seconds}s`);
      await watcher.start();
      await new Promise((resolve) => setTimeout(resolve, settings.seconds * 1000));
      idleFreshness = await watcher.stop();
    }
    for (const rate of settings.phases.includes('rate') ? settings.rates : []) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      progress(`saga: fixed rate, ${rate} orders/s offered for ${settings.seconds}s`);
      phases.push(await measure('fixed rate', `${rate}/s`, (phase) => openLoop(phase, rate, settings.seconds)));
    }
    if (settings.phases.includes('saturation')) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      progress(`saga: saturation, ${settings.inflight} orders in flight for ${settings.seconds}s`);
      phases.push(
        await measure('saturation', `${settings.inflight} in flight`, (phase) => closedLoop(phase, settings.inflight, settings.seconds)),
      );
    }
    problems = shop.problems();
    for (const [name, found] of Object.entries(problems)) {
      progress(`  ${name} logged ${found.count} warnings or errors, e.g. ${found.first[0]?.slice(0, 300)}`);
    }
  } finally {
    gql.close();
    client.close();
    await nc.drain().catch(() => {});
    progress('saga: stopping the shop');
    await shop.stop();
  }
  let bound: BoundResult | undefined;
  if (settings.bound) {
    progress(`saga: the database bound, ${settings.inflight} orders in flight for ${settings.seconds}s`);
    bound = await runDatabaseBound({
      seconds: settings.seconds,
      inflight: settings.inflight,
      products: settings.products,
      customers: Math.min(10, settings.customers),
    });
  }
  return { settings, phases, problems, ...(bound ? { bound } : {}), ...(idleFreshness ? { idleFreshness } : {}) };
}

/** The saturation phase's confirmed orders/s as a share of the database bound. */
export function boundLine(result: SagaResult): string {
  const saturation = result.phases.find((phase) => phase.name === 'saturation');
  if (!result.bound || !saturation) return '';
  const ratio = saturation.confirmedPerSecond / result.bound.confirmedPerSecond;
  return (
    `database bound (the same orders' SQL from one process, no NATS): ${fmt(result.bound.confirmedPerSecond)} confirmed/s; ` +
    `the saga at saturation ${fmt(saturation.confirmedPerSecond)}/s = ${ratio.toFixed(2)}x of it\n` +
    `CPU ms per confirmed order: bound PostgreSQL ${result.bound.cpuMsPerOrder.postgres}, bound process ${result.bound.cpuMsPerOrder.process}; ` +
    `saga PostgreSQL ${saturation.cpuMsPerOrder.postgres ?? 'n/a'}, saga everything else ` +
    `${round(
      Object.entries(saturation.cpuMsPerOrder)
        .filter(([name]) => name !== 'postgres')
        .reduce((sum, [, ms]) => sum + ms, 0),
      3,
    )}`
  );
}

/** A phase's column title: its offered rate, or saturation. */
export function phaseLabel(phase: SagaPhase): string {
  return phase.name === 'saturation' ? 'saturation' : `${phase.offered} offered`;
}

/** Table rows of a saga result, for this file's own output and for bench/run.ts. */
export function sagaRows(result: SagaResult): string[][] {
  return result.phases.map((phase) => [
    `saga ${phase.name} (${phase.offered})`,
    fmt(phase.confirmedPerSecond),
    `${phase.placedToConfirmedMs.p50} / ${phase.placedToConfirmedMs.p99}`,
    `${phase.replyToConfirmedMs.p50} / ${phase.replyToConfirmedMs.p99}`,
    `${phase.confirmed}/${phase.placed + phase.notConfirmed.placeFailed}`,
  ]);
}

/** p50 / p99 of each step of the saga, per phase. */
export function sagaHopTable(result: SagaResult): string {
  const phases = result.phases;
  const names = ['place reply', ...Object.keys(phases[0]?.hopsMs ?? {})];
  const cell = (summary: LatencySummary | undefined) => (summary ? `${summary.p50} / ${summary.p99}` : 'n/a');
  const rows = names.map((name) => [
    name,
    ...phases.map((phase) => cell(name === 'place reply' ? phase.placeReplyMs : phase.hopsMs[name])),
  ]);
  return table(['step, p50 / p99 ms', ...phases.map(phaseLabel)], rows);
}

/** CPU milliseconds per confirmed order, per process, at saturation: where the cores go. */
export function sagaCpuTable(result: SagaResult): string {
  const phases = result.phases;
  const names = [...new Set(phases.flatMap((phase) => Object.keys(phase.cpuMsPerOrder)))];
  const rows = names.map((name) => [name, ...phases.map((phase) => fmt(phase.cpuMsPerOrder[name] ?? Number.NaN, 2))]);
  const total = [
    'total',
    ...phases.map((phase) =>
      fmt(
        Object.values(phase.cpuMsPerOrder).reduce((a, b) => a + b, 0),
        2,
      ),
    ),
  ];
  return table(['CPU ms per confirmed order', ...phases.map(phaseLabel)], [...rows, total]);
}

/** The BFF's freshness per phase (BENCH_SAGA_FRESHNESS=1); empty otherwise. */
export function sagaFreshnessTable(result: SagaResult): string {
  const measured: [string, FreshnessFigures][] = [
    ...(result.idleFreshness ? [['no orders', result.idleFreshness] as [string, FreshnessFigures]] : []),
    ...result.phases.flatMap((phase) => (phase.freshness ? [[phaseLabel(phase), phase.freshness] as [string, FreshnessFigures]] : [])),
  ];
  if (measured.length === 0) return '';
  const pair = (summary: LatencySummary) => `${summary.p50} / ${summary.p99}`;
  const rows = measured.map(([label, figures]) => [
    label,
    `${figures.restocks - figures.notSeen}/${figures.restocks}`,
    pair(figures.replyToVisibleMs),
    pair(figures.sentToVisibleMs),
    `${pair(figures.replyToStoredMs)} + ${pair(figures.storedToVisibleMs)}`,
    fmt(figures.sentToVisibleMs.max, 1),
    fmt(figures.metric.states),
    `${figures.metric.p50Ms} / ${figures.metric.p99Ms}`,
    `${round(figures.metric.within100Ms * 100, 2)} %`,
  ]);
  return table(
    [
      'BFF freshness',
      'restocks seen',
      'reply->visible p50/p99 ms',
      'sent->visible p50/p99 ms',
      'reply->stored + stored->visible, p50/p99 ms',
      'max ms',
      'lag metric: states',
      'p50/p99 ms (est.)',
      '<= 100 ms',
    ],
    rows,
  );
}

if (import.meta.main) {
  const m = machine();
  progress(`machine: ${describeMachine(m)}`);
  const result = await runSagaBench();
  process.stdout.write(
    `\nmachine: ${describeMachine(m)}\nsaga entry: ${result.settings.via === 'rpc' ? 'orders.place (kit RpcClient)' : 'BFF placeOrder'}\n\n` +
      `${table(['phase', 'confirmed/s', 'placed->confirmed p50/p99 ms', 'reply->confirmed p50/p99 ms', 'confirmed'], sagaRows(result))}\n\n` +
      `${sagaHopTable(result)}\n\n${sagaCpuTable(result)}\n\n${result.idleFreshness ? `${sagaFreshnessTable(result)}\n\n` : ''}${boundLine(result)}\n`,
  );
  const file = await writeResults('saga', {
    at: new Date().toISOString(),
    machine: { ...m, loadAverageAtEnd: machine().loadAverage },
    ...result,
  });
  progress(`\nwritten ${file}`);
}
