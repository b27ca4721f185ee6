// `npm run bench:read-model`: the BFF's read models at scale. Fills the
// catalog and customers buckets of a nats-server of its own with
// BENCH_READ_MODEL_PRODUCTS (100 000) products and BENCH_READ_MODEL_CUSTOMERS
// (100 000) customers, as the services' outboxes write them (the event
// envelope, one version each), then starts a child process
// (bench/read-model-child.ts) that builds both replicas from the buckets as a
// BFF does at start, and prints its catch-up time and the memory they take
// (RSS and heap after catch-up, less those before).
import { randomUUID } from 'node:crypto';
import { connect } from 'nats';
import { customers, products, stateSubject, type Customer, type Product, type StateContract } from '../subjects/index.ts';
import { openStateBucket } from '../services/kit/index.ts';
import { startNats } from '../test/harness.ts';
import { describeMachine, fmt, intEnv, machine, progress, spawnNode, table, writeResults } from './common.ts';

const productCount = intEnv('BENCH_READ_MODEL_PRODUCTS', 100_000);
const customerCount = intEnv('BENCH_READ_MODEL_CUSTOMERS', 100_000);

export interface ReplicaFigures {
  catalogItems: number;
  customerItems: number;
  catchUpMs: number;
  catchUpCpuMs: number;
  rssMb: number;
  heapMb: number;
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

  progress('read-model: a child process builds both replicas from the buckets');
  const child = await spawnNode('read-model-replicas', 'bench/read-model-child.ts', {
    env: { NATS_URL: nats.url },
    ready: (line) => (line.startsWith('{"catalogItems"') ? line : undefined),
    timeoutMs: 300_000,
    cpuProfileDir: process.env.BENCH_CPU_PROF || undefined,
  });
  await child.stop();
  const figures = JSON.parse(child.ready) as ReplicaFigures;
  const m = machine();
  process.stdout.write(
    `\nmachine: ${describeMachine(m)}\n\n${table(
      ['replicas', 'items', 'catch-up ms', 'its CPU ms', 'RSS MB', 'heap MB'],
      [
        [
          'catalog + customers',
          `${fmt(figures.catalogItems)} + ${fmt(figures.customerItems)}`,
          fmt(figures.catchUpMs),
          fmt(figures.catchUpCpuMs),
          fmt(figures.rssMb),
          fmt(figures.heapMb),
        ],
      ],
    )}\n`,
  );
  progress(
    `\nwritten ${await writeResults('read-model', { at: new Date().toISOString(), machine: m, productCount, customerCount, ...figures })}`,
  );
} finally {
  await nats.cleanup();
}
