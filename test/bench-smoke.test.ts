// Every benchmark still runs: each bench/*.ts entry (and `npm run load`) as a
// child process, as an operator would start it, with the smallest settings
// its environment variables allow (a second or so of measuring). Asserted:
// it exits 0, prints its table, and writes results whose counts are sane
// (work was done, and what was asked for is there). Never a timing: on a
// shared machine no figure of a run this short means anything. A measuring
// window is a second or two, so even a machine stalled for a while completes
// some calls in it.
//
// Results go to a folder of this test's own (BENCH_RESULTS_DIR), not over a
// developer's bench-results/.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ROOT } from './harness.ts';

const resultsDir = await mkdtemp(join(tmpdir(), 'bench-smoke-'));
after(() => rm(resultsDir, { recursive: true, force: true }));

/** Longest a bench may take here: each starts a shop of its own, which on a busy machine takes a while. */
const RUN_TIMEOUT_MS = 300_000;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `script` (relative to the project) with the project's Node; resolves when it exits. */
function run(script: string, env: Record<string, string>, args: readonly string[] = []): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], {
      cwd: ROOT,
      env: { ...process.env, BENCH_RESULTS_DIR: resultsDir, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    // Only a hung bench meets this: it is stopped so the test reports it rather than waiting forever.
    const timer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs a bench and asserts it exited 0, with the tail of its output when it did not. */
async function runOk(script: string, env: Record<string, string>, args: readonly string[] = []): Promise<string> {
  const result = await run(script, env, args);
  assert.equal(result.code, 0, `${script} exited with ${result.code}:\n${result.stderr.slice(-3000)}\n${result.stdout.slice(-2000)}`);
  return result.stdout;
}

async function results<T>(name: string): Promise<T> {
  return JSON.parse(await readFile(join(resultsDir, `${name}.json`), 'utf8')) as T;
}

interface Variant {
  name: string;
  median: number;
}

test('bench:rpc runs both parts and writes every variant', async () => {
  const stdout = await runOk('bench/rpc.ts', { BENCH_ROUNDS: '1', BENCH_ROUND_MS: '1000', BENCH_WARMUP_MS: '300', BENCH_CONCURRENCY: '4' });
  assert.match(stdout, /\(b\) Moleculer broker\.call/);
  const { parts } = await results<{ parts: { key: string; variants: Variant[] }[] }>('rpc');
  assert.deepEqual(
    parts.map((part) => part.key),
    ['a', 'b'],
  );
  for (const variant of parts.flatMap((part) => part.variants)) assert.ok(variant.median > 0, `${variant.name}: ${variant.median} calls/s`);
});

test('bench:bff measures the BFF and mercurius from memory, order and catalog', async () => {
  const stdout = await runOk('bench/bff.ts', {
    BENCH_BFF_ROUNDS: '1',
    BENCH_BFF_ROUND_MS: '1000',
    BENCH_BFF_WARMUP_MS: '300',
    BENCH_BFF_CONCURRENCY: '4',
  });
  assert.match(stdout, /catalog: BFF/);
  const { variants, catalog } = await results<{ variants: Variant[]; catalog: Variant[] }>('bff');
  assert.equal(variants.length, 2);
  assert.equal(catalog.length, 2);
  for (const variant of [...variants, ...catalog]) assert.ok(variant.median > 0, `${variant.name}: ${variant.median} requests/s`);
});

test('bench:saga confirms orders at a fixed rate and at saturation', async () => {
  const stdout = await runOk('bench/saga.ts', {
    BENCH_SAGA_RATES: '10',
    BENCH_SAGA_SECONDS: '1',
    BENCH_SAGA_WARMUP_SECONDS: '1',
    BENCH_SAGA_INFLIGHT: '8',
    BENCH_SAGA_PRODUCTS: '5',
    BENCH_SAGA_CUSTOMERS: '3',
    BENCH_SAGA_BOUND: '0',
  });
  assert.match(stdout, /CPU ms per confirmed order/);
  const { phases } = await results<{ phases: { name: string; placed: number; confirmed: number }[] }>('saga');
  assert.deepEqual(
    phases.map((phase) => phase.name),
    ['fixed rate', 'saturation'],
  );
  for (const phase of phases) {
    assert.ok(phase.confirmed > 0, `${phase.name}: ${phase.confirmed} confirmed`);
    assert.ok(phase.placed >= phase.confirmed, `${phase.name}: ${phase.placed} placed, ${phase.confirmed} confirmed`);
  }
});

test('bench:scale seeds a catalog the BFF replica serves, and reports its memory', async () => {
  const stdout = await runOk('bench/scale.ts', { BENCH_SCALE_SIZES: '1000', BENCH_SCALE_SAMPLES: '10' });
  assert.match(stdout, /BFF RSS MB/);
  const { results: sizes } = await results<{
    results: { products: number; orders: number; bffRssMb: number; bffHeapMb: number; latencyMs: Record<string, { count: number }> }[];
  }>('scale');
  assert.equal(sizes.length, 1);
  const [size] = sizes;
  assert.equal(size!.products, 1000);
  assert.equal(size!.orders, 100);
  assert.ok(size!.bffRssMb > 0 && size!.bffHeapMb > 0, `BFF memory: ${size!.bffRssMb} MB RSS, ${size!.bffHeapMb} MB heap`);
  // Every query was measured (the bench itself stops when one finds nothing).
  for (const [name, latency] of Object.entries(size!.latencyMs)) assert.ok(latency.count >= 10, `${name}: ${latency.count} samples`);
});

test('bench:outbox measures every variant', async () => {
  const stdout = await runOk('bench/outbox.ts', {
    BENCH_OUTBOX_EVENTS: '200',
    BENCH_OUTBOX_WINDOW: '100',
    BENCH_OUTBOX_WRITERS: '2',
    BENCH_OUTBOX_SECONDS: '2',
    BENCH_OUTBOX_ROUNDS: '1',
  });
  assert.match(stdout, /outbox relay/);
  const { variants } = await results<{ variants: Variant[] }>('outbox');
  assert.ok(variants.length >= 4, `${variants.length} variants`);
  for (const variant of variants) assert.ok(variant.median > 0, `${variant.name}: ${variant.median} events/s`);
});

test('bench:read-model builds both replicas with every item', async () => {
  const stdout = await runOk('bench/read-model.ts', { BENCH_READ_MODEL_PRODUCTS: '300', BENCH_READ_MODEL_CUSTOMERS: '200' });
  assert.match(stdout, /catalog \+ customers/);
  const { runs } = await results<{ runs: Record<string, { catalogItems: number; customerItems: number; rssMb: number }[]> }>('read-model');
  const [figures] = Object.values(runs).flat();
  assert.equal(figures?.catalogItems, 300);
  assert.equal(figures?.customerItems, 200);
});

test('bench:notify sends one email per event', async () => {
  const stdout = await runOk('bench/notify.ts', { BENCH_NOTIFY_RATE: '10', BENCH_NOTIFY_SECONDS: '1' });
  // The measured second's events, each recorded SENT.
  assert.match(stdout, /^10 emails in [\d.]+ s; CPU ms per email: .*notifications [\d.]+/m);
});

test('bench:tracing measures a BFF per tracing setting', async () => {
  const stdout = await runOk('bench/tracing.ts', {
    BENCH_TRACING_PARTS: 'bff',
    BENCH_TRACING_VARIANTS: 'disabled,default,sampled',
    BENCH_TRACING_ROUNDS: '1',
    BENCH_TRACING_WARMUP: '0',
    BENCH_TRACING_ROUND_MS: '1000',
    BENCH_TRACING_CONCURRENCY: '4',
  });
  assert.match(stdout, /BFF, catalog page/);
  const { bff } = await results<{ bff: { cpuMsPerRequest: Record<string, number>; spansExported: number } }>('tracing');
  assert.deepEqual(Object.keys(bff.cpuMsPerRequest).sort(), ['default', 'disabled', 'sampled']);
  for (const [name, ms] of Object.entries(bff.cpuMsPerRequest)) assert.ok(ms > 0, `${name}: ${ms} ms per request`);
});

test('npm run load places orders that end as their kind says', async () => {
  const json = join(resultsDir, 'load.json');
  // Exits 1 when an order ended otherwise than its kind says, or was not settled.
  const stdout = await runOk('scripts/load.ts', {}, [
    '--rate',
    '2',
    '--duration',
    '2',
    '--products',
    '3',
    '--orders',
    '1',
    '--browse',
    '1',
    '--json',
    json,
  ]);
  assert.match(stdout, /order kind -> outcome/);
  const { orders } = JSON.parse(await readFile(json, 'utf8')) as { orders: { placed: number; unexpected: number; unsettled: number } };
  assert.ok(orders.placed > 0, `${orders.placed} orders placed`);
  assert.equal(orders.unexpected, 0);
  assert.equal(orders.unsettled, 0);
});
