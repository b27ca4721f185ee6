// `npm run bench`: every benchmark on the machine at hand, each in one run
// beside its baseline, then one table and bench-results/bench.json.
//
//   lookups  request-reply through the kit vs plain nc.request() on the same
//            server: bench/rpc.ts, run as it is (its own nats-server and
//            database), read back from bench-results/rpc.json
//   bff      a composed order query (order + customer + 3 products) through the
//            BFF vs mercurius serving it from memory: bench/bff.ts
//   saga     orders/s from placing to CONFIRMED and placed->confirmed latency,
//            at a fixed offered rate and at saturation: bench/saga.ts
//   outbox   JetStream publishing through the outbox vs plain pipelined
//            js.publish: bench/outbox.ts
//
// Each part starts what it needs (nats-server, fresh databases, the services
// and the BFF as child processes) and stops it before the next. BENCH_PARTS
// picks parts (default all: "lookups,bff,saga,outbox"); each part's own knobs
// are described in its file. Progress goes to stderr, the table to stdout.
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BFF_HEADER, bffCpuTable, bffRows, runBffBench, type BffResult } from './bff.ts';
import { OUTBOX_HEADER, outboxRows, runOutboxBench, type OutboxResult } from './outbox.ts';
import { runSagaBench, sagaCpuTable, sagaFreshnessTable, sagaHopTable, sagaRows, type SagaResult } from './saga.ts';
import { ROOT } from '../scripts/lib/launcher.ts';
import { describeMachine, fmt, machine, progress, table } from '../scripts/lib/measure.ts';
import { resultsDir, writeResults } from './common.ts';

const PARTS = new Set((process.env.BENCH_PARTS ?? 'lookups,bff,saga,outbox').split(',').map((part) => part.trim()));

/** The targets of issue 6, on a 2-core machine running everything. */
const TARGETS = {
  lookupRatio: 2,
  bffRatio: 0.5,
  catalogRatio: 0.5,
  sagaConfirmedPerSecond: 1000,
  sagaP99Ms: 50,
  sagaRate: 300,
} as const;

interface RpcVariant {
  name: string;
  median: number;
  ratio: number;
}
interface RpcPart {
  key: string;
  title: string;
  target?: number;
  ratio: number;
  variants: RpcVariant[];
}

/** Runs bench/rpc.ts as its own process (its progress shown live) and reads what it wrote. */
async function runLookups(): Promise<{ parts: RpcPart[] } & Record<string, unknown>> {
  const started = Date.now();
  // Its own table goes to our stderr with its progress; ours (stdout) has the ratios.
  const child = spawn(process.execPath, [join(ROOT, 'bench', 'rpc.ts')], { stdio: ['ignore', 2, 'inherit'] });
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  if (code !== 0) throw new Error(`bench/rpc.ts exited with ${code}`);
  const result = JSON.parse(await readFile(join(resultsDir(), 'rpc.json'), 'utf8')) as { at?: string; parts: RpcPart[] };
  if (!result.at || Date.parse(result.at) < started) throw new Error('bench/rpc.ts did not write bench-results/rpc.json');
  return result;
}

const verdict = (met: boolean) => (met ? 'met' : 'NOT met');

const m = machine();
progress(`machine: ${describeMachine(m)}`);
const results: {
  lookups?: Awaited<ReturnType<typeof runLookups>>;
  bff?: BffResult;
  saga?: SagaResult;
  outbox?: OutboxResult;
} = {};
const failures: Record<string, string> = {};
const part = async <K extends keyof typeof results>(key: K, run: () => Promise<NonNullable<(typeof results)[K]>>) => {
  if (!PARTS.has(key)) return;
  progress(`\n=== ${key} ===`);
  try {
    results[key] = await run();
  } catch (error) {
    failures[key] = (error as Error).stack ?? String(error);
    progress(`${key} failed: ${(error as Error).message}`);
  }
};

await part('lookups', runLookups);
await part('bff', () => runBffBench());
await part('saga', () => runSagaBench());
await part('outbox', () => runOutboxBench());

// --- The table -------------------------------------------------------------------------------------
const rows: string[][] = [];
for (const rpcPart of results.lookups?.parts ?? []) {
  const [kit, plain] = rpcPart.variants;
  if (!kit || !plain) continue;
  const target = rpcPart.target ?? TARGETS.lookupRatio;
  rows.push([
    `lookups (${rpcPart.key}) ${rpcPart.title}`,
    `${fmt(kit.median)}/s`,
    `${fmt(plain.median)}/s (${plain.name})`,
    `${rpcPart.ratio.toFixed(2)}x`,
    `>= ${target}x: ${verdict(rpcPart.ratio >= target)}`,
  ]);
}
if (results.bff) {
  const [bff, memory] = results.bff.variants;
  if (bff && memory) {
    rows.push([
      'BFF composed query (order + customer + 3 products)',
      `${fmt(bff.median)}/s, p50 ${bff.latencyMs.p50} ms, p99 ${bff.latencyMs.p99} ms`,
      `${fmt(memory.median)}/s (mercurius from memory)`,
      `${bff.ratio.toFixed(2)}x`,
      `>= ${TARGETS.bffRatio}x: ${verdict(bff.ratio >= TARGETS.bffRatio)}`,
    ]);
  }
  const [page, memoryPage] = results.bff.catalog;
  if (page && memoryPage) {
    rows.push([
      'BFF catalog page products(first: 20)',
      `${fmt(page.median)}/s, p50 ${page.latencyMs.p50} ms, p99 ${page.latencyMs.p99} ms`,
      `${fmt(memoryPage.median)}/s (mercurius from memory)`,
      `${page.ratio.toFixed(2)}x`,
      `>= ${TARGETS.catalogRatio}x: ${verdict(page.ratio >= TARGETS.catalogRatio)}`,
    ]);
  }
}
for (const phase of results.saga?.phases ?? []) {
  const saturation = phase.name === 'saturation';
  rows.push([
    `saga ${phase.name} (${phase.offered}), placed -> CONFIRMED`,
    `${fmt(phase.confirmedPerSecond)} confirmed/s, p50 ${phase.placedToConfirmedMs.p50} ms, p99 ${phase.placedToConfirmedMs.p99} ms`,
    '-',
    '-',
    saturation
      ? `>= ${TARGETS.sagaConfirmedPerSecond}/s: ${verdict(phase.confirmedPerSecond >= TARGETS.sagaConfirmedPerSecond)}`
      : phase.offered === `${TARGETS.sagaRate}/s`
        ? `p99 < ${TARGETS.sagaP99Ms} ms: ${verdict(phase.placedToConfirmedMs.p99 < TARGETS.sagaP99Ms && phase.notConfirmed.placeFailed === 0)}`
        : '-',
  ]);
}
if (results.outbox) {
  const [relay, plain, endToEnd] = results.outbox.variants;
  if (relay && plain) {
    rows.push([
      'JetStream publish through the outbox relay',
      `${fmt(relay.median)}/s`,
      `${fmt(plain.median)}/s (${plain.name})`,
      `${relay.ratio.toFixed(2)}x`,
      '-',
    ]);
  }
  if (endToEnd && plain) {
    rows.push([
      `outbox end-to-end (${endToEnd.name.split(', ')[1]}, commit included)`,
      `${fmt(endToEnd.median)}/s`,
      `${fmt(plain.median)}/s`,
      `${endToEnd.ratio.toFixed(2)}x`,
      '-',
    ]);
  }
}

const end = machine();
let output = `\nmachine: ${describeMachine(m)}; load average at the end ${end.loadAverage.join(' ')}\n\n`;
output += `${table(['benchmark', 'measured', 'baseline', 'ratio', 'target'], rows, 5)}\n`;
if (results.bff) output += `\n${table(BFF_HEADER, bffRows(results.bff))}\n\n${bffCpuTable(results.bff)}\n`;
if (results.saga) {
  output += `\n${table(['saga phase', 'confirmed/s', 'placed->confirmed p50/p99 ms', 'reply->confirmed p50/p99 ms', 'confirmed'], sagaRows(results.saga))}\n`;
  output += `\n${sagaHopTable(results.saga)}\n\n${sagaCpuTable(results.saga)}\n`;
  const freshness = sagaFreshnessTable(results.saga);
  if (freshness) output += `\n${freshness}\n`;
}
if (results.outbox) output += `\n${table(OUTBOX_HEADER, outboxRows(results.outbox))}\n`;
for (const [key, stack] of Object.entries(failures)) output += `\n${key} FAILED: ${stack.split('\n')[0]}\n`;
process.stdout.write(output);

const file = await writeResults('bench', {
  at: new Date().toISOString(),
  machine: { ...m, loadAverageAtEnd: end.loadAverage },
  targets: TARGETS,
  ...results,
  failures,
});
progress(`\nwritten ${file}`);
if (Object.keys(failures).length > 0) process.exitCode = 1;
