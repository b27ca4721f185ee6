// What the benchmarks (`npm run bench`, bench/*.ts) and the load generator
// (`npm run load`) share: the whole shop started on this machine the way
// production runs it (one child process per service and for the BFF, its own
// nats-server, fresh databases, an SMTP server that discards), small
// measuring tools (latencies, CPU per process), a keep-alive GraphQL client,
// and the table and JSON file a run ends with.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { ROOT, dropTestDatabases, startNats, testDatabaseUrl, waitFor, type TestNats } from '../test/harness.ts';

export { ROOT, waitFor };

// ---------------------------------------------------------------------------
// Settings and output

/** A positive integer from the environment, or `fallback`. */
export function intEnv(name: string, fallback: number): number {
  const value = Number(process.env[name]);
  return Number.isInteger(value) && value > 0 ? value : fallback;
}

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

/** A plain text table: the first column left-aligned, the others right-aligned. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((cell, column) => (column === 0 ? cell.padEnd(widths[0]!) : cell.padStart(widths[column]!))).join('  ');
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

/** Writes `bench-results/<name>.json` (the folder is git-ignored) and returns its path. */
export async function writeResults(name: string, data: unknown): Promise<string> {
  const dir = join(ROOT, 'bench-results');
  await mkdir(dir, { recursive: true });
  const file = join(dir, `${name}.json`);
  await writeFile(file, `${JSON.stringify(data, null, 2)}\n`);
  return file;
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

/** The pids of every PostgreSQL process on this machine (the server and its backends). */
async function postgresPids(): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    const name = await readFile(`/proc/${entry}/comm`, 'utf8').catch(() => '');
    if (name.trim() === 'postgres') pids.push(Number(entry));
  }
  return pids;
}

/** CPU seconds of named processes at one moment; `cpuUsed` turns two of them into a breakdown. */
export type CpuSnapshot = Map<string, number>;

/**
 * CPU used so far by each process in `pids` (name -> pid), by this process
 * (`bench`), and by all of PostgreSQL together (`postgres`: every backend,
 * also other users' on this machine, so an upper bound).
 */
export async function cpuSnapshot(pids: ReadonlyMap<string, number | undefined>): Promise<CpuSnapshot> {
  const snapshot: CpuSnapshot = new Map();
  const own = process.cpuUsage();
  snapshot.set('bench', (own.user + own.system) / 1e6);
  for (const [name, pid] of pids) snapshot.set(name, await cpuSeconds(pid));
  let pg = 0;
  for (const pid of await postgresPids()) {
    const seconds = await cpuSeconds(pid);
    if (Number.isFinite(seconds)) pg += seconds;
  }
  snapshot.set('postgres', pg);
  return snapshot;
}

/**
 * CPU seconds each process used between two snapshots. PostgreSQL backends
 * that ended in between take their CPU with them, so `postgres` may read low.
 */
export function cpuUsed(before: CpuSnapshot, after: CpuSnapshot): Record<string, number> {
  const used: Record<string, number> = {};
  for (const [name, end] of after) {
    const start = before.get(name);
    if (start !== undefined && Number.isFinite(start) && Number.isFinite(end)) used[name] = round(Math.max(0, end - start), 3);
  }
  return used;
}

// ---------------------------------------------------------------------------
// Child processes

export interface Child {
  name: string;
  child: ChildProcess;
  pid: number | undefined;
  /** The last lines the process wrote (stdout and stderr), for error messages. */
  tail(): string;
  /** SIGTERM (or `signal`), then wait for the exit; returns the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface SpawnOptions {
  env?: Record<string, string>;
  /** Resolves the start once a line of output satisfies this; its value is returned as `ready`. */
  ready: (line: string) => string | undefined | false;
  /** Writes a V8 CPU profile into this folder when the process exits. */
  cpuProfileDir?: string | undefined;
  timeoutMs?: number;
}

/**
 * Runs `script` (relative to the project) with the project's Node. Output is
 * read line by line until ready and then only its tail is kept, so a process
 * that logs every request does not fill the bench's memory.
 */
export async function spawnNode(name: string, script: string, options: SpawnOptions): Promise<Child & { ready: string }> {
  const profile = options.cpuProfileDir ? ['--cpu-prof', `--cpu-prof-dir=${options.cpuProfileDir}`, `--cpu-prof-name=${name}.${Date.now()}.cpuprofile`] : [];
  const child = spawn(process.execPath, [...profile, join(ROOT, script)], {
    env: { ...process.env, LOG_FORMAT: 'json', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  let buffered = '';
  let readyValue: string | undefined;
  const onData = (chunk: Buffer) => {
    const parts = (buffered + chunk.toString()).split('\n');
    buffered = (parts.pop() ?? '').slice(-4000);
    for (const line of parts) {
      if (readyValue === undefined) {
        const value = options.ready(line);
        if (value !== undefined && value !== false) readyValue = value;
      }
      lines.push(line.slice(0, 2000));
    }
    if (lines.length > 60) lines.splice(0, lines.length - 40);
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const tail = () => [...lines, buffered].join('\n').slice(-3000);
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    return exited;
  };
  try {
    const ready = await waitFor(
      () => {
        if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}:\n${tail()}`);
        return readyValue;
      },
      { timeoutMs: options.timeoutMs ?? 30_000, what: `${name} to start`, intervalMs: 25 },
    );
    return { name, child, pid: child.pid, tail, stop, ready };
  } catch (error) {
    await stop('SIGKILL');
    throw error;
  }
}

/** A TCP port free at this moment (for a child that must be told its port in advance). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

// ---------------------------------------------------------------------------
// The shop on this machine

export const SERVICE_DIRS = ['customer', 'product', 'order', 'payment', 'notification'] as const;
export type ServiceDir = (typeof SERVICE_DIRS)[number];

export const BENCH_ADMIN_EMAIL = 'bench-admin@shop.test';
export const BENCH_ADMIN_PASSWORD = 'bench-admin-password';

export interface ShopOptions {
  /** Also run the BFF (a child process listening on 127.0.0.1). */
  bff?: boolean;
  /** Which services to run (all by default). */
  services?: readonly ServiceDir[];
  /** Environment for every service and the BFF (e.g. LOG_LEVEL). */
  env?: Record<string, string>;
  /** Environment of one service, by directory name, or of the BFF (`bff`). */
  envOf?: Partial<Record<ServiceDir | 'bff', Record<string, string>>>;
  /** Every process writes a CPU profile here when it stops. */
  cpuProfileDir?: string | undefined;
}

export interface Shop {
  nats: TestNats;
  natsUrl: string;
  /** The BFF's base URL (http://127.0.0.1:<port>) when it runs. */
  bffUrl: string | undefined;
  jwtSecret: string;
  /** Every process of the shop by name (the services by directory, `bff`, `smtp`, `nats-server`). */
  pids(): Map<string, number | undefined>;
  /** Stops every process gracefully (profiles are written then), nats-server, and drops the databases. */
  stop(): Promise<void>;
}

/**
 * Starts the shop as production runs it: its own nats-server (the project's
 * nats.conf, a temporary store), an SMTP server that accepts and discards
 * (a child process), each service as a child process (`services/<dir>/main.ts`)
 * on a fresh database, and optionally the BFF (`bff/main.ts`) with a
 * bench-only JWT secret and a rate limit high enough for a benchmark.
 */
export async function startShop(options: ShopOptions = {}): Promise<Shop> {
  const nats = await startNats();
  const children: Child[] = [];
  const jwtSecret = `bench-${randomBytes(24).toString('hex')}`;
  const stopAll = async () => {
    // The BFF first, then the services, the SMTP sink last (the notification sender may still be talking to it).
    const order = ['bff', ...SERVICE_DIRS, 'smtp'];
    const byName = [...children].sort((a, b) => order.indexOf(a.name) - order.indexOf(b.name));
    for (const name of order) await Promise.all(byName.filter((child) => child.name === name).map((child) => child.stop()));
    await nats.cleanup();
    await dropTestDatabases().catch((error: unknown) => progress(`could not drop the bench databases: ${(error as Error).message}`));
  };
  try {
    const smtp = await spawnNode('smtp', 'bench/smtp-sink.ts', { ready: (line) => /^listening (\d+)$/.exec(line)?.[1] });
    children.push(smtp);
    const common = { NATS_URL: nats.url, LOG_LEVEL: 'info', SHUTDOWN_TIMEOUT_MS: '10000', ...options.env };
    const serviceEnv: Record<ServiceDir, Record<string, string>> = {
      customer: { ADMIN_EMAILS: BENCH_ADMIN_EMAIL },
      product: {},
      order: {},
      payment: {},
      notification: { SMTP_HOST: '127.0.0.1', SMTP_PORT: smtp.ready },
    };
    await Promise.all(
      (options.services ?? SERVICE_DIRS).map((dir) =>
        spawnNode(dir, `services/${dir}/main.ts`, {
          env: { ...common, DATABASE_URL: testDatabaseUrl(`bench_${dir}`), ...serviceEnv[dir], ...options.envOf?.[dir] },
          ready: (line) => line.includes('"service started"') && 'started',
          cpuProfileDir: options.cpuProfileDir,
        }).then((child) => (children.push(child), child)),
      ),
    );
    let bffUrl: string | undefined;
    if (options.bff) {
      const port = await freePort();
      const bff = await spawnNode('bff', 'bff/main.ts', {
        env: {
          ...common,
          BFF_PORT: String(port),
          BFF_HOST: '127.0.0.1',
          JWT_SECRET: jwtSecret,
          RATE_LIMIT_MAX: '1000000',
          ...options.envOf?.bff,
        },
        ready: (line) => line.includes('"service started"') && 'started',
        cpuProfileDir: options.cpuProfileDir,
      });
      children.push(bff);
      bffUrl = `http://127.0.0.1:${port}`;
      // Ready: the order feed reads and every service answers its ping.
      await waitFor(
        async () => (await fetch(`${bffUrl}/health/ready`)).status === 200,
        { timeoutMs: 30_000, intervalMs: 100, what: 'the BFF to be ready' },
      );
    }
    return {
      nats,
      natsUrl: nats.url,
      bffUrl,
      jwtSecret,
      pids: () => {
        const pids = new Map<string, number | undefined>(children.map((child) => [child.name, child.pid]));
        pids.set('nats-server', nats.process.pid);
        return pids;
      },
      stop: stopAll,
    };
  } catch (error) {
    await stopAll();
    throw error;
  }
}

// ---------------------------------------------------------------------------
// GraphQL over HTTP, keep-alive

export interface GraphQLResult<T> {
  status: number;
  data: T | null;
  errors?: { message: string; extensions?: { code?: string } }[];
}

/** POSTs GraphQL requests over kept-alive connections (node:http: less overhead per request than fetch). */
export class GraphQLHttp {
  readonly #url: URL;
  readonly #agent: http.Agent;

  constructor(baseUrl: string, maxSockets = 256) {
    this.#url = new URL('/graphql', baseUrl);
    this.#agent = new http.Agent({ keepAlive: true, maxSockets });
  }

  request<T = Record<string, any>>(query: string, variables: Record<string, unknown> = {}, token?: string): Promise<GraphQLResult<T>> {
    const body = JSON.stringify({ query, variables });
    return new Promise((resolve, reject) => {
      const request = http.request(
        this.#url,
        {
          method: 'POST',
          agent: this.#agent,
          headers: {
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(body),
            ...(token ? { authorization: `Bearer ${token}` } : {}),
          },
          timeout: 30_000,
        },
        (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('end', () => {
            try {
              const parsed = JSON.parse(Buffer.concat(chunks).toString()) as { data?: T | null; errors?: GraphQLResult<T>['errors'] };
              resolve({ status: response.statusCode ?? 0, data: parsed.data ?? null, ...(parsed.errors ? { errors: parsed.errors } : {}) });
            } catch (error) {
              reject(new Error(`unreadable GraphQL answer (HTTP ${response.statusCode}): ${(error as Error).message}`));
            }
          });
          response.on('error', reject);
        },
      );
      request.on('timeout', () => request.destroy(new Error('GraphQL request timed out')));
      request.on('error', reject);
      request.end(body);
    });
  }

  /** The data of a request that must succeed; throws with the first error's code otherwise. */
  async ok<T = Record<string, any>>(query: string, variables: Record<string, unknown> = {}, token?: string): Promise<T> {
    const result = await this.request<T>(query, variables, token);
    if (result.errors?.length || result.status !== 200 || !result.data) {
      const first = result.errors?.[0];
      const error = new Error(`GraphQL ${result.status}: ${first?.extensions?.code ?? ''} ${first?.message ?? 'no data'}`.trim());
      (error as Error & { code?: string }).code = first?.extensions?.code ?? `HTTP_${result.status}`;
      throw error;
    }
    return result.data;
  }

  close(): void {
    this.#agent.destroy();
  }
}

export const REGISTER = `mutation ($email: String!, $name: String!, $password: String!) {
  register(email: $email, name: $name, password: $password) { token customer { id } }
}`;

export const CREATE_PRODUCT = `mutation ($input: CreateProductInput!) {
  createProduct(input: $input) { id sku name price { amount currency } available }
}`;

/** Signs in the bench's admin (registered on first use: ADMIN_EMAILS names it in the shop startShop runs). */
export async function adminToken(client: GraphQLHttp, email = BENCH_ADMIN_EMAIL, password = BENCH_ADMIN_PASSWORD): Promise<string> {
  const login = await client.request<{ login: { token: string } }>(
    'mutation ($email: String!, $password: String!) { login(email: $email, password: $password) { token } }',
    { email, password },
  );
  if (login.data?.login) return login.data.login.token;
  const registered = await client.ok<{ register: { token: string } }>(REGISTER, { email, name: 'Bench Admin', password });
  return registered.register.token;
}

/** Creates `count` products priced in EUR with `stock` units each; returns their ids. */
export async function createProducts(
  client: GraphQLHttp,
  token: string,
  count: number,
  stock: number,
  prefix = `bench-${randomBytes(3).toString('hex')}`,
): Promise<{ id: string; sku: string; available: number }[]> {
  const created = [];
  for (let i = 0; i < count; i++) {
    const { createProduct } = await client.ok<{ createProduct: { id: string; sku: string; available: number } }>(
      CREATE_PRODUCT,
      {
        input: {
          sku: `${prefix}-${i}`,
          name: `Bench product ${i}`,
          description: 'made by the benchmark',
          price: { amount: 199 + i * 100, currency: 'EUR' },
          initialStock: stock,
        },
      },
      token,
    );
    created.push(createProduct);
  }
  return created;
}
