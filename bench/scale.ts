// The catalog and the order history at size (`npm run bench:scale`): the
// whole shop as production runs it (scripts/lib/shop.ts startShop), its
// catalog grown to each of BENCH_SCALE_SIZES (comma-separated; 10k, 100k, 1M
// products by default) and one customer's orders to a tenth of that (100k at
// the end). Rows are written straight into the databases
// (test/catalog-seed.ts: INSERT … SELECT generate_series); the products'
// states then go the way a real product's do: written to the product
// service's outbox by the kit's writeStates (read back through the service's
// own store), put into the catalog bucket by the service's relay, and
// followed by the BFF's replica (bff/replica.ts), which serves catalog pages.
// The bench waits until the replica has applied every one (the BFF's
// shop_read_model_lag_seconds count), then, at each size, real GraphQL over
// HTTP to the BFF, one request at a time, BENCH_SCALE_SAMPLES (300) of each:
//   - products(search:) for a model code (one product in the catalog, a
//     different one each time): the product service's trigram index;
//   - products(search:) for a sku prefix (a hundred products): its trigrams
//     are in every row, so the index reads long lists;
//   - products(search:) for a word in one description in 13: a tenth of
//     the samples (its cost follows its matches, which grow with the catalog);
//   - a deep catalog page: from 90 % of the way through the catalog, each
//     sample the page after the previous one's cursor (the BFF's replica);
//   - the customer's orders: the first page, and pages from 90 % of the way
//     through the history, followed by their cursors.
// Then it prints p50/p99 per size, the ratio of each p99 to the first
// size's, and the BFF's memory at each size (RSS from /proc, V8's heap in
// use from its /metrics). The target: p99 at 1M at most 2x p99 at 10k.
import { performance } from 'node:perf_hooks';
import pRetry from 'p-retry';
import pg from 'pg';
import { readFile } from 'node:fs/promises';
import { writeStates } from '../services/kit/index.ts';
import { encodeCursor as orderCursor } from '../services/order/handlers.ts';
import { findProducts } from '../services/product/store.ts';
import { encodeCatalogCursor as catalogCursor, products as productContracts, type Product } from '../subjects/index.ts';
import { BROAD_WORD, seedOrders, seedProducts, seededId, seededModel, seededSku } from '../test/catalog-seed.ts';
import { GraphQLHttp, REGISTER, startShop } from '../scripts/lib/shop.ts';
import { Latencies, describeMachine, fmt, machine, progress, round, table, type LatencySummary } from '../scripts/lib/measure.ts';
import { intEnv, writeResults } from './common.ts';
import { waitFor } from '../test/harness.ts';

const sizes = (process.env.BENCH_SCALE_SIZES ?? '10000,100000,1000000')
  .split(',')
  .map(Number)
  .filter((size) => Number.isInteger(size) && size > 0)
  .sort((a, b) => a - b);
const samples = intEnv('BENCH_SCALE_SAMPLES', 300);
/** Rows per INSERT while seeding: progress between them. */
const CHUNK = 50_000;
/** Products whose states go into the outbox in one statement. */
const STATES_CHUNK = 5_000;
/** How long the BFF's replica may apply no state while some are still due. */
const REPLICA_STALL_MS = 120_000;

const PRODUCTS = `query ($search: String, $after: String) {
  products(search: $search, first: 20, after: $after) {
    edges { node { id sku name price { amount currency } available } }
    pageInfo { endCursor hasNextPage }
  }
}`;
const ORDERS = `query ($after: String) {
  orders(first: 20, after: $after) {
    edges { node { id status createdAt total { amount currency } } }
    pageInfo { endCursor hasNextPage }
  }
}`;

interface Measure {
  name: string;
  /** Samples at each size: all of BENCH_SCALE_SAMPLES, or a share of them for slow ones. */
  share: number;
  /** One request; returns how many items it got (to check that searches find something). */
  run(): Promise<number>;
}

interface SizeResult {
  products: number;
  orders: number;
  seedSeconds: number;
  /** From the first state written to the outbox to the replica holding the last. */
  statesSeconds: number;
  bffRssMb: number;
  bffHeapMb: number;
  latencyMs: Record<string, LatencySummary>;
  /** Requests that failed, by query. */
  errors: Record<string, number>;
}

/** Adds products up to `to`, in chunks; a large step drops the search indexes and builds them again after (faster than keeping them). */
async function growCatalog(db: pg.Client, from: number, to: number): Promise<void> {
  const started = performance.now();
  let definitions: string[] = [];
  if (to - from > 100_000) {
    const { rows } = await db.query<{ name: string; definition: string }>(
      "SELECT indexname AS name, indexdef AS definition FROM pg_indexes WHERE tablename = 'products' AND indexname LIKE 'products\\_search\\_%'",
    );
    definitions = rows.map((row) => row.definition);
    for (const { name } of rows) await db.query(`DROP INDEX ${pg.escapeIdentifier(name)}`);
  }
  for (let n = from; n < to; n += CHUNK) {
    await seedProducts(db, n, Math.min(to, n + CHUNK));
    progress(`  products: ${fmt(Math.min(to, n + CHUNK))} of ${fmt(to)} (${fmt((performance.now() - started) / 1000, 1)} s)`);
  }
  await db.query("SET maintenance_work_mem = '256MB'");
  for (const definition of definitions) {
    progress(`  building again: ${definition.replace(/ ON .*/, '')} (${fmt((performance.now() - started) / 1000, 1)} s)`);
    await db.query(definition);
  }
  // As autovacuum leaves a table: statistics, and the GIN indexes' pending entries merged in.
  await db.query('VACUUM ANALYZE products');
  progress(`  catalog at ${fmt(to)} products in ${fmt((performance.now() - started) / 1000, 1)} s`);
}

/**
 * Writes the states of products `from` to `to - 1` to the product service's
 * outbox, as the service does when it changes a product: its store reads
 * them (findProducts) and the kit's writeStates writes them; the service's
 * relay, woken through PostgreSQL, puts them into the catalog bucket.
 */
async function publishCatalogStates(db: pg.Client, from: number, to: number): Promise<void> {
  const started = performance.now();
  for (let n = from; n < to; n += STATES_CHUNK) {
    const ids = Array.from({ length: Math.min(STATES_CHUNK, to - n) }, (_, i) => seededId(n + i));
    const found = await findProducts(db, ids);
    const missing = found.indexOf(null);
    if (missing >= 0) throw new Error(`seeded product ${n + missing} (${ids[missing]}) is not in the product database`);
    await writeStates(db, productContracts.catalog, found as Product[]);
    if ((n - from) % CHUNK === 0)
      progress(
        `  states written: ${fmt(Math.min(to, n + STATES_CHUNK) - from)} of ${fmt(to - from)} (${fmt((performance.now() - started) / 1000, 1)} s)`,
      );
  }
}

/** The BFF's own figures from its /metrics: catalog states its replica applied, and V8's heap in use. */
async function bffMetrics(opsUrl: string): Promise<{ catalogApplied: number; heapBytes: number }> {
  // A kept-alive connection the server closes just as it is reused fails the request: ask again (a BFF that is gone fails every time).
  const text = await pRetry(async () => (await fetch(`${opsUrl}/metrics`)).text(), { retries: 5, minTimeout: 200 });
  const value = (pattern: RegExp) => Number(pattern.exec(text)?.[1] ?? 0);
  return {
    catalogApplied: value(/^shop_read_model_lag_seconds_count\{[^}]*bucket="catalog"[^}]*\} (\d+)$/m),
    heapBytes: value(/^nodejs_heap_size_used_bytes(?:\{[^}]*\})? (\S+)$/m),
  };
}

/** Resident memory of process `pid` (VmRSS), in MB. */
async function rssMb(pid: number | undefined): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? Number.NaN) / 1024;
}

/** Waits until the BFF's replica has applied `target` catalog states; fails when it applies none for REPLICA_STALL_MS. */
async function replicaApplied(opsUrl: string, target: number): Promise<void> {
  let last = -1;
  let lastChange = performance.now();
  for (;;) {
    const { catalogApplied } = await bffMetrics(opsUrl);
    if (catalogApplied >= target) return;
    if (catalogApplied !== last) {
      progress(`  the BFF's replica: ${fmt(catalogApplied)} of ${fmt(target)} states applied`);
      last = catalogApplied;
      lastChange = performance.now();
    } else if (performance.now() - lastChange > REPLICA_STALL_MS) {
      throw new Error(
        `the BFF's replica applied no catalog state for ${REPLICA_STALL_MS / 1000} s (${fmt(catalogApplied)} of ${fmt(target)})`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

/** Latencies of the requests that succeeded, and how many failed (a broad search may outlast the BFF's call timeout). */
async function measure(run: () => Promise<number>, count: number): Promise<{ latency: LatencySummary; errors: number }> {
  const latencies = new Latencies();
  let errors = 0;
  for (let i = 0; i < count; i++) {
    const started = performance.now();
    try {
      await run();
      latencies.add(performance.now() - started);
    } catch {
      errors++;
    }
  }
  return { latency: latencies.summary(), errors };
}

if (import.meta.main) {
  const m = machine();
  progress(`machine: ${describeMachine(m)}`);
  progress(`scale: sizes ${sizes.map((size) => fmt(size)).join(', ')}; ${samples} samples per query; starting the shop`);
  const shop = await startShop({ bff: true, opsPorts: true });
  const bffOps = `http://127.0.0.1:${shop.opsPorts.get('bff')}`;
  const products = new pg.Client({ connectionString: shop.databaseUrl('products') });
  const orders = new pg.Client({ connectionString: shop.databaseUrl('orders') });
  const bff = new GraphQLHttp(shop.bffUrl!, 4);
  const results: SizeResult[] = [];
  try {
    await products.connect();
    await orders.connect();
    // Registration hashes a password: on a busy machine its first try may time out (the email is then free or taken by it).
    const { register } = await waitFor(
      () =>
        bff
          .ok<{ register: { token: string; customer: { id: string } } }>(REGISTER, {
            email: 'scale-bench@bench.test',
            name: 'Scale Bench',
            password: 'bench-password',
          })
          .catch(async (error: Error & { code?: string }) => {
            if (error.code === 'TIMEOUT') return undefined;
            if (error.code !== 'EMAIL_TAKEN') throw error;
            const { login } = await bff.ok<{ login: { token: string; customer: { id: string } } }>(
              'mutation { login(email: "scale-bench@bench.test", password: "bench-password") { token customer { id } } }',
            );
            return { register: login };
          }),
      { timeoutMs: 120_000, intervalMs: 1000, what: 'the bench customer to register' },
    );
    const token = register.token;
    const customerId = register.customer.id;

    let catalog = 0;
    let history = 0;
    for (const size of sizes) {
      progress(`scale: growing to ${fmt(size)} products and ${fmt(size / 10)} orders of one customer`);
      const seedStarted = performance.now();
      await growCatalog(products, catalog, size);
      const statesStarted = performance.now();
      const applied = (await bffMetrics(bffOps)).catalogApplied;
      await publishCatalogStates(products, catalog, size);
      await replicaApplied(bffOps, applied + size - catalog);
      const statesSeconds = round((performance.now() - statesStarted) / 1000, 1);
      progress(`  the BFF's replica holds ${fmt(size)} products (states: ${fmt(statesSeconds, 1)} s)`);
      catalog = size;
      const ordersStarted = performance.now();
      await seedOrders(orders, customerId, history, Math.floor(size / 10));
      history = Math.floor(size / 10);
      await orders.query('VACUUM ANALYZE orders, order_lines, order_status_history');
      progress(`  orders: ${fmt(history)} (${fmt((performance.now() - ordersStarted) / 1000, 1)} s)`);
      const seedSeconds = round((performance.now() - seedStarted) / 1000, 1);

      // Where the deep pages start: 90 % of the way in (OFFSET here, once, to find the position).
      const deepProduct = (
        await products.query<{ name: string; id: string }>('SELECT name, id FROM products ORDER BY name, id OFFSET $1 LIMIT 1', [
          Math.floor(size * 0.9),
        ])
      ).rows[0]!;
      const deepOrder = (
        await orders.query<{ created_us: string; id: string }>(
          `SELECT (extract(epoch FROM created_at) * 1000000)::bigint::text AS created_us, id FROM orders
            WHERE customer_id = $1 ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT 1`,
          [customerId, Math.floor(history * 0.9)],
        )
      ).rows[0]!;
      let catalogAfter: string | null = catalogCursor(deepProduct);
      let ordersAfter: string | null = orderCursor({ createdUs: Number(deepOrder.created_us), id: deepOrder.id });

      const search = async (text: string) =>
        (await bff.ok<{ products: { edges: unknown[] } }>(PRODUCTS, { search: text })).products.edges.length;
      const random = () => Math.floor(Math.random() * size);
      const measures: Measure[] = [
        { name: 'search: a model code (1 match)', share: 1, run: () => search(seededModel(random()).slice(0, 7)) },
        { name: 'search: a sku prefix (100 matches)', share: 1, run: () => search(seededSku(random()).slice(0, 8)) },
        { name: `search: "${BROAD_WORD}" (1 in 13)`, share: 0.05, run: () => search(BROAD_WORD) },
        {
          name: 'catalog page at 90 %, then onwards',
          share: 1,
          run: async () => {
            const { products: page } = await bff.ok<{ products: { edges: unknown[]; pageInfo: { endCursor: string | null } } }>(PRODUCTS, {
              after: catalogAfter,
            });
            catalogAfter = page.pageInfo.endCursor ?? catalogCursor(deepProduct);
            return page.edges.length;
          },
        },
        {
          name: 'orders: first page',
          share: 1,
          run: async () => (await bff.ok<{ orders: { edges: unknown[] } }>(ORDERS, {}, token)).orders.edges.length,
        },
        {
          name: 'orders: page at 90 %, then onwards',
          share: 1,
          run: async () => {
            const { orders: page } = await bff.ok<{ orders: { edges: unknown[]; pageInfo: { endCursor: string | null } } }>(
              ORDERS,
              { after: ordersAfter },
              token,
            );
            ordersAfter = page.pageInfo.endCursor;
            return page.edges.length;
          },
        },
      ];
      const latencyMs: Record<string, LatencySummary> = {};
      const errors: Record<string, number> = {};
      for (const { name, share, run } of measures) {
        const count = Math.max(10, Math.round(samples * share));
        // A few first, unmeasured: connections, prepared statements, caches.
        const found = await run().catch(() => -1);
        if (found === 0) throw new Error(`${name} found nothing at ${fmt(size)}: the seeded data is not what the bench expects`);
        for (let i = 0; i < 2; i++) await run().catch(() => {});
        const { latency, errors: failed } = await measure(run, count);
        latencyMs[name] = latency;
        errors[name] = failed;
        progress(`  ${name}: p50 ${latency.p50} ms, p99 ${latency.p99} ms (${count}, ${failed} failed)`);
      }
      const bffRssMb = round(await rssMb(shop.pids().get('bff')), 0);
      const bffHeapMb = round((await bffMetrics(bffOps)).heapBytes / 2 ** 20, 0);
      progress(`  the BFF: RSS ${fmt(bffRssMb)} MB, heap in use ${fmt(bffHeapMb)} MB`);
      results.push({ products: size, orders: history, seedSeconds, statesSeconds, bffRssMb, bffHeapMb, latencyMs, errors });
    }
  } finally {
    bff.close();
    await products.end().catch(() => {});
    await orders.end().catch(() => {});
    progress('scale: stopping the shop');
    await shop.stop();
  }

  const names = Object.keys(results[0]?.latencyMs ?? {});
  const first = results[0]!;
  const header = ['p50 / p99 ms', ...results.map((result) => `${fmt(result.products)} products`), 'p99 last/first'];
  const rows = names.map((name) => [
    name,
    ...results.map(
      (result) =>
        `${result.latencyMs[name]!.p50} / ${result.latencyMs[name]!.p99}${result.errors[name] ? ` (${result.errors[name]} failed)` : ''}`,
    ),
    `${(results.at(-1)!.latencyMs[name]!.p99 / first.latencyMs[name]!.p99).toFixed(2)}x`,
  ]);
  rows.push(['(orders of the customer)', ...results.map((result) => fmt(result.orders)), '']);
  rows.push(['(seeding in all, s)', ...results.map((result) => fmt(result.seedSeconds, 1)), '']);
  rows.push(['(states to the replica, s)', ...results.map((result) => fmt(result.statesSeconds, 1)), '']);
  rows.push(['BFF RSS MB', ...results.map((result) => fmt(result.bffRssMb)), '']);
  rows.push(['BFF heap in use MB', ...results.map((result) => fmt(result.bffHeapMb)), '']);
  process.stdout.write(`\nmachine: ${describeMachine(m)}\n\n${table(header, rows)}\n`);
  const file = await writeResults('scale', {
    at: new Date().toISOString(),
    machine: { ...m, loadAverageAtEnd: machine().loadAverage },
    samples,
    results,
  });
  progress(`\nwritten ${file}`);
}
