// The BFF benchmark (`npm run bench:bff`, part of `npm run bench`): a composed
// GraphQL query, an order with its customer and its three products, and the
// catalog's first page (`products(first: 20)`), each asked of the BFF (scripts/lib/shop.ts startShop: the services and the BFF as child
// processes, their own nats-server, fresh databases) beside mercurius serving
// the same schema and the same answer from memory (bench/memory-graphql.ts, a
// child process too), in one run.
//
// Behind the BFF the order query costs an orders.get over NATS, answered from
// PostgreSQL; its customer and products, and the catalog page, come from the
// BFF's read models in memory. The BFF also verifies the caller's JWT and
// counts its rate limit. The bench keeps
// BENCH_BFF_CONCURRENCY (32) requests in flight over kept-alive connections,
// warms both up, then alternates them over BENCH_BFF_ROUNDS (5) rounds of
// BENCH_BFF_ROUND_MS (4000) and reports the median requests/s and the
// latency percentiles of all rounds.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { performance } from 'node:perf_hooks';
import { customers, orders, products } from '../subjects/index.ts';
import { RpcClient, connectNats, createLogger } from '../services/kit/index.ts';
import { GraphQLHttp, REGISTER, adminToken, createProducts, spawnNode, startShop, type Child } from '../scripts/lib/shop.ts';
import {
  Latencies,
  cpuUsed,
  describeMachine,
  fmt,
  machine,
  median,
  progress,
  round,
  table,
  type LatencySummary,
} from '../scripts/lib/measure.ts';
import { intEnv, writeResults } from './common.ts';
import { waitFor } from '../test/harness.ts';

export interface BffSettings {
  concurrency: number;
  rounds: number;
  roundMs: number;
  warmupMs: number;
}

export function bffSettings(): BffSettings {
  return {
    concurrency: intEnv('BENCH_BFF_CONCURRENCY', 32),
    rounds: intEnv('BENCH_BFF_ROUNDS', 5),
    roundMs: intEnv('BENCH_BFF_ROUND_MS', 4000),
    warmupMs: intEnv('BENCH_BFF_WARMUP_MS', 4000),
  };
}

/** The composed query: an order, its customer, and every line's product. */
export const COMPOSED_QUERY = `query ($id: ID!) {
  order(id: $id) {
    id status createdAt
    total { amount currency }
    customer { id name email role }
    lines {
      quantity
      unitPrice { amount currency }
      product { id sku name available price { amount currency } }
    }
  }
}`;

export interface BffVariant {
  name: string;
  samples: number[];
  median: number;
  latencyMs: LatencySummary;
  /** Median CPU milliseconds per request, by process. */
  cpuMsPerRequest: Record<string, number>;
  ratio: number;
  errors: number;
  /** The first few errors' codes or messages. */
  errorSamples: string[];
}

export interface BffResult {
  settings: BffSettings;
  /** The composed order query. */
  variants: BffVariant[];
  /** The catalog's first page, `products(first: 20)`. */
  catalog: BffVariant[];
}

/** The storefront's first catalog page. */
export const CATALOG_QUERY = `{
  products(first: 20) {
    edges { node { id sku name description available price { amount currency } } }
    pageInfo { endCursor hasNextPage }
  }
}`;

export async function runBffBench(settings: BffSettings = bffSettings()): Promise<BffResult> {
  progress('bff: starting the shop (every service and the BFF as child processes, nats-server, SMTP sink)');
  // BENCH_CPU_PROF=<dir>: every process of the shop writes a CPU profile there when it stops.
  const cpuProfileDir = process.env.BENCH_CPU_PROF || undefined;
  if (cpuProfileDir) await mkdir(cpuProfileDir, { recursive: true });
  const shop = await startShop({ bff: true, cpuProfileDir });
  const log = createLogger('bench', 'warn');
  const nc = await connectNats('bench', { NATS_URL: shop.natsUrl }, log);
  const rpc = new RpcClient(nc, { timeoutMs: 10_000 });
  const dataDir = await mkdtemp(join(tmpdir(), 'bench-bff-'));
  let memory: (Child & { ready: string }) | undefined;
  const bff = new GraphQLHttp(shop.bffUrl!, settings.concurrency + 8);
  try {
    progress('bff: one order of three products, confirmed');
    const admin = await adminToken(bff);
    // A catalog page's worth, then an order of the first three.
    const catalog = (await createProducts(bff, admin, 20, 1_000_000)).slice(0, 3);
    const { register } = await bff.ok<{ register: { token: string; customer: { id: string } } }>(REGISTER, {
      email: 'bff-bench@bench.test',
      name: 'Bff Bench',
      password: 'bench-password',
    });
    const token = register.token;
    const { placeOrder } = await bff.ok<{ placeOrder: { id: string } }>(
      `mutation ($lines: [OrderLineInput!]!) { placeOrder(lines: $lines, paymentToken: "tok_bench_ok") { id } }`,
      { lines: catalog.map((product, i) => ({ productId: product.id, quantity: i + 1 })) },
      token,
    );
    const orderId = placeOrder.id;
    await waitFor(
      async () =>
        (await bff.ok<{ order: { status: string } }>('query ($id: ID!) { order(id: $id) { status } }', { id: orderId }, token)).order
          .status === 'CONFIRMED',
      { timeoutMs: 120_000, what: 'the order to be confirmed' },
    );

    // The same data, as the services answer the BFF, for the in-memory server.
    const order = await rpc.call(orders.get, { id: orderId });
    const customer = await rpc.call(customers.get, { id: order.customerId });
    const { products: found } = await rpc.call(products.getMany, { ids: order.lines.map((line) => line.productId) });
    const dataFile = join(dataDir, 'data.json');
    const catalogPage = (await bff.ok<{ products: unknown }>(CATALOG_QUERY, {})).products;
    await writeFile(dataFile, JSON.stringify({ order, customer, products: found, catalogPage }));
    memory = await spawnNode('memory-graphql', 'bench/memory-graphql.ts', {
      env: { BENCH_MEMORY_DATA: dataFile },
      ready: (line) => /^listening (\d+)$/.exec(line)?.[1],
    });
    const inMemory = new GraphQLHttp(`http://127.0.0.1:${memory.ready}`, settings.concurrency + 8);

    // Both must give the same answer, or the comparison means nothing.
    for (const [query, variables] of [
      [COMPOSED_QUERY, { id: orderId }],
      [CATALOG_QUERY, {}],
    ] as const) {
      const expected = await bff.ok(query, variables, token);
      const fromMemory = await inMemory.ok(query, variables);
      if (!isDeepStrictEqual(expected, fromMemory)) {
        throw new Error(`the in-memory server answers differently:\n${JSON.stringify(expected)}\n${JSON.stringify(fromMemory)}`);
      }
    }

    const snapshot = () => shop.cpuSnapshot(new Map([['memory-graphql', memory!.pid]]));
    const variants = [
      { name: 'BFF (JWT, NATS, services, PostgreSQL)', client: bff, token },
      { name: 'mercurius from memory', client: inMemory, token: undefined },
    ];
    type Sample = { rate: number; cpu: Record<string, number> };
    /** Both variants on one query, alternated over the rounds. */
    const compare = async (label: string, query: string, variables: Record<string, unknown>): Promise<BffVariant[]> => {
      const samples = new Map(variants.map((variant) => [variant.name, [] as Sample[]]));
      const latencies = new Map(variants.map((variant) => [variant.name, new Latencies()]));
      const errors = new Map(variants.map((variant) => [variant.name, 0]));
      const errorSamples = new Map(variants.map((variant) => [variant.name, [] as string[]]));

      const measure = async (variant: (typeof variants)[number], ms: number, record: boolean): Promise<Sample> => {
        const before = await snapshot();
        const started = performance.now();
        const end = started + ms;
        let done = 0;
        await Promise.all(
          Array.from({ length: settings.concurrency }, async () => {
            while (performance.now() < end) {
              const sent = performance.now();
              const answer = await variant.client.request(query, variables, variant.token).catch((error: Error) => ({
                status: 0,
                data: null,
                errors: [{ message: error.message }],
              }));
              if (answer.status !== 200 || answer.errors) {
                if (record) errors.set(variant.name, errors.get(variant.name)! + 1);
                const samples = errorSamples.get(variant.name)!;
                const first = answer.errors?.[0] as { message: string; extensions?: { code?: string } } | undefined;
                if (samples.length < 5)
                  samples.push(`HTTP ${answer.status} ${first?.extensions?.code ?? ''} ${first?.message ?? ''}`.trim());
                continue;
              }
              done++;
              if (record) latencies.get(variant.name)!.add(performance.now() - sent);
            }
          }),
        );
        const seconds = (performance.now() - started) / 1000;
        const cpu = cpuUsed(before, await snapshot());
        return {
          rate: done / seconds,
          cpu: Object.fromEntries(Object.entries(cpu).map(([name, used]) => [name, round((used * 1000) / Math.max(1, done), 3)])),
        };
      };

      progress(`bff: ${label}: warm-up, ${settings.warmupMs} ms each; ${settings.concurrency} requests in flight`);
      for (const variant of variants) await measure(variant, settings.warmupMs, false);
      for (let r = 1; r <= settings.rounds; r++) {
        const line: string[] = [];
        for (let i = 0; i < variants.length; i++) {
          const variant = variants[(i + r - 1) % variants.length]!;
          const sample = await measure(variant, settings.roundMs, true);
          samples.get(variant.name)!.push(sample);
          line.push(`${variant.name.split(' (')[0]} ${fmt(sample.rate)}/s`);
        }
        progress(`  ${label} round ${r}/${settings.rounds}: ${line.join(', ')}`);
      }
      const medianRate = (name: string) => median(samples.get(name)!.map((sample) => sample.rate));
      const baseline = medianRate(variants[1]!.name);
      return variants.map(({ name }) => {
        const taken = samples.get(name)!;
        const processes = [...new Set(taken.flatMap((sample) => Object.keys(sample.cpu)))];
        return {
          name,
          samples: taken.map((sample) => Math.round(sample.rate)),
          median: Math.round(medianRate(name)),
          latencyMs: latencies.get(name)!.summary(),
          cpuMsPerRequest: Object.fromEntries(
            processes
              .map((process) => [process, round(median(taken.map((sample) => sample.cpu[process] ?? 0)), 3)] as const)
              .filter(([, ms]) => ms > 0),
          ),
          ratio: round(medianRate(name) / baseline, 2),
          errors: errors.get(name)!,
          errorSamples: errorSamples.get(name)!,
        };
      });
    };

    const composed = await compare('composed order query', COMPOSED_QUERY, { id: orderId });
    const catalogPages = await compare('catalog page', CATALOG_QUERY, {});
    inMemory.close();
    return { settings, variants: composed, catalog: catalogPages };
  } finally {
    bff.close();
    rpc.close();
    await nc.drain().catch(() => {});
    await memory?.stop();
    await rm(dataDir, { recursive: true, force: true });
    progress('bff: stopping the shop');
    await shop.stop();
  }
}

export function bffRows(result: BffResult): string[][] {
  const rows = (label: string, variants: BffVariant[]) =>
    variants.map((variant) => [
      `${label}: ${variant.name}`,
      fmt(variant.median),
      `${variant.latencyMs.p50} / ${variant.latencyMs.p99}`,
      `${variant.ratio.toFixed(2)}x`,
      String(variant.errors),
    ]);
  return [...rows('order', result.variants), ...rows('catalog', result.catalog)];
}

export const BFF_HEADER = ['query: server', 'requests/s', 'p50 / p99 ms', 'vs memory', 'errors'];

/** CPU milliseconds per request by process, for the BFF variant: where a request's cost goes. */
export function bffCpuTable(result: BffResult): string {
  const names = [...new Set(result.variants.flatMap((variant) => Object.keys(variant.cpuMsPerRequest)))];
  const rows = names.map((name) => [name, ...result.variants.map((variant) => fmt(variant.cpuMsPerRequest[name] ?? Number.NaN, 3))]);
  return table(['CPU ms per request', ...result.variants.map((variant) => variant.name.split(' (')[0]!)], rows);
}

if (import.meta.main) {
  const m = machine();
  progress(`machine: ${describeMachine(m)}`);
  const result = await runBffBench();
  process.stdout.write(`\nmachine: ${describeMachine(m)}\n\n${table(BFF_HEADER, bffRows(result))}\n\n${bffCpuTable(result)}\n`);
  const file = await writeResults('bff', {
    at: new Date().toISOString(),
    machine: { ...m, loadAverageAtEnd: machine().loadAverage },
    ...result,
  });
  progress(`\nwritten ${file}`);
}
