// What tracing costs (`node bench/tracing.ts`): the same work done by
// processes that differ only in their tracing settings, alternated round by
// round in one run, measured in CPU time per unit of work (from /proc), not
// in wall-clock throughput, so that a busy machine skews every variant alike.
//
//   disabled  OTEL_SDK_DISABLED=true: no SDK, no trace context
//   default   nothing set: no exporter (trace ids for the logs, context carried)
//   sampled   an exporter (Zipkin, to a local endpoint in this process) and
//             OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG=0.01
//
// Three parts (BENCH_TRACING_PARTS, "rss,bff,saga"), of the variants
// BENCH_TRACING_VARIANTS names ("disabled,default,sampled"; "disabled-again"
// is `disabled` once more, for the bench's own noise):
//   rss   the whole shop (every service and the BFF) in each variant in turn:
//         the resident memory (VmRSS) of each process, idle 3 s after it started.
//   bff   one shop, and one BFF process per variant over it; rounds of
//         BENCH_TRACING_ROUND_MS (3000) of the catalog page (bench/bff.ts
//         CATALOG_QUERY) with BENCH_TRACING_CONCURRENCY (16) in flight, each
//         BFF in turn: CPU ms per request of each BFF process.
//   saga  a shop per variant and round (every service with that variant's
//         settings), one at a time: BENCH_TRACING_ORDERS (200) orders placed
//         with orders.place, 8 in flight, after a quarter as many to warm up,
//         until every one is confirmed: CPU ms per confirmed order of the
//         services (their node processes).
// Over BENCH_TRACING_ROUNDS (5) rounds, after BENCH_TRACING_WARMUP (2)
// warm-up rounds; medians.
import { readFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { customers, orders, products } from '../subjects/index.ts';
import { RpcClient, connectNats, createLogger } from '../services/kit/index.ts';
import { registry, SERVICES } from '../subjects/services.ts';
import { freePort, waitFor } from '../test/harness.ts';
import { startZipkin, ZIPKIN_SPANS_PATH } from '../test/span-collector.ts';
import { CATALOG_QUERY } from './bff.ts';
import { intEnv, writeResults } from './common.ts';
import { GraphQLHttp, adminToken, createProducts, spawnNode, startShop, type Child } from '../scripts/lib/shop.ts';
import { cpuSnapshot, cpuUsed, describeMachine, fmt, machine, median, progress, round, table } from '../scripts/lib/measure.ts';

const rounds = intEnv('BENCH_TRACING_ROUNDS', 5);
const roundMs = intEnv('BENCH_TRACING_ROUND_MS', 3000);
const concurrency = intEnv('BENCH_TRACING_CONCURRENCY', 16);
const ordersPerRound = intEnv('BENCH_TRACING_ORDERS', 200);
const warmups = intEnv('BENCH_TRACING_WARMUP', 2, 0);
const parts = (process.env.BENCH_TRACING_PARTS ?? 'rss,bff,saga').split(',').map((part) => part.trim());

const zipkin = await startZipkin();
const ALL_VARIANTS: Record<string, Record<string, string>> = {
  disabled: { OTEL_SDK_DISABLED: 'true' },
  default: {},
  sampled: {
    ZIPKIN_URL: `${zipkin.url}${ZIPKIN_SPANS_PATH}`,
    OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
    OTEL_TRACES_SAMPLER_ARG: '0.01',
  },
  // The same as `disabled`, to see the bench's own noise (BENCH_TRACING_VARIANTS=disabled,disabled-again).
  'disabled-again': { OTEL_SDK_DISABLED: 'true' },
};
const names = (process.env.BENCH_TRACING_VARIANTS ?? 'disabled,default,sampled').split(',').map((name) => name.trim());
const VARIANTS = Object.fromEntries(
  names.map((name) => {
    if (!ALL_VARIANTS[name])
      throw new Error(`BENCH_TRACING_VARIANTS: no variant ${name}; there are ${Object.keys(ALL_VARIANTS).join(', ')}`);
    return [name, ALL_VARIANTS[name]];
  }),
);

/** Resident memory of a process, in MB. */
async function rssMb(pid: number | undefined): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const kb = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1]);
  return round(kb / 1024, 0);
}

/** `measure` for every variant, in turn, over the rounds (the first order rotates); median per variant. */
async function alternate(
  label: string,
  measure: (variant: string) => Promise<number>,
  warmupRounds = warmups,
): Promise<Record<string, number>> {
  for (let w = 0; w < warmupRounds; w++) for (const name of names) await measure(name);
  const samples = new Map(names.map((name) => [name, [] as number[]]));
  for (let r = 0; r < rounds; r++) {
    const line: string[] = [];
    for (let i = 0; i < names.length; i++) {
      const name = names[(i + r) % names.length]!;
      const value = await measure(name);
      samples.get(name)!.push(value);
      line.push(`${name} ${fmt(value, 3)}`);
    }
    progress(`  ${label} round ${r + 1}/${rounds}: ${line.join(', ')}`);
  }
  return Object.fromEntries(names.map((name) => [name, round(median(samples.get(name)!), 3)]));
}

const ratios = (figures: Record<string, number>) =>
  names.map((name) => [name, fmt(figures[name]!, 3), `${(figures[name]! / (figures.disabled ?? Number.NaN)).toFixed(3)}x`]);

const results: Record<string, unknown> = {};

if (parts.includes('rss')) {
  const rss: Record<string, Record<string, number>> = {};
  for (const [name, env] of Object.entries(VARIANTS)) {
    progress(`rss: the shop, ${name}`);
    const shop = await startShop({ bff: true, env });
    try {
      await new Promise((resolve) => setTimeout(resolve, 3000));
      rss[name] = Object.fromEntries(
        await Promise.all([...SERVICES, 'bff' as const].map(async (process) => [process, await rssMb(shop.pids().get(process))] as const)),
      );
    } finally {
      await shop.stop();
    }
  }
  results.rssMb = rss;
  const processes = Object.keys(Object.values(rss)[0] ?? {});
  process.stdout.write(
    `\nIdle RSS (MB)\n${table(
      ['process', ...names],
      processes.map((p) => [p, ...names.map((n) => String(rss[n]![p]))]),
    )}\n\n`,
  );
}

if (parts.includes('bff')) {
  progress('bff: the services, and one BFF per variant');
  const shop = await startShop({ bff: true });
  const bffs = new Map<string, { child: Child; client: GraphQLHttp }>();
  try {
    const admin = await adminToken(new GraphQLHttp(shop.bffUrl!));
    await createProducts(new GraphQLHttp(shop.bffUrl!), admin, 20, 1000);
    for (const [name, env] of Object.entries(VARIANTS)) {
      const port = await freePort();
      const child = await spawnNode(`bff-${name}`, registry.bff, {
        env: {
          NATS_URL: shop.natsUrl,
          // BENCH_TRACING_LOG_LEVEL=warn: without the BFF's two lines per request (what the trace ids in them cost).
          LOG_LEVEL: process.env.BENCH_TRACING_LOG_LEVEL || 'info',
          BFF_PORT: String(port),
          BFF_HOST: '127.0.0.1',
          JWT_SECRET: shop.jwtSecret,
          RATE_LIMIT_MAX: '1000000',
          ...env,
        },
        probe: async () => (await fetch(`http://127.0.0.1:${port}/health/ready`)).status === 200,
        // BENCH_CPU_PROF=<dir>: each BFF writes a CPU profile there when it stops (bench/profile.ts reads them).
        cpuProfileDir: process.env.BENCH_CPU_PROF || undefined,
        timeoutMs: 120_000,
      });
      const client = new GraphQLHttp(`http://127.0.0.1:${port}`, concurrency + 4);
      bffs.set(name, { child, client });
    }
    for (const { client } of bffs.values()) {
      await waitFor(async () => (await client.ok<{ products: { edges: unknown[] } }>(CATALOG_QUERY)).products.edges.length === 20, {
        timeoutMs: 30_000,
        what: 'every BFF to serve the catalog',
      });
    }
    const cpuPerRequest = await alternate('catalog page, BFF CPU ms per request', async (name) => {
      const { child, client } = bffs.get(name)!;
      const pids = new Map([[name, child.pid]]);
      const before = await cpuSnapshot(pids);
      const end = performance.now() + roundMs;
      let done = 0;
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (performance.now() < end) {
            const answer = await client.request(CATALOG_QUERY);
            if (answer.status !== 200 || answer.errors) throw new Error(`catalog page failed: ${JSON.stringify(answer.errors)}`);
            done++;
          }
        }),
      );
      return (cpuUsed(before, await cpuSnapshot(pids))[name]! * 1000) / done;
    });
    results.bff = { cpuMsPerRequest: cpuPerRequest, spansExported: zipkin.spans.length };
    progress(`bff: ${zipkin.spans.length} spans exported`);
    process.stdout.write(`\nBFF, catalog page\n${table(['variant', 'CPU ms / request', 'vs disabled'], ratios(cpuPerRequest))}\n`);
  } finally {
    for (const { child, client } of bffs.values()) {
      client.close();
      await child.stop();
    }
    await shop.stop();
  }
}

if (parts.includes('saga')) {
  // One shop at a time (a shop holds tens of PostgreSQL connections): each round starts each variant's shop
  // afresh, warms it up with BENCH_TRACING_ORDERS / 4 orders, then measures BENCH_TRACING_ORDERS.
  const log = createLogger('bench', 'warn');
  /** `call`, again after a second while it fails (a shared PostgreSQL out of connections for a moment), 20 times at most. */
  const retrying = async <T>(call: () => Promise<T>): Promise<T> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await call();
      } catch (error) {
        if (attempt >= 20) throw error;
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  };
  const orderRound = async (name: string): Promise<number> => {
    const shop = await startShop({ env: VARIANTS[name], cpuProfileDir: process.env.BENCH_CPU_PROF || undefined });
    const nc = await connectNats('bench', { NATS_URL: shop.natsUrl }, log);
    const client = new RpcClient(nc, { timeoutMs: 30_000, retries: 0 });
    try {
      const catalog: string[] = [];
      for (let i = 0; i < 10; i++) {
        const product = await retrying(() =>
          client.call(products.create, {
            sku: `tracing-${i}`,
            name: `Tracing product ${i}`,
            price: { amount: 100 + i, currency: 'EUR' },
            initialStock: 1_000_000_000,
          }),
        );
        catalog.push(product.id);
      }
      const { id: customerId } = await retrying(() =>
        client.call(customers.register, { email: 'tracing@bench.test', name: 'Tracy', password: 'bench-password' }),
      );
      // Orders settled, as every other subscriber hears it (asking orders.get would add to the services' CPU).
      let settled = 0;
      for (const subject of [orders.confirmed.subject, orders.cancelled.subject]) nc.subscribe(subject, { callback: () => settled++ });
      /** Places `count` orders, 8 in flight, and waits for every one placed to settle; returns how many settled. */
      const place = async (count: number) => {
        const from = settled;
        let next = 0;
        let placed = 0;
        await Promise.all(
          Array.from({ length: 8 }, async () => {
            while (next < count) {
              const n = next++;
              const lines = [{ productId: catalog[n % catalog.length]!, quantity: 1 }];
              // One refused on a busy machine (a timeout, an open circuit) is left out of the count.
              await client
                .call(orders.place, { idempotencyKey: randomUUID(), customerId, lines, paymentToken: 'tok_bench_ok' })
                .then(() => placed++)
                .catch(() => {});
            }
          }),
        );
        await waitFor(() => settled - from >= placed, { timeoutMs: 120_000, intervalMs: 50, what: 'every order to settle' });
        // The email and the shipment follow the confirmation: a moment for them, the same for every variant.
        await new Promise((resolve) => setTimeout(resolve, 1500));
        return settled - from;
      };
      await place(Math.ceil(ordersPerRound / 4));
      const before = await shop.cpuSnapshot();
      const done = await place(ordersPerRound);
      const used = cpuUsed(before, await shop.cpuSnapshot());
      const services = SERVICES.reduce((sum, service) => sum + (used[service] ?? 0), 0);
      return (services * 1000) / Math.max(1, done);
    } finally {
      client.close();
      await nc.drain().catch(() => {});
      await shop.stop();
    }
  };
  progress("saga: each variant's shop in turn");
  const cpuPerOrder = await alternate('saga, services CPU ms per confirmed order', orderRound, 0);
  results.saga = { cpuMsPerOrder: cpuPerOrder };
  process.stdout.write(`\nSaga, services\n${table(['variant', 'CPU ms / order', 'vs disabled'], ratios(cpuPerOrder))}\n\n`);
}

await zipkin.close();
const file = await writeResults('tracing', {
  at: new Date().toISOString(),
  machine: machine(),
  rounds,
  roundMs,
  ordersPerRound,
  ...results,
});
progress(`machine: ${describeMachine(machine())}; written ${file}`);
