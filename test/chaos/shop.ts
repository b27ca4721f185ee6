// The whole shop as real processes, for the fault, fuzz, security and
// cluster tests: a nats-server of its own (test/harness.ts) or a cluster of
// three (test/nats-cluster.ts), every service of the registry one child
// process or more (`instances`) started by the launcher (spawnService,
// scripts/lib/launcher.ts) running its own main.ts on a fresh database, an SMTP
// server that can refuse a share of the emails, and optionally the BFF as a
// child process too. Faults are injected from here: kill -9 and restart a
// service, restart nats-server on the same store and port, drop every
// PostgreSQL connection of the shop's databases. A process that exits
// without being told to is recorded as a crash.
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { connect, type JetStreamManager, type NatsConnection } from 'nats';
import pg from 'pg';
import { SMTPServer } from 'smtp-server';
import { SERVICES, folderName, registry, streams, type ServiceFolder, type ServiceName } from '../../subjects/index.ts';
import { launchProcess, type Launched } from '../../scripts/lib/launcher.ts';
import { RpcClient } from '../../services/kit/index.ts';
import {
  dropTestDatabases,
  natsCredentials,
  spawnService,
  startNats,
  testDatabaseUrl,
  waitFor,
  type NatsUser,
  type ServiceProcess,
  type TestNats,
} from '../harness.ts';
import { NatsCluster } from '../nats-cluster.ts';

/** The services, by folder (`customer`), in the registry's order. */
export type ServiceDir = ServiceFolder;
export const SERVICE_DIRS = SERVICES.map((name) => folderName(registry[name])) as ServiceDir[];
/** The service (and NATS user) name of each folder, as the registry maps them. */
export const SERVICE_NAMES = Object.fromEntries(SERVICES.map((name) => [folderName(registry[name]), name])) as Record<
  ServiceDir,
  ServiceName
>;

export const ADMIN_EMAIL = 'admin@chaos.test';
export const JWT_SECRET = 'chaos-test-secret-0123456789-abcdefghij';

// --- Randomness that can be replayed ---------------------------------------------------------

/** mulberry32: a small seeded generator, so a failing run can be repeated with its seed. */
export function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

// --- SMTP that fails on demand ---------------------------------------------------------------

export interface ReceivedMail {
  messageId: string;
  to: string;
  subject: string;
  /** When the server accepted it (Date.now() as it answered 250). */
  acceptedAt: number;
}

export interface FlakySmtp {
  port: number;
  mails: ReceivedMail[];
  /** How many deliveries were refused with 451 (the injected faults). */
  refused: number;
  /** Share of deliveries refused from now on (0..1). */
  failureRate: number;
  /** Runs after an email is read and before it is accepted (250): to inject a fault at that moment. */
  beforeAccept: ((mail: ReceivedMail) => Promise<void>) | undefined;
  close(): Promise<void>;
}

/**
 * An SMTP server keeping every email it accepts, refusing `failureRate` of the
 * deliveries with 451 (try later) once it has read them, so the refusal is
 * made per email (by its Message-ID). One email is refused at most
 * `maxStreak` times in a row: with random refusals and the sender's doubling
 * back-off, an unlucky streak of ten would otherwise keep one email waiting
 * for minutes, which tests patience, not correctness.
 */
export async function startFlakySmtp(random: () => number, failureRate = 0, maxStreak = 5): Promise<FlakySmtp> {
  const smtp = { mails: [] as ReceivedMail[], refused: 0, failureRate, beforeAccept: undefined as FlakySmtp['beforeAccept'] };
  const streaks = new Map<string, number>();
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        const head = raw.slice(0, raw.indexOf('\r\n\r\n')).replace(/\r\n[ \t]+/g, ' ');
        const header = (name: string) =>
          head
            .split('\r\n')
            .find((line) => line.toLowerCase().startsWith(`${name}:`))
            ?.slice(name.length + 1)
            .trim() ?? '';
        const messageId = header('message-id');
        const streak = streaks.get(messageId) ?? 0;
        if (streak < maxStreak && random() < smtp.failureRate) {
          streaks.set(messageId, streak + 1);
          smtp.refused++;
          callback(Object.assign(new Error('mailbox busy, try again later'), { responseCode: 451 }));
          return;
        }
        streaks.delete(messageId);
        const mail = {
          messageId,
          to: session.envelope.rcptTo.map((rcpt) => rcpt.address).join(','),
          subject: header('subject'),
          acceptedAt: 0,
        };
        const accept = () => {
          mail.acceptedAt = Date.now();
          smtp.mails.push(mail);
          callback();
        };
        if (smtp.beforeAccept) smtp.beforeAccept(mail).then(accept, accept);
        else accept();
      });
    },
  });
  server.on('error', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return Object.assign(smtp, {
    port: (server.server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  });
}

// --- The BFF as a process --------------------------------------------------------------------

export interface BffProcess {
  url: string;
  child: ChildProcess;
  exited: Promise<number | null>;
  stop(): Promise<void>;
}

/** Runs the BFF (the registry's entry) through the launcher on a free port; resolves once it listens. */
export async function spawnBff(env: Record<string, string>): Promise<BffProcess> {
  let url: string | undefined;
  let started = false;
  let stderr = '';
  const launched: Launched = launchProcess(registry.bff, {
    env: { LOG_LEVEL: 'info', LOG_FORMAT: 'json', BFF_HOST: '127.0.0.1', BFF_PORT: '0', ...env },
    onLine(line, stream) {
      if (stream === 'stderr') {
        stderr = `${stderr}${line}\n`.slice(-4000);
        return;
      }
      // fastify says where it listens; with port 0 that is the only place the port is told.
      const listening = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(line);
      if (listening) url = listening[1];
      if (line.includes('"service started"')) started = true;
    },
  });
  const child = launched.child!;
  const exited = launched.exited.then((exit) => exit.code);
  await waitFor(
    () => {
      if (!launched.running) throw new Error(`bff exited with ${launched.lastExit?.code}: ${stderr}`);
      return started && url;
    },
    { timeoutMs: 60_000, what: 'the BFF to listen' },
  ).catch(async (error: unknown) => {
    await launched.kill('SIGKILL');
    throw error;
  });
  return {
    url: url!,
    child,
    exited,
    async stop() {
      await launched.stop(30_000);
    },
  };
}

// --- The shop --------------------------------------------------------------------------------

export interface ShopOptions {
  /** Run nats.conf as it is: every process signs in as its own user. */
  natsUsers?: boolean;
  seed?: number;
  smtpFailureRate?: number;
  /** Environment of every service, then of one service. */
  env?: Record<string, string>;
  serviceEnv?: Partial<Record<ServiceDir, Record<string, string>>>;
  /** Start the BFF as a process too, with this extra environment. */
  bff?: Record<string, string>;
  /** Three nats-servers in a cluster (streams and buckets with 3 replicas) instead of one. */
  cluster?: boolean;
  /** Processes of each service (and of the BFF, when started); 1 by default. */
  instances?: number;
  /** Keep every line every process (and, on a cluster, every node) writes in `<dir>/<process>.log`: to see where a run's time went. */
  logDir?: string;
}

/** The name of a service's `n`th process (1-based): its folder for the first, `order#2` for the second. */
export function instanceName(dir: ServiceDir, n: number): string {
  return n === 1 ? dir : `${dir}#${n}`;
}

/** The folder of a process named by instanceName. */
export function instanceDir(instance: string): ServiceDir {
  return instance.split('#')[0] as ServiceDir;
}

export interface Crash {
  process: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  lastLines: string[];
}

export class Shop {
  /** The nats-server, unless the shop runs on a cluster. */
  nats!: TestNats;
  cluster: NatsCluster | undefined;
  smtp!: FlakySmtp;
  readonly databases = {} as Record<ServiceDir, string>;
  /** Running service processes by instance name (instanceName). */
  readonly processes = new Map<string, ServiceProcess>();
  bff: BffProcess | undefined;
  /** Processes that exited without being stopped or killed by us. */
  readonly crashes: Crash[] = [];
  /** Every kill -9 of a service process: which, and when the signal was sent (Date.now()). */
  readonly kills: { instance: string; at: number }[] = [];
  /** Connection and clients of the test itself (as `admin`). */
  nc!: NatsConnection;
  jsm!: JetStreamManager;
  client!: RpcClient;
  readonly random: () => number;
  readonly #options: ShopOptions;
  readonly #expectedExit = new Set<ChildProcess>();
  readonly #tails = new Map<ChildProcess, string[]>();
  readonly #bffs: BffProcess[] = [];
  #bffStarts = 0;

  private constructor(options: ShopOptions) {
    this.#options = options;
    this.random = seeded(options.seed ?? 1);
  }

  static async start(options: ShopOptions = {}): Promise<Shop> {
    const shop = new Shop(options);
    try {
      if (options.logDir) mkdirSync(options.logDir, { recursive: true });
      if (options.cluster) shop.cluster = await NatsCluster.start({ users: options.natsUsers ?? false, logDir: options.logDir });
      else shop.nats = await startNats({ users: options.natsUsers ?? false });
      shop.smtp = await startFlakySmtp(seeded((options.seed ?? 1) + 1), options.smtpFailureRate ?? 0);
      for (const dir of SERVICE_DIRS) shop.databases[dir] = testDatabaseUrl(dir);
      // One at a time: the first start of each creates its database and streams.
      for (const instance of shop.instances()) await shop.startService(instance);
      shop.nc = await connect({
        servers: shop.natsUrl.split(','),
        noAsyncTraces: true,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 200,
        ...(options.natsUsers ? userOption('admin') : {}),
      });
      shop.jsm = await shop.nc.jetstreamManager();
      shop.client = new RpcClient(shop.nc, { timeoutMs: 10_000 });
      if (options.bff) for (let n = 0; n < (options.instances ?? 1); n++) await shop.startBff(options.bff);
      return shop;
    } catch (error) {
      // The caller never gets the shop to close: leave no process, server or database behind.
      await shop.close().catch(() => {});
      throw error;
    }
  }

  /** NATS_URL of every process: the server's URL, or every node's. */
  get natsUrl(): string {
    return this.cluster?.url ?? this.nats.url;
  }

  /** How every process reaches NATS: its URL(s) and, on a cluster, streams and buckets on every node. */
  #natsEnvironment(): Record<string, string> {
    return { NATS_URL: this.natsUrl, ...(this.cluster ? { STREAM_REPLICAS: String(this.cluster.names.length) } : {}) };
  }

  /** Every service process's instance name, in the registry's order. */
  instances(): string[] {
    const count = this.#options.instances ?? 1;
    return SERVICE_DIRS.flatMap((dir) => Array.from({ length: count }, (_, i) => instanceName(dir, i + 1)));
  }

  /** The environment a service process starts with. */
  serviceEnvironment(dir: ServiceDir): Record<string, string> {
    const base: Record<string, string> = {
      ...this.#natsEnvironment(),
      DATABASE_URL: this.databases[dir],
      RPC_TIMEOUT_MS: '5000',
      SHUTDOWN_TIMEOUT_MS: '3000',
      ...(this.#options.natsUsers ? natsCredentials(SERVICE_NAMES[dir]) : {}),
    };
    if (dir === 'customer') base.ADMIN_EMAILS = ADMIN_EMAIL;
    if (dir === 'notification') {
      Object.assign(base, {
        SMTP_HOST: '127.0.0.1',
        SMTP_PORT: String(this.smtp.port),
        SMTP_TIMEOUT_MS: '5000',
        NOTIFY_RETRY_BASE_MS: '50',
        // A notification service killed after claiming emails: they go once the lease ends, well within the wait for rest.
        NOTIFY_LEASE_MS: '30000',
      });
    }
    if (dir === 'shipping') {
      Object.assign(base, {
        // Quick enough that the shop comes to rest soon, slow enough that a cancel right after the confirmation finds it unshipped.
        SHIPPING_SHIP_AFTER_MS: '2000',
        SHIPPING_DELIVER_AFTER_MS: '500',
        SHIPPING_POLL_MS: '100',
        SHIPPING_RETRY_BASE_MS: '100',
        // A shipping service killed mid-step: its shipments go on once the lease ends, well within the wait for rest.
        SHIPPING_LEASE_MS: '10000',
        // Far longer than a cancel takes, even with a service killed under it.
        SHIPPING_HOLD_MS: '15000',
      });
    }
    return { ...base, ...this.#options.env, ...this.#options.serviceEnv?.[dir] };
  }

  /** Starts that failed (e.g. PostgreSQL out of connections on a shared machine) and were tried again. */
  startRetries = 0;

  /**
   * Starts a service process, and starts it again while it fails to come up
   * (as a supervisor would): on a machine shared with other test runs,
   * PostgreSQL may be out of connections for a moment.
   */
  async startService(instance: string): Promise<void> {
    const dir = instanceDir(instance);
    let attempts = 0;
    const running = await waitFor(
      async () => {
        if (attempts++ > 0) this.startRetries++;
        return spawnService(dir, this.serviceEnvironment(dir));
      },
      { timeoutMs: 180_000, intervalMs: 1000, what: `services/${dir} to start` },
    );
    this.#watch(instance, running.child, running.output);
    this.processes.set(instance, running);
  }

  /** Starts every service process that is not running (after a failed phase, say). */
  async startMissing(): Promise<void> {
    for (const instance of this.instances()) if (!this.processes.has(instance)) await this.startService(instance);
  }

  async startBff(extra: Record<string, string> = {}): Promise<BffProcess> {
    const bff = await spawnBff({
      ...this.#natsEnvironment(),
      JWT_SECRET,
      ...(this.#options.natsUsers ? natsCredentials('bff') : {}),
      ...this.#options.bff,
      ...extra,
    });
    this.#watch('bff', bff.child, undefined, `bff-${++this.#bffStarts}`);
    this.bff ??= bff;
    this.#bffs.push(bff);
    return bff;
  }

  /** Error and fatal log lines of every process so far: count, and the first of each kind (process, message, error). */
  readonly errorLog = { count: 0, kinds: new Map<string, { count: number; example: string }>() };

  #noteErrors(name: string, lines: readonly string[]): void {
    for (const line of lines) {
      if (!/"level":(50|60)/.test(line)) continue;
      this.errorLog.count++;
      let kind = `${name}: ${line.slice(0, 120)}`;
      try {
        const entry = JSON.parse(line) as { msg?: string; err?: { message?: string }; subject?: string; consumer?: string };
        kind = `${name}: ${entry.msg ?? '?'}${entry.subject ? ` [${entry.subject}]` : ''}${entry.consumer ? ` [${entry.consumer}]` : ''}: ${(entry.err?.message ?? '').slice(0, 160)}`;
      } catch {
        // not JSON: keep the raw start
      }
      const known = this.errorLog.kinds.get(kind);
      if (known) known.count++;
      else this.errorLog.kinds.set(kind, { count: 1, example: line.slice(0, 2000) });
    }
  }

  /** Notes how a process ends, and keeps the last lines of its log (the rest is dropped, to bound memory). */
  #watch(name: string, child: ChildProcess, output?: string[], logName = name.replace('#', '-')): void {
    const tail: string[] = [];
    this.#tails.set(child, tail);
    const logFile = this.#options.logDir ? join(this.#options.logDir, `${logName}.log`) : undefined;
    const keeper = () => {
      let partial = '';
      return (chunk: Buffer) => {
        const lines = (partial + chunk.toString()).split('\n');
        partial = lines.pop() ?? '';
        if (logFile && lines.length > 0) appendFileSync(logFile, `${lines.join('\n')}\n`);
        this.#noteErrors(name, lines);
        tail.push(...lines.filter(Boolean));
        if (tail.length > 200) tail.splice(0, tail.length - 200);
        // spawnService collects every line; only the tail is of use here.
        if (output && output.length > 500) output.splice(0, output.length);
      };
    };
    child.stdout?.on('data', keeper());
    child.stderr?.on('data', keeper());
    child.once('exit', (code, signal) => {
      if (!this.#expectedExit.has(child)) this.crashes.push({ process: name, code, signal, lastLines: tail.slice(-30) });
    });
  }

  /** The last lines a running service process wrote (its log), for diagnosing a failure. */
  logTail(instance: string): string[] {
    const running = this.processes.get(instance);
    return running ? [...(this.#tails.get(running.child) ?? [])] : [];
  }

  /** kill -9 of a service process (by instance name), and wait until it is gone. */
  async kill(instance: string): Promise<void> {
    const running = this.processes.get(instance);
    if (!running) return;
    this.#expectedExit.add(running.child);
    this.kills.push({ instance, at: Date.now() });
    running.child.kill('SIGKILL');
    await running.exited;
    this.processes.delete(instance);
  }

  /** SIGTERM: the graceful stop. */
  async stopService(instance: string): Promise<void> {
    const running = this.processes.get(instance);
    if (!running) return;
    this.#expectedExit.add(running.child);
    await running.stop();
    this.processes.delete(instance);
  }

  /** Stops nats-server (SIGTERM, or SIGKILL for a crash) and starts it again on the same store and port. */
  async restartNats(signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
    if (this.cluster) throw new Error('restartNats is for a single server; a cluster restarts its nodes (shop.cluster)');
    const { storeDir, port, process: server } = this.nats;
    const exited = new Promise<void>((resolve) => (server.exitCode !== null ? resolve() : server.once('exit', () => resolve())));
    server.kill(signal);
    await exited;
    this.nats = await startNats({ storeDir, port, users: this.#options.natsUsers ?? false });
  }

  /** Ends every PostgreSQL connection to the shop's databases (pg_terminate_backend); returns how many. */
  async dropConnections(): Promise<number> {
    const names = Object.values(this.databases).map((url) => decodeURIComponent(new URL(url).pathname.slice(1)));
    const admin = new URL(this.databases.customer);
    admin.pathname = '/postgres';
    return this.#withClient(admin.toString(), async (db) => {
      const { rows } = await db.query<{ ended: boolean }>(
        'SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity WHERE datname = ANY($1) AND pid <> pg_backend_pid()',
        [names],
      );
      return rows.filter((row) => row.ended).length;
    });
  }

  /**
   * A query on one service's database, on a connection of its own. Connecting
   * is tried again for a while: PostgreSQL here may be shared with other test
   * runs, and out of connections for a moment (53300 too_many_connections).
   */
  async query<T extends pg.QueryResultRow>(dir: ServiceDir, sql: string, params: unknown[] = []): Promise<T[]> {
    return this.#withClient(this.databases[dir], async (db) => (await db.query<T>(sql, params)).rows);
  }

  async #withClient<T>(url: string, work: (db: pg.Client) => Promise<T>): Promise<T> {
    const db = await waitFor(
      async () => {
        const client = new pg.Client({ connectionString: url });
        client.on('error', () => {});
        try {
          await client.connect();
          return client;
        } catch (error) {
          await client.end().catch(() => {});
          throw error; // waitFor tries again until its bound, then reports it
        }
      },
      { timeoutMs: 60_000, intervalMs: 250, what: 'a PostgreSQL connection' },
    );
    try {
      return await work(db);
    } finally {
      await db.end().catch(() => {});
    }
  }

  /** A fingerprint of every table of every service database: equal fingerprints, no state changed. */
  async fingerprint(): Promise<Record<string, string>> {
    const prints: Record<string, string> = {};
    for (const dir of SERVICE_DIRS) {
      const tables = await this.query<{ name: string }>(
        dir,
        `SELECT quote_ident(table_name) AS name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1`,
      );
      for (const { name } of tables) {
        const [row] = await this.query<{ print: string }>(
          dir,
          `SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') AS print FROM ${name} t`,
        );
        prints[`${dir}.${name}`] = row!.print;
      }
    }
    return prints;
  }

  /** Every service process still running (and the BFF, when started). */
  alive(): string[] {
    const up: string[] = [...this.processes]
      .filter(([, p]) => p.child.exitCode === null && p.child.signalCode === null)
      .map(([instance]) => instance);
    if (this.bff && this.bff.child.exitCode === null) up.push('bff');
    return up;
  }

  /**
   * The saga has come to rest: no durable consumer of the domain streams has
   * anything pending or unacknowledged, every outbox is empty and no email
   * waits, twice in a row with the same stream positions.
   */
  async quiescent(timeoutMs = 120_000): Promise<void> {
    let previous = '';
    let busy: string[] = [];
    const domainStreams = [
      streams.CUSTOMERS.name,
      streams.ORDERS.name,
      streams.INVENTORY.name,
      streams.PAYMENTS.name,
      streams.SHIPMENTS.name,
    ];
    try {
      await waitFor(
        async () => {
          busy = [];
          const positions: string[] = [];
          for (const stream of domainStreams) {
            positions.push(`${stream}:${(await this.jsm.streams.info(stream)).state.last_seq}`);
            for await (const consumer of this.jsm.consumers.list(stream)) {
              // The services' durable consumers; not a reader's ephemeral one (a test's or an operator's).
              if (!consumer.config.durable_name) continue;
              if (consumer.num_pending > 0 || consumer.num_ack_pending > 0) {
                busy.push(
                  `${consumer.name}: ${consumer.num_pending} pending, ${consumer.num_ack_pending} unacknowledged, ${consumer.num_waiting} pulls waiting`,
                );
              }
              positions.push(`${consumer.name}:${consumer.delivered.stream_seq}`);
            }
          }
          for (const dir of SERVICE_DIRS) {
            const [{ count }] = (await this.query<{ count: number }>(dir, 'SELECT count(*)::int AS count FROM outbox')) as [
              { count: number },
            ];
            if (count > 0) busy.push(`${dir} outbox: ${count} event(s)`);
          }
          const [{ pending }] = (await this.query<{ pending: number }>(
            'notification',
            `SELECT count(*)::int AS pending FROM notifications WHERE status = 'PENDING'`,
          )) as [{ pending: number }];
          if (pending > 0) busy.push(`${pending} email(s) waiting`);
          const [{ moving }] = (await this.query<{ moving: number }>(
            'shipping',
            'SELECT count(*)::int AS moving FROM shipments WHERE next_step_at IS NOT NULL',
          )) as [{ moving: number }];
          if (moving > 0) busy.push(`${moving} shipment(s) on their way`);
          if (busy.length > 0) return undefined;
          const now = positions.join(',');
          const stable = now === previous;
          previous = now;
          return stable;
        },
        { timeoutMs, intervalMs: 250, what: 'the shop to come to rest' },
      );
    } catch (error) {
      throw new Error(`${(error as Error).message}; still busy: ${busy.join('; ') || '(positions still moving)'}`);
    }
  }

  async close(): Promise<void> {
    this.client?.close();
    await this.nc?.drain().catch(() => {});
    for (const child of [...this.processes.values()].map((p) => p.child)) this.#expectedExit.add(child);
    for (const bff of this.#bffs) {
      this.#expectedExit.add(bff.child);
      await bff.stop();
    }
    await Promise.all([...this.processes.values()].map((p) => p.stop()));
    this.processes.clear();
    await this.smtp?.close();
    await this.nats?.cleanup();
    await this.cluster?.cleanup();
    await dropTestDatabases();
  }

  /** Stops a BFF gracefully (SIGTERM), as stopped on purpose. */
  async stopBff(bff: BffProcess): Promise<void> {
    this.#expectedExit.add(bff.child);
    await bff.stop();
    this.#bffs.splice(this.#bffs.indexOf(bff), 1);
    if (this.bff === bff) this.bff = this.#bffs[0];
  }

  /** The BFF processes running. */
  get bffs(): readonly BffProcess[] {
    return this.#bffs;
  }
}

function userOption(user: NatsUser): { user: string; pass: string } {
  const { NATS_USER, NATS_PASSWORD } = natsCredentials(user);
  return { user: NATS_USER, pass: NATS_PASSWORD };
}

/** A unique email for a test customer. */
export function email(name: string): string {
  return `${name}-${randomUUID().slice(0, 8)}@chaos.test`;
}
