// The soak in a CI size: `npm run soak` for a minute and a quarter at a few
// orders a second, with inbox horizons of seconds instead of weeks and a
// carrier that ships and delivers within seconds, so every event of an order
// has arrived, and been pruned, well inside the warm-up (a horizon, a pruning
// interval, and the processes' first allocations). After it, the inbox rows
// and each process's memory must stay flat while the orders keep growing.
// Flat means within a tolerance: no timing is asserted, only sizes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launch } from '../scripts/lib/launcher.ts';

const RETENTION_S = 10;
/** From here on the inbox holds a steady window of events: the highest it had since then is its level. */
const STEADY_FROM_S = 20;
const WARM_UP_S = 35;

interface Report {
  elapsedS: number;
  processes: Record<string, { rssMiB: number; loopP99Ms?: number }>;
  tables: Record<string, Record<string, number>>;
}

test('under a steady order load, inbox rows and every process’s memory stay flat after warm-up', { timeout: 300_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'shop-soak-'));
  const json = join(dir, 'soak.json');
  const lines: string[] = [];
  try {
    const soak = launch({
      name: 'soak',
      script: 'scripts/soak.ts',
      args: ['--minutes', '1.25', '--rate', '5', '--every', '10', '--customers', '10', '--settle', '120', '--json', json],
      // A deadline far beyond the run and patient requests: on a starved machine the orders still end as their kind says.
      env: {
        RPC_TIMEOUT_MS: '10000',
        INBOX_RETENTION_SECONDS: String(RETENTION_S),
        INBOX_PRUNE_INTERVAL_MS: '2000',
        ORDER_DEADLINE_MS: '600000',
        SHIPPING_SHIP_AFTER_MS: '1000',
        SHIPPING_DELIVER_AFTER_MS: '1000',
        BENCH_LOG_LEVEL: 'warn',
      },
      onLine: (line) => {
        lines.push(line);
        if (lines.length > 400) lines.splice(0, 100);
      },
    });
    const exit = await soak.exited;
    const output = () => lines.slice(-80).join('\n');
    assert.equal(exit.code, 0, `npm run soak failed:\n${output()}`);

    const { reports } = JSON.parse(await readFile(json, 'utf8')) as { reports: Report[] };
    const warm = reports.findIndex((report) => report.elapsedS >= WARM_UP_S);
    assert.ok(
      warm >= 0 && warm < reports.length - 3,
      `reports after the warm-up: ${reports.map((r) => r.elapsedS).join(', ')}\n${output()}`,
    );
    const inboxRows = (report: Report) => Object.values(report.tables).reduce((sum, rows) => sum + (rows.inbox ?? 0), 0);
    const orders = (report: Report) => report.tables.orders?.orders ?? 0;
    const atWarm = reports[warm]!;
    const after = reports.slice(warm + 1);
    const last = reports.at(-1)!;

    // The load went on: the orders grew well past what there was at warm-up, the inbox did not.
    assert.ok(orders(last) >= 1.6 * orders(atWarm), `orders ${orders(atWarm)} at warm-up, ${orders(last)} at the end`);
    // The level is the highest of the steady reports, not one report's: a few seconds' stall
    // of a starved machine, then the catch-up, can put more than a horizon's events in one window.
    const steady = reports.slice(0, warm + 1).filter((report) => report.elapsedS >= STEADY_FROM_S);
    const level = Math.max(...steady.map(inboxRows));
    const inboxBound = 1.5 * level + 100;
    for (const report of after) {
      assert.ok(
        inboxRows(report) <= inboxBound,
        `inbox rows ${inboxRows(report)} at ${report.elapsedS} s, more than ${inboxBound} (at most ${level} from ${STEADY_FROM_S} s to the warm-up: ${steady.map(inboxRows).join(', ')})`,
      );
    }
    // Without pruning, every event applied keeps its row: rows per order would stay what they were at warm-up.
    const perOrder = (report: Report) => inboxRows(report) / Math.max(1, orders(report));
    assert.ok(
      perOrder(last) < 0.75 * perOrder(atWarm),
      `inbox rows per order ${perOrder(atWarm).toFixed(2)} at warm-up, ${perOrder(last).toFixed(2)} at the end: were they pruned?`,
    );

    // Each Node process's memory (nats-server's grows with its streams, which their limits bound).
    for (const [name, sample] of Object.entries(atWarm.processes)) {
      if (sample.loopP99Ms === undefined) continue;
      assert.ok(Number.isFinite(sample.rssMiB), `${name}: no memory figure (its /metrics)\n${output()}`);
      const bound = sample.rssMiB * 1.25 + 24;
      const highest = Math.max(...after.map((report) => report.processes[name]?.rssMiB ?? Number.NaN));
      assert.ok(highest <= bound, `${name}: ${highest} MiB after warm-up, more than ${bound.toFixed(1)} (${sample.rssMiB} at warm-up)`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
