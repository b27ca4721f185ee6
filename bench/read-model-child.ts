// Bench-only child of bench/read-model.ts: builds the BFF's read models
// (bff/read-models.ts) from the buckets at NATS_URL, as a BFF does at start,
// and prints one JSON line: items, catch-up time (both, and each replica's),
// RSS and heap grown, the process's RSS, and the p99 of catalog pages from memory.
import { connect } from 'nats';
import { createLogger } from '../services/kit/index.ts';
import { allReplicas, createReadModels } from '../bff/read-models.ts';

const settle = () => {
  globalThis.gc?.();
  return process.memoryUsage();
};
const before = settle();
const nc = await connect({ servers: process.env.NATS_URL!, noAsyncTraces: true });
const models = createReadModels(nc, createLogger('bench', 'warn'), 1);
const started = performance.now();
const cpuBefore = process.cpuUsage();
for (const replica of allReplicas(models)) replica.start();
// Each replica's own catch-up too: they read side by side, on one event loop.
const [catalogMs, customersMs] = await Promise.all(
  [models.catalog, models.profiles].map(async (replica) => {
    await replica.caughtUp();
    return Math.round(performance.now() - started);
  }),
);
const catchUpMs = performance.now() - started;
// CPU time too: on a shared machine the wall time says as much about the neighbours.
const cpu = process.cpuUsage(cpuBefore);
// The first catalog page sorts the catalog once, as the first products query of a BFF would.
models.catalog.page(20);
const after = settle();
// Then pages of 20 after positions spread over the catalog, as a storefront's next pages ask:
// their p99 should not grow with the catalog.
const listed = models.catalog.page(Math.max(1, models.catalog.size)).items;
const pageMicros: number[] = [];
for (let i = 0; i < 10_000 && listed.length > 0; i++) {
  // Every tenth the first page, the rest after a product picked across the whole order.
  const from = i % 10 === 0 ? undefined : listed[(i * 7919) % listed.length];
  const started = performance.now();
  models.catalog.page(20, from);
  pageMicros.push((performance.now() - started) * 1000);
}
pageMicros.sort((a, b) => a - b);
const pageP99Micros = pageMicros.length ? Math.round(pageMicros[Math.floor(pageMicros.length * 0.99)]! * 10) / 10 : 0;
process.stdout.write(
  `${JSON.stringify({
    catalogItems: models.catalog.size,
    customerItems: models.profiles.size,
    catchUpMs: Math.round(catchUpMs),
    catalogMs,
    customersMs,
    catchUpCpuMs: Math.round((cpu.user + cpu.system) / 1000),
    rssMb: Math.round((after.rss - before.rss) / 1024 / 1024),
    // The whole process's, as a BFF's memory budget counts it (a BFF adds fastify, mercurius and the rest).
    processRssMb: Math.round(after.rss / 1024 / 1024),
    pageP99Micros,
    heapMb: Math.round((after.heapUsed - before.heapUsed) / 1024 / 1024),
  })}\n`,
);
await new Promise<void>((resolve) => process.once('SIGTERM', () => resolve()));
for (const replica of allReplicas(models)) await replica.stop();
await nc.drain();
