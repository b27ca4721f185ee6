// `npm start`: the whole shop on this machine, one child process per process
// of the registry (subjects/services.ts: the services, then the BFF), all run
// by the project's Node through the launcher (scripts/launcher.ts). Their
// output is interleaved line by line under the name of the process (pretty
// on a terminal). A process that exits on its own is started again after a
// growing pause; SIGINT or SIGTERM stops them all gracefully.
//
//   npm start                        every process
//   npm start -- customers orders    only these (registry names, or folders: customer order)
//   npm start -- --help
//
// Before starting anything it checks what every process needs and says, in
// one line each, what is missing: a NATS server at NATS_URL, PostgreSQL, a
// free operations port for each process (the registry's, printed at start),
// a free BFF_PORT.
//
// The environment passes through to every process: NATS_URL, LOG_LEVEL,
// OTEL_*, ... (the kit's defaults point at 127.0.0.1). Each process gets its
// own OTEL_SERVICE_NAME, OPS_PORT, and its NATS user when
// NATS_<USER>_PASSWORD is set. DATABASE_URL is one service's own database,
// so it is not handed to all of them: its server and credentials become
// PGHOST/PGPORT/PGUSER/PGPASSWORD, and each service uses its own database
// shop_<name> on that server; `<FOLDER>_DATABASE_URL` (e.g. ORDER_DATABASE_URL)
// sets one service's database. Without JWT_SECRET, the BFF gets a random one
// for this run (its tokens end with the run).
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import pinoPretty from 'pino-pretty';
import { PROCESSES, databaseVariable, processByFolder, registry, type ProcessEntry } from '../subjects/services.ts';
import { answers, natsProblem, noPostgres, portTaken } from '../services/kit/startup.ts';
import { EX_CONFIG, launchProcess, type Exit, type Launched } from './launcher.ts';

const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';
/** The BFF's port when BFF_PORT is unset (bff/settings.ts). */
const DEFAULT_BFF_PORT = 4000;
const USAGE = `usage: npm start [-- <process>...]
  Starts the shop: ${PROCESSES.join(', ')} (registry names; folder names work too).
  Each process's operations port (/metrics, /health/*) comes from the registry.
  Environment: NATS_URL, DATABASE_URL or PG*, <FOLDER>_DATABASE_URL (ORDER_DATABASE_URL, ...), BFF_PORT, JWT_SECRET, LOG_LEVEL, OTEL_*.`;

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
// What the processes need, checked before any starts

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

/** One line per thing that keeps the shop from starting; none when all is there. */
async function problems(entries: readonly ProcessEntry[], natsUrl: string, postgres: { host: string; port: number }): Promise<string[]> {
  const found: string[] = [];
  const opsHost = process.env.OPS_HOST ?? '127.0.0.1';
  for (const entry of entries) {
    if (!(await isFree(entry.opsPort, opsHost))) {
      found.push(portTaken(entry.opsPort, `OPS_PORT of ${entry.name}`, `give ${entry.name} another opsPort in subjects/services.ts`));
    }
  }
  if (entries.some((entry) => entry.name === 'bff')) {
    const port = Number(process.env.BFF_PORT || DEFAULT_BFF_PORT);
    if (!(await isFree(port, process.env.BFF_HOST ?? 'localhost'))) found.push(portTaken(port, 'BFF_PORT'));
  }
  const nats = await natsProblem(natsUrl);
  if (nats) found.push(nats);
  if (entries.some((entry) => entry.isService) && !(await answers(postgres.host, postgres.port))) {
    found.push(noPostgres(postgres.host, postgres.port));
  }
  return found;
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

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const entries = chosen(args);
  let sharedServer: Record<string, string> = {};
  try {
    if (process.env.DATABASE_URL) sharedServer = serverSettingsOf(process.env.DATABASE_URL);
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n`);
    process.exit(2);
  }
  nameWidth = Math.max(nameWidth, ...entries.map((entry) => entry.name.length));
  const natsUrl = process.env.NATS_URL || DEFAULT_NATS_URL;
  const postgres = {
    host: sharedServer.PGHOST ?? process.env.PGHOST ?? '127.0.0.1',
    port: Number(sharedServer.PGPORT ?? process.env.PGPORT ?? 5432),
  };

  const missing = await problems(entries, natsUrl, postgres);
  if (missing.length > 0) {
    for (const line of missing) say(line, process.stderr);
    process.exit(1);
  }

  say(`starting ${entries.map((entry) => entry.name).join(', ')} with node ${process.version}`);
  say(`NATS ${natsUrl}; PostgreSQL ${postgres.host}:${postgres.port}, one database per service`);
  const opsHost = process.env.OPS_HOST ?? '127.0.0.1';
  say(`operations ports: ${entries.map((entry) => `${entry.name} http://${opsHost}:${entry.opsPort}/metrics`).join(', ')}`);
  if (entries.some((entry) => entry.name === 'bff')) {
    const port = Number(process.env.BFF_PORT || DEFAULT_BFF_PORT);
    say(`storefront http://localhost:${port}/, GraphQL http://localhost:${port}/graphql`);
  }
  const jwtSecret = process.env.JWT_SECRET || randomBytes(32).toString('base64url');
  if (entries.some((entry) => entry.name === 'bff') && !process.env.JWT_SECRET) {
    say('JWT_SECRET is not set: the BFF signs with a random secret for this run');
  }

  let stopping = false;
  const launched: Launched[] = entries.map((entry, index) => {
    const prefix = prefixFor(entry.name, index);
    return launchProcess(entry, {
      opsPort: entry.opsPort,
      env: {
        ...sharedServer,
        // Its own database, or (unset) shop_<name> on the shared server.
        DATABASE_URL: process.env[databaseVariable(entry)],
        ...(entry.name === 'bff' ? { JWT_SECRET: jwtSecret } : {}),
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
            say('nothing left running');
            process.exit(1);
          }
        },
      },
    });
  });

  let firstSignalAt = 0;
  const stopAll = async (signal: NodeJS.Signals) => {
    if (stopping) {
      // npm passes on the terminal's Ctrl-C, so one keypress can arrive twice; only a later one means "now".
      if (Date.now() - firstSignalAt < 2000) return;
      say(`${signal} again: killing what is left`);
      await Promise.all(launched.map((child) => child.kill('SIGKILL')));
      process.exit(1);
    }
    stopping = true;
    firstSignalAt = Date.now();
    say(`${signal}: stopping every process (a second signal, 2 s or more later, kills them)`);
    // Each service bounds its own stop by SHUTDOWN_TIMEOUT_MS per phase; past three of those, it is killed.
    const graceMs = 3 * (Number(process.env.SHUTDOWN_TIMEOUT_MS) || 10_000);
    const exits = await Promise.all(launched.map((child) => child.stop(graceMs)));
    process.exit(exits.every((exit) => !exit || exit.code === 0 || exit.code === null) ? 0 : 1);
  };
  process.on('SIGINT', (signal) => void stopAll(signal));
  process.on('SIGTERM', (signal) => void stopAll(signal));
  // Should this script die of a bug, do not leave the processes behind.
  process.on('exit', () => {
    for (const child of launched) child.child?.kill('SIGKILL');
  });
}

function how(exit: Exit): string {
  return exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`;
}

function formatDelay(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${ms / 1000} s`;
}

await main();
