// Real servers for tests: a nats-server of our own per test file (random
// port, temporary JetStream store, the project's nats.conf), fresh
// PostgreSQL databases per run, and a poll helper instead of sleeps.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { processByFolder } from '../subjects/services.ts';
import { NATS_USERS, launchProcess, natsUserPasswordVariable } from '../scripts/lib/launcher.ts';
import { findNatsServer } from '../scripts/local-servers.ts';

export const ROOT = join(import.meta.dirname, '..');

export interface TestNats {
  url: string;
  port: number;
  storeDir: string;
  /** The monitoring endpoint (/healthz, /jsz, ...), when the server was given an HTTP port. */
  monitorUrl: string | undefined;
  process: ChildProcess;
  /** Stops the server, keeping its store (for restart tests). */
  stop(): Promise<void>;
  /** Stops the server and removes its store. */
  cleanup(): Promise<void>;
}

export { NATS_USERS };
/** A user of nats.conf: a registry entry's natsUser, or `admin`. */
export type NatsUser = string;
/** The passwords nats.conf reads from the environment: the caller's, or made up for this test process. */
const natsPasswords = Object.fromEntries(
  NATS_USERS.map((user) => [
    natsUserPasswordVariable(user),
    process.env[natsUserPasswordVariable(user)] || `pw-${randomBytes(12).toString('hex')}`,
  ]),
) as Record<string, string>;

/** Settings that sign a process in as `user` of nats.conf (for `startNats({ users: true })`). */
export function natsCredentials(user: NatsUser): { NATS_USER: string; NATS_PASSWORD: string } {
  return { NATS_USER: user, NATS_PASSWORD: natsPasswords[natsUserPasswordVariable(user)]! };
}

/**
 * Starts nats-server with JetStream on a random port; `storeDir` reuses a store.
 * It runs the project's nats.conf, users and permissions included. By default
 * a client that gives no credentials is `admin` (no limits), so tests need not
 * sign in; with `users: true` the file runs as it is and every client must sign
 * in as one of its users (natsCredentials).
 */
export async function startNats(
  options: { storeDir?: string; port?: number; users?: boolean; args?: readonly string[] } = {},
): Promise<TestNats> {
  const storeDir = options.storeDir ?? (await mkdtemp(join(tmpdir(), 'shop-nats-')));
  const portsDir = await mkdtemp(join(tmpdir(), 'shop-nats-ports-'));
  let config = join(ROOT, 'nats.conf');
  if (!options.users) {
    // nats-server resolves an include relative to the including file.
    config = join(portsDir, 'test.conf');
    await writeFile(config, `include "${relative(portsDir, join(ROOT, 'nats.conf'))}"\nno_auth_user: admin\n`);
  }
  const args = [
    '-c',
    config,
    '-a',
    '127.0.0.1',
    '-p',
    String(options.port ?? -1),
    '-js',
    '-sd',
    storeDir,
    '--ports_file_dir',
    portsDir,
    ...(options.args ?? []),
  ];
  const binary = findNatsServer() ?? 'nats-server';
  const child = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...natsPasswords } });
  let spawnError: Error | undefined;
  child.once('error', (error) => {
    spawnError = error;
  });
  let stderr = '';
  child.stderr?.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const { port, monitorUrl } = await waitFor(
    async () => {
      if (spawnError) {
        throw new Error(
          `could not run ${binary} (${spawnError.message}): install nats-server (bash .ci/run does) or set NATS_SERVER_BIN to its path`,
        );
      }
      if (child.exitCode !== null) throw new Error(`nats-server exited: ${stderr}`);
      const files = (await readdir(portsDir)).filter((file) => file.endsWith('.ports'));
      if (files.length === 0) return undefined;
      const ports = JSON.parse(await readFile(join(portsDir, files[0]!), 'utf8')) as { nats?: string[]; monitoring?: string[] };
      const url = ports.nats?.[0];
      return url ? { port: Number(new URL(url).port), monitorUrl: ports.monitoring?.[0] } : undefined;
    },
    { timeoutMs: 10_000, what: 'nats-server to listen' },
  );
  await rm(portsDir, { recursive: true, force: true });
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
  };
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    storeDir,
    monitorUrl,
    process: child,
    stop,
    async cleanup() {
      await stop();
      await rm(storeDir, { recursive: true, force: true });
    },
  };
}

/** Base URL of the test PostgreSQL: DATABASE_URL's server, or PG*, or 127.0.0.1:5432 as postgres. */
export function serverUrl(): URL {
  if (process.env.TEST_DATABASE_URL) return new URL(process.env.TEST_DATABASE_URL);
  const user = encodeURIComponent(process.env.PGUSER ?? 'postgres');
  const password = process.env.PGPASSWORD ? `:${encodeURIComponent(process.env.PGPASSWORD)}` : '';
  return new URL(`postgresql://${user}${password}@${process.env.PGHOST ?? '127.0.0.1'}:${process.env.PGPORT ?? '5432'}/postgres`);
}

const created: string[] = [];

/** A URL naming a database that does not exist yet (the kit creates it); dropped by `dropTestDatabases`. */
export function testDatabaseUrl(service: string): string {
  const name = `shop_test_${service}_${randomBytes(4).toString('hex')}`;
  created.push(name);
  const url = serverUrl();
  url.pathname = `/${name}`;
  return url.toString();
}

export async function dropTestDatabases(): Promise<void> {
  const client = new pg.Client({ connectionString: serverUrl().toString() });
  await client.connect();
  try {
    for (const name of created.splice(0)) {
      await client.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
    }
  } finally {
    await client.end();
  }
}

/** Polls `probe` until it returns something other than undefined/false; throws after the timeout. */
export async function waitFor<T>(
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  { timeoutMs = 10_000, intervalMs = 20, what = 'condition' }: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value as T;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${(lastError as Error).message}` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

// ---------------------------------------------------------------------------
// Services under test

import {
  loadConfig,
  createLogger,
  startService,
  serviceSettingsSchema,
  type KitSettings,
  type RunningService,
  type ServiceDefinition,
  type StartOptions,
} from '../services/kit/index.ts';
import type { TProperties } from '@sinclair/typebox';
import type { LevelWithSilent } from 'pino';

export interface TestServiceOptions extends StartOptions {
  /** Extra environment for loadConfig (e.g. service-specific settings). */
  env?: Record<string, string>;
  /** The service's settings schema; its definition's when omitted (the variables of its live settings are added). */
  settings?: TProperties;
  logLevel?: string;
}

/**
 * Starts a service in this process against `nats` and a fresh database.
 * Logs are silent unless TEST_LOG_LEVEL is set.
 */
export async function startTestService<Settings>(
  definition: ServiceDefinition<Settings>,
  nats: { url: string },
  options: TestServiceOptions = {},
): Promise<RunningService & { databaseUrl: string }> {
  const env = {
    NATS_URL: nats.url,
    LOG_LEVEL: options.logLevel ?? process.env.TEST_LOG_LEVEL ?? 'silent',
    SHUTDOWN_TIMEOUT_MS: '2000',
    ...options.env,
  };
  const schema = serviceSettingsSchema({ name: definition.name, settings: options.settings ?? definition.settings });
  const settings = loadConfig(schema, env) as unknown as Settings & KitSettings;
  const log = createLogger(definition.name, env.LOG_LEVEL as LevelWithSilent);
  const databaseUrl = options.databaseUrl ?? testDatabaseUrl(definition.name);
  const running = await startService(definition, settings, log, {
    outbox: { sweepMs: 200 },
    consumer: { backoffMs: 50, maxBackoffMs: 500 },
    ...options,
    databaseUrl,
  });
  return Object.assign(running, { databaseUrl });
}

export interface ServiceProcess {
  /** The running child process. */
  child: ChildProcess;
  /** Lines the process wrote to stdout (JSON logs). */
  output: string[];
  /** SIGTERM (a graceful stop, killed after 30 s) or `signal`, and wait for the exit; returns the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<number | null>;
}

/**
 * Runs a service's main.ts (`dir`: its folder under services/, or `../bff`)
 * as a real child process through the launcher, with the environment the
 * registry gives it, for crash (kill -9) and signal tests. Resolves once it
 * logs "service started" (within 60 s: a loaded machine starts slowly).
 */
export async function spawnService(dir: string, env: Record<string, string>): Promise<ServiceProcess> {
  const entry = processByFolder(dir.replace(/^\.\.\//, ''));
  if (!entry) throw new Error(`no process of the registry lives in ${dir}`);
  const output: string[] = [];
  let stderr = '';
  let started: () => void = () => {};
  const startedPromise = new Promise<void>((resolve) => (started = resolve));
  const launched = launchProcess(entry, {
    env: { LOG_LEVEL: 'info', LOG_FORMAT: 'json', ...env },
    onLine(line, stream) {
      if (stream === 'stdout') {
        output.push(line);
        if (line.includes('"service started"')) started();
      } else {
        stderr = `${stderr}${line}\n`.slice(-4000);
      }
    },
  });
  const child = launched.child!;
  const exited = launched.exited.then((exit) => exit.code);
  await Promise.race([
    startedPromise,
    exited.then((code) => {
      throw new Error(`${entry.folder} exited with ${code} before starting: ${stderr}`);
    }),
    new Promise((_, reject) =>
      setTimeout(
        () => reject(new Error(`${entry.folder} did not start in 60 s: ${stderr}; its last lines: ${output.slice(-5).join(' | ')}`)),
        60_000,
      ).unref(),
    ),
  ]).catch(async (error: unknown) => {
    await launched.kill('SIGKILL');
    throw error;
  });
  return {
    child,
    output,
    exited,
    async stop(signal = 'SIGTERM') {
      const exit = signal === 'SIGTERM' ? await launched.stop(30_000) : await launched.kill(signal);
      return exit?.code ?? null;
    },
  };
}

/** Ports freePort has handed out in this process. */
const handedOut = new Set<number>();

/**
 * A TCP port free at this moment (for a child that must be told its port in
 * advance), and never one handed out before in this process: the system may
 * give a port just closed again, and several asked for in a row must differ.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}
