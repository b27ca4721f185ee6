// `npm run bench:read-model`: the BFF's read models at scale. Fills the
// catalog and customers buckets of a nats-server of its own with
// BENCH_READ_MODEL_PRODUCTS (100 000) products and BENCH_READ_MODEL_CUSTOMERS
// (100 000) customers, as the services' outboxes write them (the event
// envelope, one version each), then starts a child process
// (bench/read-model-child.ts) that builds both replicas from the buckets as a
// BFF does at start, and prints its catch-up time and the memory they take
// (RSS and heap after catch-up, less those before, and the process's whole RSS), and
// the p99 of 10 000 catalog pages of 20 from memory.
//
// BENCH_READ_MODEL_RUNS (1) children in turn, each building the replicas
// afresh from the same buckets; BENCH_READ_MODEL_CHILDREN (the default:
// bench/read-model-child.ts) names several child scripts, comma-separated,
// run alternately in each round: a copy of an earlier tree's child
// (`git archive`) beside this one compares two replicas on the same buckets
// and the same machine.
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { ROOT } from '../scripts/lib/launcher.ts';
import { loadavg } from 'node:os';
import { connect } from 'nats';
import { customers, products, stateSubject, type Customer, type Product, type StateContract } from '../subjects/index.ts';
import { openStateBucket } from '../services/kit/index.ts';
import { startNats } from '../test/harness.ts';
import { describeMachine, fmt, machine, progress, table } from '../scripts/lib/measure.ts';
import { intEnv, writeResults } from './common.ts';
import { spawnNode } from '../scripts/lib/shop.ts';

const productCount = intEnv('BENCH_READ_MODEL_PRODUCTS', 100_000, 0);
const customerCount = intEnv('BENCH_READ_MODEL_CUSTOMERS', 100_000, 0);
const runs = intEnv('BENCH_READ_MODEL_RUNS', 1);
const childScripts = (process.env.BENCH_READ_MODEL_CHILDREN || 'bench/read-model-child.ts')
  .split(',')
  .map((script) => script.trim())
  .filter(Boolean);
// A child from another tree (`git archive` of an earlier commit) is not there in a fresh clone: say which, before filling buckets.
const missing = childScripts.filter((script) => !existsSync(resolve(ROOT, script)));
if (missing.length > 0) {
  throw new Error(
    `BENCH_READ_MODEL_CHILDREN names ${missing.join(', ')}, not found (unpack the other tree first: bench/README.md, bench:read-model)`,
  );
}

export interface ReplicaFigures {
  catalogItems: number;
  customerItems: number;
  catchUpMs: number;
  /** When each replica was caught up (absent in a child from before they were reported). */
  catalogMs?: number;
  customersMs?: number;
  catchUpCpuMs: number;
  rssMb: number;
  heapMb: number;
  /** The child's whole RSS after catch-up (absent in a child from before it was reported). */
  processRssMb?: number;
  /** p99 of 10 000 catalog pages of 20 from memory, in µs (absent in an older child). */
  pageP99Micros?: number;
}

const nats = await startNats();
try {
  const nc = await connect({ servers: nats.url, noAsyncTraces: true });
  const js = nc.jetstream();
  const fill = async <T extends { id: string }>(contract: StateContract, count: number, make: (i: number) => T) => {
    await openStateBucket(nc, contract);
    const occurredAt = new Date().toISOString();
    const started = performance.now();
    for (let i = 0; i < count; i += 1000) {
      const batch = Array.from({ length: Math.min(1000, count - i) }, (_, j) => make(i + j));
      await Promise.all(
        batch.map((item) =>
          js.publish(stateSubject(contract, item.id), JSON.stringify({ id: randomUUID(), type: contract.bucket, occurredAt, data: item })),
        ),
      );
      if ((i / 1000) % 20 === 0) progress(`  ${contract.bucket}: ${fmt(i + batch.length)} of ${fmt(count)}`);
    }
    progress(`read-model: ${fmt(count)} ${contract.bucket} states written in ${fmt(performance.now() - started)} ms`);
  };
  const now = new Date().toISOString();
  await fill(products.catalog, productCount, (i): Product & { version: number } => ({
    id: randomUUID(),
    sku: `bench-${i}`,
    name: `Bench product ${String(i).padStart(6, '0')}`,
    description: 'A product of the read-model bench, with a description of ordinary length for a catalog entry.',
    price: { amount: 100 + (i % 5000), currency: 'EUR' },
    available: i % 1000,
    createdAt: now,
    updatedAt: now,
    version: 1 + (i % 7),
  }));
  await fill(customers.profiles, customerCount, (i): Customer & { version: number } => ({
    id: randomUUID(),
    email: `customer-${i}@bench.test`,
    name: `Bench customer ${i}`,
    role: 'customer',
    createdAt: now,
    version: 1,
  }));
  await nc.drain();

  const results = new Map<string, ReplicaFigures[]>(childScripts.map((script) => [script, []]));
  for (let round = 1; round <= runs; round++) {
    for (const script of childScripts) {
      progress(`read-model: round ${round} of ${runs}, ${script} builds both replicas from the buckets`);
      const child = await spawnNode('read-model-replicas', script, {
        env: { NATS_URL: nats.url },
        ready: (line) => (line.startsWith('{"catalogItems"') ? line : undefined),
        timeoutMs: 300_000,
        cpuProfileDir: process.env.BENCH_CPU_PROF || undefined,
      });
      await child.stop();
      const figures = JSON.parse(child.ready) as ReplicaFigures;
      progress(
        `  catch-up ${fmt(figures.catchUpMs)} ms, its CPU ${fmt(figures.catchUpCpuMs)} ms (load average ${loadavg()[0]!.toFixed(1)})`,
      );
      results.get(script)!.push(figures);
    }
  }
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor((values.length - 1) / 2)]!;
  const range = (values: number[]) => (values.length > 1 ? ` (${fmt(Math.min(...values))}-${fmt(Math.max(...values))})` : '');
  const m = machine();
  process.stdout.write(
    `\nmachine: ${describeMachine(m)}\n${runs > 1 ? `medians of ${runs} runs each (range)\n` : ''}\n${table(
      [
        'replicas',
        'child',
        'items',
        'catch-up ms',
        'catalog / customers ms',
        'its CPU ms',
        'RSS MB',
        'heap MB',
        'process RSS MB',
        'page p99 µs',
      ],
      [...results].map(([script, all]) => {
        const of = (key: keyof ReplicaFigures) => all.map((figures) => figures[key] ?? Number.NaN);
        return [
          'catalog + customers',
          script,
          `${fmt(all[0]!.catalogItems)} + ${fmt(all[0]!.customerItems)}`,
          `${fmt(median(of('catchUpMs')))}${range(of('catchUpMs'))}`,
          `${fmt(median(of('catalogMs')))} / ${fmt(median(of('customersMs')))}`,
          `${fmt(median(of('catchUpCpuMs')))}${range(of('catchUpCpuMs'))}`,
          fmt(median(of('rssMb'))),
          fmt(median(of('heapMb'))),
          fmt(median(of('processRssMb'))),
          fmt(median(of('pageP99Micros')), 1),
        ];
      }),
    )}\n`,
  );
  progress(
    `\nwritten ${await writeResults('read-model', {
      at: new Date().toISOString(),
      machine: m,
      productCount,
      customerCount,
      runs: Object.fromEntries(results),
    })}`,
  );
} finally {
  await nats.cleanup();
}
