// The catalog and the order history at size (`npm run bench:scale`): the
// whole shop as production runs it (bench/common.ts startShop), its product
// database grown to each of BENCH_SCALE_SIZES (10k, 100k, 1M products) and
// one customer's orders to a tenth of that (100k at the end), written
// straight into the databases (test/catalog-seed.ts: INSERT … SELECT
// generate_series). At each size, real GraphQL over HTTP to the BFF, one
// request at a time, BENCH_SCALE_SAMPLES of each:
//   - products(search:) for a model code (one product in the catalog, a
//     different one each time): the search through the trigram index;
//   - products(search:) for a sku prefix (a hundred products): its trigrams
//     are in every row, so the index reads long lists;
//   - products(search:) for a word in one description in 13: a tenth of
//     the samples (its cost follows its matches, which grow with the catalog);
//   - a deep catalog page: from 90 % of the way through the catalog, each
//     sample the page after the previous one's cursor;
//   - the customer's orders: the first page, and pages from 90 % of the way
//     through the history, followed by their cursors.
// Then it prints p50/p99 per size and the ratio of each p99 to the first
// size's. The target: p99 at 1M at most 2x p99 at 10k.
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { encodeCursor as orderCursor } from '../services/order/handlers.ts';
import { encodeCatalogCursor as catalogCursor } from '../subjects/index.ts';
import { BROAD_WORD, seedOrders, seedProducts, seededModel, seededSku } from '../test/catalog-seed.ts';
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
  const shop = await startShop({ bff: true });
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
      catalog = size;
      const ordersStarted = performance.now();
      await seedOrders(orders, customerId, history, size / 10);
      history = size / 10;
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
      results.push({ products: size, orders: history, seedSeconds, latencyMs, errors });
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
  rows.push(['(seeding, s)', ...results.map((result) => fmt(result.seedSeconds, 1)), '']);
  process.stdout.write(`\nmachine: ${describeMachine(m)}\n\n${table(header, rows)}\n`);
  const file = await writeResults('scale', {
    at: new Date().toISOString(),
    machine: { ...m, loadAverageAtEnd: machine().loadAverage },
    samples,
    results,
  });
  progress(`\nwritten ${file}`);
}
