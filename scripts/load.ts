// `npm run load`: simulated shoppers against the BFF over GraphQL.
//
// Each shopper registers, browses the catalog (a page, then a few products),
// places orders (most go through; some with a card the payment simulator
// declines; some asking for more than is in stock), follows each order's
// status until it is CONFIRMED or CANCELLED (the orderUpdated subscription
// over WebSocket, or polling), then looks at their order list. Shoppers
// arrive at a fixed rate for a given time; a live line shows progress and a
// summary follows at the end: latencies and errors per operation, and every
// order's outcome against the one its kind should have.
//
//   npm run load                           starts a shop of its own (as `npm run bench` does) and loads it
//   npm run load -- --url http://127.0.0.1:4000 --admin-email a@b.c --admin-password ...
//                                          loads a running BFF (the admin, named in the customer
//                                          service's ADMIN_EMAILS, seeds products; without one the
//                                          catalog is used as it is)
//
// Options (or environment LOAD_<NAME>, e.g. LOAD_RATE=20):
//   --rate N            shoppers arriving per second (default 5)
//   --duration S        seconds of arrivals (default 30)
//   --max-active N      shoppers at once at most; an arrival beyond is counted as turned away (default 500)
//   --orders N          orders per shopper (default 2)
//   --browse N          product pages viewed per shopper (default 3)
//   --mix ok=85,decline=10,oos=5
//                       the kinds of order, by weight: paid, declined card, out of stock
//   --follow ws|poll    how shoppers follow an order (default ws)
//   --think MS          pause between a shopper's steps (default 0)
//   --settle S          longest wait for one order to be settled (default 60)
//   --products N        products to seed in a shop of our own or with an admin (default 20)
//   --json FILE         also write the summary as JSON
// A running BFF limits requests per user and per address (RATE_LIMIT_MAX, or
// `npm run config -- set bff.rate_limit_max ...`); registrations all come from
// this address, so raise it for high rates. A shop of our own has it raised.
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { GraphQLHttp, REGISTER, adminToken, createProducts, startShop, type Shop } from './lib/shop.ts';
import { Latencies, StatusLine, describeMachine, fmt, machine, progress, table, type LatencySummary } from './lib/measure.ts';
import { KINDS, PLACE_ORDER, Subscriptions, expectedOutcome, parseMix, pickKind, type Kind, type OrderState } from './lib/order-follow.ts';
import { scriptOptions } from './options.ts';

// --- Options -----------------------------------------------------------------------------------------

const { option, numberOption } = scriptOptions({
  url: import.meta.url,
  command: 'load',
  envPrefix: 'LOAD',
  names: [
    'url',
    'admin-email',
    'admin-password',
    'rate',
    'duration',
    'max-active',
    'orders',
    'browse',
    'mix',
    'follow',
    'think',
    'settle',
    'products',
    'json',
  ],
});

const settings = {
  url: option('url'),
  rate: numberOption('rate', 5, 0.01),
  durationS: numberOption('duration', 30, 1),
  maxActive: numberOption('max-active', 500, 1),
  ordersPerShopper: numberOption('orders', 2),
  browse: numberOption('browse', 3),
  mix: parseMix(option('mix') ?? 'ok=85,decline=10,oos=5'),
  follow: (option('follow') ?? 'ws') as 'ws' | 'poll',
  thinkMs: numberOption('think', 0),
  settleS: numberOption('settle', 60, 1),
  products: numberOption('products', 20, 1),
};
if (settings.follow !== 'ws' && settings.follow !== 'poll') throw new Error('--follow is ws or poll');

// --- Measuring -----------------------------------------------------------------------------------------

const OPERATIONS = ['register', 'products', 'product', 'placeOrder', 'follow', 'orders'] as const;
type Operation = (typeof OPERATIONS)[number];

class Stats {
  readonly latency = new Map<Operation, Latencies>(OPERATIONS.map((op) => [op, new Latencies()]));
  readonly errors = new Map<string, number>();
  requests = 0;
  arrived = 0;
  turnedAway = 0;
  active = 0;
  finished = 0;
  readonly orders = { placed: 0, confirmed: 0, cancelled: 0, unsettled: 0, unexpected: 0 };
  readonly outcomes = new Map<string, number>();
  /** Unexpected outcomes, a few of them, for the summary. */
  readonly surprises: string[] = [];

  error(op: Operation, code: string): void {
    const key = `${op}: ${code}`;
    this.errors.set(key, (this.errors.get(key) ?? 0) + 1);
  }

  outcome(kind: Kind, result: string): void {
    const key = `${kind} -> ${result}`;
    this.outcomes.set(key, (this.outcomes.get(key) ?? 0) + 1);
  }
}

const stats = new Stats();

/** Runs one GraphQL operation, timed and counted; undefined (counted as an error) when it fails. */
async function timed<T>(op: Operation, run: () => Promise<T>): Promise<T | undefined> {
  const started = performance.now();
  stats.requests++;
  try {
    const value = await run();
    stats.latency.get(op)!.add(performance.now() - started);
    return value;
  } catch (error) {
    stats.error(op, (error as { code?: string }).code ?? (error as Error).message.slice(0, 80));
    return undefined;
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// --- GraphQL ---------------------------------------------------------------------------------------------

const PRODUCTS = `query ($first: Int, $search: String) {
  products(first: $first, search: $search) { edges { node { id name price { amount currency } available } } pageInfo { hasNextPage endCursor } }
}`;
const PRODUCT = `query ($id: ID!) { product(id: $id) { id sku name description price { amount currency } available } }`;
const ORDER_STATUS = `query ($id: ID!) { order(id: $id) { id status cancelReason } }`;
const MY_ORDERS = `query { orders(first: 5) { edges { node { id status total { amount currency } } } } }`;

// --- The shop and its catalog ----------------------------------------------------------------------------

interface CatalogProduct {
  id: string;
  available: number;
}

interface Catalog {
  /** Products with plenty of stock, for orders that should go through. */
  inStock: CatalogProduct[];
  /** A product and a quantity beyond its stock, for orders that must be rejected; undefined when none fits. */
  scarce: CatalogProduct | undefined;
}

async function prepareCatalog(client: GraphQLHttp, seed: boolean): Promise<Catalog> {
  if (seed) {
    const token = await adminToken(client, option('admin-email'), option('admin-password'));
    const prefix = `load-${randomBytes(3).toString('hex')}`;
    const inStock = await createProducts(client, token, settings.products, 1_000_000_000, prefix);
    const [soldOut] = await createProducts(client, token, 1, 0, `${prefix}-sold-out`);
    return { inStock, scarce: soldOut };
  }
  const { products } = await client.ok<{ products: { edges: { node: CatalogProduct }[] } }>(PRODUCTS, { first: 100 });
  const all = products.edges.map((edge) => edge.node);
  const inStock = all.filter((product) => product.available >= 1000);
  const scarce = all.filter((product) => product.available < 1000).sort((a, b) => a.available - b.available)[0];
  if (inStock.length === 0) throw new Error('the catalog has no product with 1000 or more units available; seed one with --admin-email');
  return { inStock, scarce };
}

// --- A shopper ---------------------------------------------------------------------------------------------

const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)]!;

async function shopper(client: GraphQLHttp, baseUrl: string, catalog: Catalog, serial: number): Promise<void> {
  const think = () => (settings.thinkMs > 0 ? sleep(settings.thinkMs * (0.5 + Math.random())) : Promise.resolve());
  const email = `shopper-${serial}-${randomBytes(4).toString('hex')}@load.test`;
  const auth = await timed('register', () =>
    client.ok<{ register: { token: string } }>(REGISTER, { email, name: `Shopper ${serial}`, password: 'load-test-password' }),
  );
  if (!auth) return;
  const token = auth.register.token;
  await think();

  const page = await timed('products', () => client.ok<{ products: { edges: { node: CatalogProduct }[] } }>(PRODUCTS, { first: 20 }));
  const seen = page?.products.edges.map((edge) => edge.node.id) ?? [];
  for (let i = 0; i < settings.browse; i++) {
    await think();
    await timed('product', () => client.ok(PRODUCT, { id: pick(seen.length > 0 ? seen : catalog.inStock.map((p) => p.id)) }));
  }

  let subscriptions: Subscriptions | undefined;
  if (settings.follow === 'ws' && settings.ordersPerShopper > 0) {
    subscriptions = await Subscriptions.open(baseUrl, token).catch((error: Error) => {
      stats.error('follow', `websocket: ${error.message}`);
      return undefined;
    });
  }
  try {
    const following: Promise<void>[] = [];
    for (let n = 0; n < settings.ordersPerShopper; n++) {
      await think();
      let kind = pickKind(settings.mix);
      if (kind === 'oos' && !catalog.scarce) kind = 'ok';
      const lineCount = 1 + Math.floor(Math.random() * 3);
      const lines = new Map<string, number>();
      for (let i = 0; i < lineCount; i++) lines.set(pick(catalog.inStock).id, 1 + Math.floor(Math.random() * 2));
      if (kind === 'oos') lines.set(catalog.scarce!.id, catalog.scarce!.available + 1);
      const placed = await timed('placeOrder', () =>
        client.ok<{ placeOrder: { id: string } }>(
          PLACE_ORDER,
          {
            lines: [...lines].map(([productId, quantity]) => ({ productId, quantity })),
            token: kind === 'decline' ? 'tok_decline' : 'tok_load_ok',
          },
          token,
        ),
      );
      if (!placed) continue;
      stats.orders.placed++;
      following.push(follow(client, subscriptions, token, placed.placeOrder.id, kind));
    }
    await Promise.all(following);
    await think();
    await timed('orders', () => client.ok(MY_ORDERS, {}, token));
  } finally {
    subscriptions?.close();
  }
}

/** Follows one order to its end and checks the end against its kind. */
async function follow(
  client: GraphQLHttp,
  subscriptions: Subscriptions | undefined,
  token: string,
  orderId: string,
  kind: Kind,
): Promise<void> {
  const timeoutMs = settings.settleS * 1000;
  const settled = await timed('follow', async () => {
    if (subscriptions) return subscriptions.untilSettled(orderId, timeoutMs);
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const { order } = await client.ok<{ order: OrderState }>(ORDER_STATUS, { id: orderId }, token);
      if (order.status !== 'PENDING') return order;
      if (performance.now() > deadline) throw Object.assign(new Error('not settled in time'), { code: 'UNSETTLED' });
      await sleep(200);
    }
  });
  if (!settled) {
    stats.orders.unsettled++;
    stats.outcome(kind, 'not settled');
    return;
  }
  if (settled.status === 'CONFIRMED') stats.orders.confirmed++;
  else stats.orders.cancelled++;
  const result = settled.status === 'CONFIRMED' ? 'CONFIRMED' : `CANCELLED ${settled.cancelReason}`;
  stats.outcome(kind, result);
  const expected = expectedOutcome[kind];
  if (result !== expected) {
    stats.orders.unexpected++;
    if (stats.surprises.length < 5) stats.surprises.push(`order ${orderId} (${kind}) ended ${result}, expected ${expected}`);
  }
}

// --- The run -------------------------------------------------------------------------------------------------

const m = machine();
progress(`machine: ${describeMachine(m)}`);
let shop: Shop | undefined;
let baseUrl = settings.url;
if (!baseUrl) {
  progress('load: no --url; starting a shop of its own (every service and the BFF as child processes, nats-server, SMTP sink)');
  shop = await startShop({ bff: true });
  baseUrl = shop.bffUrl!;
}
const client = new GraphQLHttp(baseUrl, settings.maxActive * 2);
const status = new StatusLine(5000);
let exitCode = 0;
try {
  const catalog = await prepareCatalog(client, shop !== undefined || option('admin-email') !== undefined);
  progress(
    `load: ${settings.rate} shoppers/s for ${settings.durationS}s against ${baseUrl}; ${settings.ordersPerShopper} orders each, ` +
      `mix ${KINDS.map((kind) => `${kind}=${settings.mix[kind]}`).join(',')}, follow by ${settings.follow}`,
  );
  const started = performance.now();
  const end = started + settings.durationS * 1000;
  const running = new Set<Promise<void>>();
  let last = { at: started, requests: 0, placed: 0, settled: 0 };
  const show = () => {
    const now = performance.now();
    const seconds = (now - last.at) / 1000;
    const settled = stats.orders.confirmed + stats.orders.cancelled;
    const placeP99 = stats.latency.get('placeOrder')!.percentile(99);
    const errors = [...stats.errors.values()].reduce((a, b) => a + b, 0);
    status.show(
      `${((now - started) / 1000).toFixed(0).padStart(4)}s  shoppers ${stats.active} active, ${stats.finished} done` +
        ` | ${fmt((stats.requests - last.requests) / seconds)} req/s` +
        ` | orders ${stats.orders.placed} placed (${fmt((stats.orders.placed - last.placed) / seconds)}/s),` +
        ` ${stats.orders.confirmed} confirmed, ${stats.orders.cancelled} cancelled` +
        ` | placeOrder p99 ${fmt(placeP99)} ms | errors ${errors}`,
    );
    last = { at: now, requests: stats.requests, placed: stats.orders.placed, settled };
  };
  const ticker = setInterval(show, 1000);
  let serial = 0;
  // Arrivals on a fixed schedule, whatever the shop's answers (an open model).
  while (performance.now() < end) {
    const due = Math.floor(((performance.now() - started) / 1000) * settings.rate);
    for (; serial < due; serial++) {
      stats.arrived++;
      if (stats.active >= settings.maxActive) {
        stats.turnedAway++;
        continue;
      }
      stats.active++;
      const run: Promise<void> = shopper(client, baseUrl, catalog, serial)
        .catch((error: Error) => stats.error('register', `crashed: ${error.message}`))
        .finally(() => {
          stats.active--;
          stats.finished++;
          running.delete(run);
        });
      running.add(run);
    }
    await sleep(Math.max(1, Math.min(50, 1000 / settings.rate / 2)));
  }
  progress(`\nload: arrivals over; waiting for ${stats.active} shoppers to finish`);
  await Promise.all(running);
  clearInterval(ticker);
  show();
  status.done();
  const elapsed = (performance.now() - started) / 1000;

  // --- Summary ---
  const summary = {
    at: new Date().toISOString(),
    machine: { ...m, loadAverageAtEnd: machine().loadAverage },
    target: baseUrl,
    settings,
    seconds: Math.round(elapsed * 10) / 10,
    shoppers: { arrived: stats.arrived, turnedAway: stats.turnedAway, finished: stats.finished },
    requests: stats.requests,
    requestsPerSecond: Math.round(stats.requests / elapsed),
    operations: Object.fromEntries(OPERATIONS.map((op) => [op, stats.latency.get(op)!.summary()])) as Record<Operation, LatencySummary>,
    errors: Object.fromEntries(stats.errors),
    orders: { ...stats.orders, perSecond: Math.round((stats.orders.placed / elapsed) * 10) / 10 },
    outcomes: Object.fromEntries(stats.outcomes),
    surprises: stats.surprises,
  };
  const opRows = OPERATIONS.map((op) => {
    const s = summary.operations[op];
    const failed = [...stats.errors].filter(([key]) => key.startsWith(`${op}:`)).reduce((sum, [, count]) => sum + count, 0);
    return [op, String(s.count), String(failed), fmt(s.p50, 1), fmt(s.p90, 1), fmt(s.p99, 1), fmt(s.max, 1)];
  });
  let out = `\nload summary: ${summary.seconds}s against ${baseUrl}\n`;
  out += `shoppers: ${stats.arrived} arrived, ${stats.turnedAway} turned away (over --max-active), ${stats.finished} finished\n`;
  out += `requests: ${stats.requests} (${summary.requestsPerSecond}/s); orders: ${stats.orders.placed} placed (${summary.orders.perSecond}/s), `;
  out += `${stats.orders.confirmed} confirmed, ${stats.orders.cancelled} cancelled, ${stats.orders.unsettled} not settled, ${stats.orders.unexpected} unexpected\n\n`;
  out += `${table(['operation (ms)', 'ok', 'errors', 'p50', 'p90', 'p99', 'max'], opRows)}\n`;
  out += `  (follow: from the placeOrder answer until CONFIRMED or CANCELLED is heard)\n\n`;
  out += `${table(
    ['order kind -> outcome', 'orders'],
    [...stats.outcomes].sort().map(([key, count]) => [key, String(count)]),
  )}\n`;
  if (stats.errors.size > 0)
    out += `\n${table(
      ['error', 'count'],
      [...stats.errors].sort((a, b) => b[1] - a[1]).map(([key, count]) => [key, String(count)]),
    )}\n`;
  for (const surprise of stats.surprises) out += `unexpected: ${surprise}\n`;
  process.stdout.write(out);
  const jsonFile = option('json');
  if (jsonFile) await writeFile(jsonFile, `${JSON.stringify(summary, null, 2)}\n`);
  if (stats.orders.unexpected > 0 || stats.orders.unsettled > 0) exitCode = 1;
} finally {
  status.done();
  client.close();
  if (shop) {
    progress('load: stopping the shop');
    await shop.stop();
  }
}
process.exit(exitCode);
