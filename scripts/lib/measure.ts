// Measuring and reporting, shared by the benchmarks (bench/) and the
// operator's load tools (`npm run load`, `npm run soak`): progress lines,
// tables, the machine a figure was taken on, latency percentiles, and CPU
// time per process read from /proc.
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import pg from 'pg';

// ---------------------------------------------------------------------------
// Output

/** Progress goes to stderr, so stdout carries only the final table. */
export function progress(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** A line that rewrites itself on a terminal (a live status); on a pipe, every `everyMs` a new line. */
export class StatusLine {
  readonly #tty = Boolean(process.stderr.isTTY);
  readonly #everyMs: number;
  #lastPrinted = 0;
  #shown = false;

  constructor(everyMs = 5000) {
    this.#everyMs = everyMs;
  }

  show(text: string): void {
    if (this.#tty) {
      process.stderr.write(`\r\x1b[2K${text}`);
      this.#shown = true;
      return;
    }
    const now = Date.now();
    if (now - this.#lastPrinted < this.#everyMs) return;
    this.#lastPrinted = now;
    process.stderr.write(`${text}\n`);
  }

  /** Ends the live line so the next output starts on a line of its own. */
  done(): void {
    if (this.#tty && this.#shown) process.stderr.write('\n');
    this.#shown = false;
  }
}

export function fmt(value: number, digits = 0): string {
  if (!Number.isFinite(value)) return 'n/a';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function round(value: number, digits = 1): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

/** A plain text table: the first `left` columns left-aligned (1 by default), the others right-aligned. */
export function table(header: string[], rows: string[][], left = 1): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => (column < left ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!)))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((width) => '-'.repeat(width))), ...rows.map(line)].join('\n');
}

export interface Machine {
  cores: number;
  cpu: string;
  memoryGiB: number;
  node: string;
  platform: string;
  loadAverage: number[];
}

export function machine(): Machine {
  return {
    cores: cpus().length,
    cpu: cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    loadAverage: loadavg().map((value) => round(value, 2)),
  };
}

export function describeMachine(m: Machine): string {
  return `${m.cores} cores (${m.cpu}), ${m.memoryGiB} GiB, Node ${m.node}, load average ${m.loadAverage.join(' ')}`;
}

// ---------------------------------------------------------------------------
// Statistics

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Latencies in milliseconds; percentiles by the nearest-rank method. */
export class Latencies {
  readonly #values: number[] = [];
  #sorted = true;

  add(ms: number): void {
    this.#values.push(ms);
    this.#sorted = false;
  }

  get count(): number {
    return this.#values.length;
  }

  percentile(p: number): number {
    if (this.#values.length === 0) return Number.NaN;
    if (!this.#sorted) {
      this.#values.sort((a, b) => a - b);
      this.#sorted = true;
    }
    const rank = Math.min(this.#values.length, Math.max(1, Math.ceil((p / 100) * this.#values.length)));
    return this.#values[rank - 1]!;
  }

  summary(): LatencySummary {
    return {
      count: this.count,
      p50: round(this.percentile(50), 2),
      p90: round(this.percentile(90), 2),
      p99: round(this.percentile(99), 2),
      max: round(this.percentile(100), 2),
    };
  }
}

export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

// ---------------------------------------------------------------------------
// CPU per process (Linux /proc)

const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** CPU seconds (user + system, all threads) process `pid` has used so far; NaN when unreadable. */
export async function cpuSeconds(pid: number | undefined): Promise<number> {
  if (pid === undefined) return Number.NaN;
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // After the parenthesised command name: utime is the 14th field of the line, stime the 15th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return Number.NaN;
  }
}

/** The pids of the PostgreSQL backends serving `databases` now (pg_stat_activity). */
async function backendPids(serverUrl: string, databases: readonly string[]): Promise<number[]> {
  const url = new URL(serverUrl);
  url.pathname = '/postgres';
  const client = new pg.Client({ connectionString: url.toString() });
  await client.connect();
  try {
    const { rows } = await client.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = ANY($1::text[])', [databases]);
    return rows.map((row) => row.pid);
  } finally {
    await client.end();
  }
}

/** CPU seconds of named processes at one moment; `cpuUsed` turns two of them into a breakdown. */
export type CpuSnapshot = Map<string, number>;

/**
 * CPU used so far by each process in `pids` (name -> pid), by this process
 * (`bench`), and by the PostgreSQL backends serving `postgres.databases` on the
 * server of `postgres.url` (keys `pg:<pid>`; cpuUsed sums them as `postgres`).
 * Other users of the same PostgreSQL server are left out; its shared writers
 * (WAL, checkpoints) too.
 */
export async function cpuSnapshot(
  pids: ReadonlyMap<string, number | undefined>,
  postgres?: { url: string; databases: readonly string[] },
): Promise<CpuSnapshot> {
  const snapshot: CpuSnapshot = new Map();
  const own = process.cpuUsage();
  snapshot.set('bench', (own.user + own.system) / 1e6);
  for (const [name, pid] of pids) snapshot.set(name, await cpuSeconds(pid));
  if (postgres && postgres.databases.length > 0) {
    const backends = await backendPids(postgres.url, postgres.databases).catch(() => [] as number[]);
    for (const pid of backends) snapshot.set(`pg:${pid}`, await cpuSeconds(pid));
  }
  return snapshot;
}

/**
 * CPU seconds each process used between two snapshots. A PostgreSQL backend
 * that started in between counts whole; one that ended takes its CPU with it.
 */
export function cpuUsed(before: CpuSnapshot, after: CpuSnapshot): Record<string, number> {
  const used: Record<string, number> = {};
  let postgres = 0;
  for (const [name, end] of after) {
    const start = before.get(name) ?? (name.startsWith('pg:') ? 0 : undefined);
    if (start === undefined || !Number.isFinite(start) || !Number.isFinite(end)) continue;
    if (name.startsWith('pg:')) postgres += Math.max(0, end - start);
    else used[name] = round(Math.max(0, end - start), 3);
  }
  if ([...after.keys()].some((name) => name.startsWith('pg:'))) used.postgres = round(postgres, 3);
  return used;
}
