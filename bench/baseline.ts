// `npm run bench:baseline`: bench:saga at saturation on an earlier tree and
// on this one, alternately, in one run, and the ratio of their confirmed
// orders/s (issue 20: at least 0.9x of tree 366bf18). On a shared machine
// only runs alternated like this compare fairly.
//
//   npm run bench:baseline -- prepare   the baseline tree only: `git archive <commit>`
//                                        unpacked into its folder and `npm ci` there
//                                        (each step skipped when already done)
//   npm run bench:baseline               prepares it, then BENCH_BASELINE_PAIRS pairs of runs
//
// Each run is `BENCH_SAGA_PHASES=saturation node bench/saga.ts` in its tree,
// baseline first in each pair. Environment: BENCH_BASELINE_COMMIT (366bf18),
// BENCH_BASELINE_DIR (.tmp/baseline-<commit>, git-ignored),
// BENCH_BASELINE_PAIRS (3), and bench:saga's own (BENCH_SAGA_SECONDS: 20,
// BENCH_SAGA_INFLIGHT, ...), passed to both trees.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from '../scripts/lib/launcher.ts';
import { describeMachine, fmt, machine, median, progress, round, table } from '../scripts/lib/measure.ts';
import { intEnv, writeResults } from './common.ts';

const commit = process.env.BENCH_BASELINE_COMMIT || '366bf18';
const baselineDir = process.env.BENCH_BASELINE_DIR || join(ROOT, '.tmp', `baseline-${commit}`);
const pairs = intEnv('BENCH_BASELINE_PAIRS', 3);
const command = process.argv[2] ?? 'run';

/** Runs a command to its end with its output shown; throws when it fails. */
function exec(file: string, args: readonly string[], options: { cwd: string; env?: Record<string, string> }) {
  return new Promise<void>((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
      // The runs' tables go to stderr with their progress: our stdout carries only the comparison.
      stdio: ['ignore', 2, 'inherit'],
    });
    child.once('error', reject);
    child.once('exit', (code, signal) =>
      code === 0 ? resolve() : reject(new Error(`${file} ${args.join(' ')} (in ${options.cwd}) ended with ${signal ?? code}`)),
    );
  });
}

/** The baseline tree, unpacked and installed; each step skipped when done before. */
async function prepare(): Promise<void> {
  if (existsSync(join(baselineDir, 'package.json'))) {
    progress(`baseline: ${baselineDir} holds ${commit} already`);
  } else {
    progress(`baseline: unpacking ${commit} into ${baselineDir}`);
    await mkdir(baselineDir, { recursive: true });
    await exec('sh', ['-c', `git archive ${commit} | tar -x -C "${baselineDir}"`], { cwd: ROOT });
  }
  if (existsSync(join(baselineDir, 'node_modules'))) {
    progress('baseline: node_modules present, npm ci skipped');
  } else {
    progress('baseline: npm ci (a minute or so)');
    await exec('npm', ['ci', '--no-audit', '--no-fund'], { cwd: baselineDir });
  }
}

interface SagaRun {
  confirmedPerSecond: number;
  /** CPU ms per confirmed order, every process of the shop and PostgreSQL (the bench's own left out). */
  cpuMsPerOrder: number;
}

/** One saturation run of bench/saga.ts in `tree`; its figures from the results file it wrote. */
async function sagaRun(tree: string, resultsDir: string): Promise<SagaRun> {
  // This tree writes where BENCH_RESULTS_DIR says; an older one into its own bench-results/.
  const file = tree === ROOT ? join(resultsDir, 'saga.json') : join(tree, 'bench-results', 'saga.json');
  await rm(file, { force: true });
  await exec(process.execPath, ['bench/saga.ts'], {
    cwd: tree,
    // The database-bound replay (BENCH_SAGA_BOUND) is no part of the comparison: off unless asked for.
    env: { BENCH_SAGA_PHASES: 'saturation', BENCH_SAGA_BOUND: process.env.BENCH_SAGA_BOUND ?? '0', BENCH_RESULTS_DIR: resultsDir },
  });
  const { phases } = JSON.parse(await readFile(file, 'utf8')) as {
    phases: { name: string; confirmedPerSecond: number; cpuMsPerOrder: Record<string, number> }[];
  };
  const saturation = phases.find((phase) => phase.name === 'saturation');
  if (!saturation) throw new Error(`${file} has no saturation phase`);
  const shopCpu = Object.entries(saturation.cpuMsPerOrder)
    .filter(([name]) => name !== 'bench')
    .reduce((sum, [, ms]) => sum + ms, 0);
  return { confirmedPerSecond: saturation.confirmedPerSecond, cpuMsPerOrder: round(shopCpu, 2) };
}

await prepare();
if (command === 'run') {
  const m = machine();
  const resultsDir = await mkdtemp(join(tmpdir(), 'bench-baseline-'));
  const runs: { pair: number; baseline: SagaRun; current: SagaRun }[] = [];
  try {
    for (let pair = 1; pair <= pairs; pair++) {
      progress(`\nbaseline: pair ${pair} of ${pairs}: ${commit} first`);
      const baseline = await sagaRun(baselineDir, resultsDir);
      progress(`baseline: pair ${pair} of ${pairs}: this tree`);
      const current = await sagaRun(ROOT, resultsDir);
      progress(
        `baseline: pair ${pair}: ${fmt(baseline.confirmedPerSecond)} vs ${fmt(current.confirmedPerSecond)} confirmed/s ` +
          `(${(current.confirmedPerSecond / baseline.confirmedPerSecond).toFixed(2)}x)`,
      );
      runs.push({ pair, baseline, current });
    }
  } finally {
    await rm(resultsDir, { recursive: true, force: true });
  }
  const ratio = (run: (typeof runs)[number]) => run.current.confirmedPerSecond / run.baseline.confirmedPerSecond;
  const rows = runs.map((run) => [
    String(run.pair),
    fmt(run.baseline.confirmedPerSecond),
    fmt(run.current.confirmedPerSecond),
    `${ratio(run).toFixed(2)}x`,
    fmt(run.baseline.cpuMsPerOrder, 2),
    fmt(run.current.cpuMsPerOrder, 2),
  ]);
  const medianRatio = median(runs.map(ratio));
  const meanOf = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
  rows.push([
    'median / mean',
    fmt(median(runs.map((run) => run.baseline.confirmedPerSecond))),
    fmt(median(runs.map((run) => run.current.confirmedPerSecond))),
    `${medianRatio.toFixed(2)}x`,
    fmt(meanOf(runs.map((run) => run.baseline.cpuMsPerOrder)), 2),
    fmt(meanOf(runs.map((run) => run.current.cpuMsPerOrder)), 2),
  ]);
  process.stdout.write(
    `\nmachine: ${describeMachine(m)}\nbench:saga saturation, ${commit} then this tree, alternated\n\n${table(
      ['pair', `${commit} confirmed/s`, 'this tree', 'ratio', `CPU ms/order ${commit}`, 'this tree'],
      rows,
    )}\n\nratio of confirmed orders/s, median of ${runs.length} pairs: ${medianRatio.toFixed(2)}x (goal >= 0.9x)\n`,
  );
  progress(`\nwritten ${await writeResults('baseline', { at: new Date().toISOString(), machine: m, commit, pairs: runs })}`);
} else if (command !== 'prepare') {
  throw new Error(`unknown command "${command}": "prepare" or none`);
}
