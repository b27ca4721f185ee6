// The whole shop started on this machine the way production runs it (one
// child process per process of the registry, started by the launcher as
// `npm start` does, its own nats-server, fresh databases, an SMTP server that
// discards), and a keep-alive GraphQL client for it: what the benchmarks
// (bench/) and `npm run load` / `npm run soak` (scripts/) run against.
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { connect } from 'nats';
import { SERVICES, registry, type ProcessEntry, type ServiceName } from '../../subjects/index.ts';
import { launch, launchProcess, type LaunchOptions, type Launched } from './launcher.ts';
import { cpuSnapshot, progress, type CpuSnapshot } from './measure.ts';
import {
  dropTestDatabases,
  freePort,
  serverUrl as postgresServerUrl,
  startNats,
  testDatabaseUrl,
  waitFor,
  type TestNats,
} from '../../test/harness.ts';
import { answers as acceptsConnections, noPostgres, postgresAddress } from '../../services/kit/startup.ts';

// ---------------------------------------------------------------------------
// Child processes

export interface Child {
  name: string;
  child: ChildProcess;
  pid: number | undefined;
  /** The last lines the process wrote (stdout and stderr), for error messages. */
  tail(): string;
  /** Warnings and errors it logged (pino levels 40 and up): how many, and the first few messages. */
  problems(): { count: number; first: string[] };
  /** SIGTERM (or `signal`), then wait for the exit; returns the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface SpawnOptions {
  env?: Record<string, string>;
  /** Resolves the start once a line of output satisfies this; its value is returned as `ready`. */
  ready?: (line: string) => string | undefined | false;
  /** Or once this probe says so (polled). */
  probe?: () => Promise<boolean>;
  /** Writes a V8 CPU profile into this folder when the process exits. */
  cpuProfileDir?: string | undefined;
  /** Longest wait for it to be ready (START_TIMEOUT_MS by default). */
  timeoutMs?: number;
}

/** How long a process may take to be ready after it is started: long, for a machine busy with other work. */
const START_TIMEOUT_MS = 120_000;

/**
 * Runs `script` (relative to the project) with the project's Node, through
 * the launcher (or a process of the registry, with the environment the
 * registry gives it). Output is read line by line until ready and then only
 * its tail is kept, so a process that logs every request does not fill the
 * bench's memory.
 */
export async function spawnNode(name: string, script: string | ProcessEntry, options: SpawnOptions): Promise<Child & { ready: string }> {
  const profile = options.cpuProfileDir
    ? ['--cpu-prof', `--cpu-prof-dir=${options.cpuProfileDir}`, `--cpu-prof-name=${name}.${Date.now()}.cpuprofile`]
    : [];
  const lines: string[] = [];
  let readyValue: string | undefined;
  const problems = { count: 0, first: [] as string[] };
  const onLine = (line: string) => {
    if (/"level":(40|50|60)/.test(line)) {
      problems.count++;
      if (problems.first.length < 5) problems.first.push(line.slice(0, 600));
    }
    if (readyValue === undefined && options.ready) {
      const value = options.ready(line);
      if (value !== undefined && value !== false) readyValue = value;
    }
    lines.push(line.slice(0, 2000));
    if (lines.length > 60) lines.splice(0, lines.length - 40);
  };
  const common: Omit<LaunchOptions, 'name' | 'script'> = { nodeArgs: profile, env: { LOG_FORMAT: 'json', ...options.env }, onLine };
  const launched: Launched = typeof script === 'string' ? launch({ name, script, ...common }) : launchProcess(script, { name, ...common });
  const child = launched.child!;
  const tail = () => lines.join('\n').slice(-3000);
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    const exit = signal === 'SIGTERM' ? await launched.stop(30_000) : await launched.kill(signal);
    return exit?.code ?? null;
  };
  try {
    const ready = await waitFor(
      async () => {
        if (!launched.running) throw new Error(`${name} exited with ${launched.lastExit?.code}:\n${tail()}`);
        if (options.probe) return (await options.probe().catch(() => false)) && 'ready';
        return readyValue;
      },
      { timeoutMs: options.timeoutMs ?? START_TIMEOUT_MS, what: `${name} to start`, intervalMs: 25 },
    );
    return { name, child, pid: child.pid, tail, problems: () => problems, stop, ready };
  } catch (error) {
    await stop('SIGKILL');
    throw error;
  }
}

// ---------------------------------------------------------------------------
// The shop on this machine

export const BENCH_ADMIN_EMAIL = 'bench-admin@shop.test';
export const BENCH_ADMIN_PASSWORD = 'bench-admin-password';

export interface ShopOptions {
  /** Also run the BFF (a child process listening on 127.0.0.1). */
  bff?: boolean;
  /** Which services to run (every one of the registry by default). */
  services?: readonly ServiceName[];
  /** Environment for every service and the BFF (e.g. LOG_LEVEL). */
  env?: Record<string, string>;
  /** Environment of one process, by its registry name (`orders`, `bff`). */
  envOf?: Partial<Record<ServiceName | 'bff', Record<string, string>>>;
  /** Every process writes a CPU profile here when it stops. */
  cpuProfileDir?: string | undefined;
  /** Give every service and the BFF an operations port (/metrics, /health/*) of its own (Shop.opsPorts). */
  opsPorts?: boolean;
  /** Longest wait for one process to be ready (START_TIMEOUT_MS by default). */
  startTimeoutMs?: number;
}

/**
 * Starts a process on a port freePort found free. Another process (an
 * outgoing connection's local port, a neighbouring test) may take it before
 * ours binds; then it is started again on another one.
 */
async function onFreePort<T>(start: (port: number) => Promise<T>, attempts = 3): Promise<{ child: T; port: number }> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    try {
      return { child: await start(port), port };
    } catch (error) {
      if (attempt >= attempts || !String((error as Error).message).includes('is taken')) throw error;
    }
  }
}

export interface Shop {
  nats: TestNats;
  natsUrl: string;
  /** The BFF's base URL (http://127.0.0.1:<port>) when it runs. */
  bffUrl: string | undefined;
  jwtSecret: string;
  /** Every process of the shop by name (the registry's names, `smtp`, `nats-server`). */
  pids(): Map<string, number | undefined>;
  /** The shop's databases (one per service). */
  databases: string[];
  /** Each service's database URL, by its registry name. */
  databaseUrls: Map<ServiceName, string>;
  /** Each process's operations port, by its registry name (with `opsPorts`). */
  opsPorts: Map<ServiceName | 'bff', number>;
  /** The URL of one service's database, for a bench that writes straight into it. */
  databaseUrl(name: ServiceName): string;
  /** cpuSnapshot of every process of the shop (and of `extra`) and of its databases' backends. */
  cpuSnapshot(extra?: ReadonlyMap<string, number | undefined>): Promise<CpuSnapshot>;
  /** Warnings and errors logged so far, by process (only those that logged any). */
  problems(): Record<string, { count: number; first: string[] }>;
  /** Stops every process gracefully (profiles are written then), nats-server, and drops the databases. */
  stop(): Promise<void>;
}

/**
 * Starts the shop as production runs it: its own nats-server (the project's
 * nats.conf, a temporary store), an SMTP server that accepts and discards
 * (a child process), each service of the registry as a child process started
 * by the launcher on a fresh database, and optionally the BFF with a
 * bench-only JWT secret and a rate limit high enough for a benchmark.
 */
export async function startShop(options: ShopOptions = {}): Promise<Shop> {
  const postgres = postgresAddress(postgresServerUrl().toString());
  if (!(await acceptsConnections(postgres.host, postgres.port))) throw new Error(noPostgres(postgres.host, postgres.port));
  const nats = await startNats();
  // Asks whether a micro service answers its ping: ready whatever the log level.
  const probe = await connect({ servers: nats.url, noAsyncTraces: true });
  const answers = async (service: string) => {
    try {
      await probe.request(`$SRV.PING.${service}`, undefined, { timeout: 500 });
      return true;
    } catch {
      return false;
    }
  };
  const children: Child[] = [];
  const databases: string[] = [];
  const databaseUrls = new Map<ServiceName, string>();
  const opsPorts = new Map<ServiceName | 'bff', number>();
  /** OPS_PORT for `name`, when asked for. */
  const opsEnv = async (name: ServiceName | 'bff'): Promise<Record<string, string>> => {
    if (!options.opsPorts) return {};
    const port = await freePort();
    opsPorts.set(name, port);
    return { OPS_PORT: String(port) };
  };
  let serverUrl = '';
  const jwtSecret = `bench-${randomBytes(24).toString('hex')}`;
  const stopAll = async () => {
    // The BFF first, then the services, the SMTP sink last (the notification sender may still be talking to it).
    const order = ['bff', ...SERVICES, 'smtp'];
    const byName = [...children].sort((a, b) => order.indexOf(a.name) - order.indexOf(b.name));
    for (const name of order) await Promise.all(byName.filter((child) => child.name === name).map((child) => child.stop()));
    await probe.close().catch(() => {});
    await nats.cleanup();
    await dropTestDatabases().catch((error: unknown) => progress(`could not drop the bench databases: ${(error as Error).message}`));
  };
  try {
    const smtp = await spawnNode('smtp', 'bench/smtp-sink.ts', { ready: (line) => /^listening (\d+)$/.exec(line)?.[1] });
    children.push(smtp);
    // Production's log level unless BENCH_LOG_LEVEL says otherwise.
    const common = { NATS_URL: nats.url, LOG_LEVEL: process.env.BENCH_LOG_LEVEL || 'info', SHUTDOWN_TIMEOUT_MS: '10000', ...options.env };
    const databaseFor = (name: ServiceName) => {
      const url = testDatabaseUrl(`bench_${name}`);
      serverUrl = url;
      databaseUrls.set(name, url);
      databases.push(decodeURIComponent(new URL(url).pathname.slice(1)));
      return url;
    };
    const serviceEnv: Partial<Record<ServiceName, Record<string, string>>> = {
      customers: { ADMIN_EMAILS: BENCH_ADMIN_EMAIL },
      notifications: { SMTP_HOST: '127.0.0.1', SMTP_PORT: smtp.ready },
    };
    await Promise.all(
      (options.services ?? SERVICES).map(async (name) =>
        spawnNode(name, registry[name], {
          env: { ...common, DATABASE_URL: databaseFor(name), ...(await opsEnv(name)), ...serviceEnv[name], ...options.envOf?.[name] },
          probe: () => answers(name),
          cpuProfileDir: options.cpuProfileDir,
          timeoutMs: options.startTimeoutMs ?? START_TIMEOUT_MS,
        }).then((child) => {
          children.push(child);
          return child;
        }),
      ),
    );
    let bffUrl: string | undefined;
    if (options.bff) {
      const bffOpsEnv = await opsEnv('bff');
      const { child: bff, port } = await onFreePort((port) =>
        spawnNode('bff', registry.bff, {
          env: {
            ...common,
            BFF_PORT: String(port),
            BFF_HOST: '127.0.0.1',
            JWT_SECRET: jwtSecret,
            RATE_LIMIT_MAX: '1000000',
            ...bffOpsEnv,
            ...options.envOf?.bff,
          },
          // Ready: the order feed reads and every service answers its ping.
          probe: async () => (await fetch(`http://127.0.0.1:${port}/health/ready`)).status === 200,
          cpuProfileDir: options.cpuProfileDir,
          timeoutMs: options.startTimeoutMs ?? START_TIMEOUT_MS,
        }),
      );
      children.push(bff);
      bffUrl = `http://127.0.0.1:${port}`;
    }
    const pids = () => {
      const all = new Map<string, number | undefined>(children.map((child) => [child.name, child.pid]));
      all.set('nats-server', nats.process.pid);
      return all;
    };
    return {
      nats,
      natsUrl: nats.url,
      databases,
      databaseUrls,
      opsPorts,
      databaseUrl: (name) => {
        const url = databaseUrls.get(name);
        if (!url) throw new Error(`${name} does not run in this shop`);
        return url;
      },
      cpuSnapshot: (extra) => cpuSnapshot(new Map([...pids(), ...(extra ?? [])]), { url: serverUrl, databases }),
      bffUrl,
      jwtSecret,
      pids,
      problems: () =>
        Object.fromEntries(
          children.map((child) => [child.name, child.problems()]).filter(([, found]) => (found as { count: number }).count > 0),
        ),
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
