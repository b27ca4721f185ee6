// `npm start`: the whole shop on this machine, one child process per service
// (every services/<dir>/main.ts except the kit, and bff/main.ts when it
// exists), all run by the project's Node. Their output is interleaved line by
// line under the name of the process (pretty on a terminal). A process that
// exits on its own is started again after a growing pause; SIGINT or SIGTERM
// stops them all gracefully (SIGTERM to each, then wait).
//
//   npm start                      every service (and the BFF)
//   npm start -- customer product  only these (directory names)
//
// The environment passes through to every process: NATS_URL, LOG_LEVEL,
// ZIPKIN_URL, ... (the kit's defaults point at 127.0.0.1). DATABASE_URL is one
// service's own database, so it is not handed to all of them: its server and
// credentials become PGHOST/PGPORT/PGUSER/PGPASSWORD, and each service uses its
// own database shop_<service> on that server. `<DIR>_DATABASE_URL` (e.g.
// ORDER_DATABASE_URL) sets the database of one service. Without JWT_SECRET,
// the BFF gets a random one for this run (its tokens end with the run).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import pinoPretty from 'pino-pretty';

const ROOT = join(import.meta.dirname, '..');

/** A process that runs for less than this and exits counts as a failed start: the pause keeps growing. */
const STABLE_AFTER_MS = 30_000;
const FIRST_RESTART_DELAY_MS = 500;
const MAX_RESTART_DELAY_MS = 30_000;
/** The kit exits with EX_CONFIG (78) on a bad setting; starting it again cannot help. */
const EX_CONFIG = 78;

interface Program {
  /** Directory name, used as the prefix of its lines: `customer`, `order`, `bff`. */
  name: string;
  /** Entry file, relative to the project root. */
  entry: string;
}

function discoverPrograms(): Program[] {
  const servicesDir = join(ROOT, 'services');
  const programs: Program[] = readdirSync(servicesDir, { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && entry.name !== 'kit' && existsSync(join(servicesDir, entry.name, 'main.ts')))
    .map((entry) => ({ name: entry.name, entry: join('services', entry.name, 'main.ts') }))
    .sort((a, b) => a.name.localeCompare(b.name));
  if (existsSync(join(ROOT, 'bff', 'main.ts'))) programs.push({ name: 'bff', entry: join('bff', 'main.ts') });
  return programs;
}

// ---------------------------------------------------------------------------
// Environment

let sharedServer: Record<string, string> = {};
/** One secret per run, so that a restarted BFF still accepts the tokens it issued. */
const runJwtSecret = randomBytes(32).toString('base64url');

function childEnvironment(program: Program): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...sharedServer };
  delete env.DATABASE_URL;
  const own = process.env[`${program.name.toUpperCase()}_DATABASE_URL`];
  if (own) env.DATABASE_URL = own;
  if (program.name === 'bff' && !env.JWT_SECRET) env.JWT_SECRET = runJwtSecret;
  return env;
}

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

// ---------------------------------------------------------------------------
// Output: every line under the name of the process that wrote it

const pretty = Boolean(process.stdout.isTTY) && process.env.LOG_FORMAT !== 'json';
const COLORS = [36, 33, 32, 35, 34, 96, 93, 92, 95, 94];
let nameWidth = 5;

const prettify = pretty
  ? pinoPretty.prettyFactory({
      colorize: true,
      translateTime: 'SYS:HH:MM:ss.l',
      // The prefix already names the service.
      ignore: 'pid,hostname,service',
      // Lines of several services interleave: keep each record on one line.
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
  stream.write(text.split('\n').map((part) => prefix + part).join('\n') + '\n');
}

const ownPrefix = (): string => prefixFor('start', COLORS.length - 1);
function say(message: string): void {
  emit(ownPrefix(), pretty ? `\u001b[1m${message}\u001b[0m` : message, process.stdout);
}

// ---------------------------------------------------------------------------
// Supervision

interface Supervised {
  program: Program;
  prefix: string;
  child: ChildProcess | undefined;
  startedAt: number;
  delayMs: number;
  restartTimer: NodeJS.Timeout | undefined;
  /** Left stopped: a configuration error, or the whole shop is stopping. */
  done: boolean;
  lastCode: number | null;
}

let stopping = false;
let firstSignalAt = 0;
let killTimer: NodeJS.Timeout | undefined;
const supervised: Supervised[] = [];

function launch(entry: Supervised): void {
  entry.restartTimer = undefined;
  entry.startedAt = Date.now();
  // Its own process group: a Ctrl-C on the terminal reaches only this script,
  // which then sends each child exactly one SIGTERM (the kit treats a second
  // signal as "exit now").
  const child = spawn(process.execPath, [entry.program.entry], {
    cwd: ROOT,
    env: childEnvironment(entry.program),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  entry.child = child;
  createInterface({ input: child.stdout! }).on('line', (line) => emit(entry.prefix, line, process.stdout));
  createInterface({ input: child.stderr! }).on('line', (line) => emit(entry.prefix, line, process.stderr));
  child.once('error', (error) => say(`${entry.program.name}: ${error.message}`));
  child.once('exit', (code, signal) => exited(entry, code, signal));
}

function exited(entry: Supervised, code: number | null, signal: NodeJS.Signals | null): void {
  entry.child = undefined;
  entry.lastCode = code;
  const how = signal ? `signal ${signal}` : `code ${code}`;
  if (stopping) {
    entry.done = true;
    say(`${entry.program.name} stopped (${how})`);
    finishIfAllStopped();
    return;
  }
  if (code === EX_CONFIG) {
    entry.done = true;
    say(`${entry.program.name} exited with a configuration error (${how}); fix its settings and run npm start again`);
    if (supervised.every((other) => other.done)) {
      say('nothing left running');
      process.exit(1);
    }
    return;
  }
  if (Date.now() - entry.startedAt >= STABLE_AFTER_MS) entry.delayMs = FIRST_RESTART_DELAY_MS;
  const delay = entry.delayMs;
  entry.delayMs = Math.min(MAX_RESTART_DELAY_MS, entry.delayMs * 2);
  say(`${entry.program.name} exited (${how}); starting it again in ${formatDelay(delay)}`);
  entry.restartTimer = setTimeout(() => launch(entry), delay);
}

function formatDelay(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${ms / 1000} s`;
}

function stopAll(signal: NodeJS.Signals): void {
  if (stopping) {
    // npm passes on the terminal's Ctrl-C, so one keypress can arrive twice; only a later one means "now".
    if (Date.now() - firstSignalAt < 2000) return;
    say(`${signal} again: killing what is left`);
    killRemaining();
    process.exit(1);
  }
  stopping = true;
  firstSignalAt = Date.now();
  say(`${signal}: stopping every service (a second signal, 2 s or more later, kills them)`);
  for (const entry of supervised) {
    if (entry.restartTimer) clearTimeout(entry.restartTimer);
    entry.restartTimer = undefined;
    if (entry.child) entry.child.kill('SIGTERM');
    else entry.done = true;
  }
  // Each service bounds its own stop by SHUTDOWN_TIMEOUT_MS per phase; past three of those, give up on it.
  const graceMs = 3 * (Number(process.env.SHUTDOWN_TIMEOUT_MS) || 10_000);
  killTimer = setTimeout(() => {
    say(`still running after ${formatDelay(graceMs)}: killing what is left`);
    killRemaining();
    process.exit(1);
  }, graceMs);
  killTimer.unref();
  finishIfAllStopped();
}

function killRemaining(): void {
  for (const entry of supervised) entry.child?.kill('SIGKILL');
}

function finishIfAllStopped(): void {
  if (!stopping || supervised.some((entry) => !entry.done)) return;
  clearTimeout(killTimer);
  const clean = supervised.every((entry) => entry.lastCode === 0 || entry.lastCode === null);
  process.exit(clean ? 0 : 1);
}

// ---------------------------------------------------------------------------

function main(): void {
  const available = discoverPrograms();
  const wanted = process.argv.slice(2);
  const unknown = wanted.filter((name) => !available.some((program) => program.name === name));
  if (unknown.length > 0) {
    process.stderr.write(
      `unknown service ${unknown.join(', ')}; there are: ${available.map((program) => program.name).join(', ')}\n`,
    );
    process.exit(2);
  }
  const programs = wanted.length > 0 ? available.filter((program) => wanted.includes(program.name)) : available;
  if (programs.length === 0) {
    process.stderr.write('no services/*/main.ts to start\n');
    process.exit(1);
  }
  try {
    if (process.env.DATABASE_URL) sharedServer = serverSettingsOf(process.env.DATABASE_URL);
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n`);
    process.exit(2);
  }
  nameWidth = Math.max(nameWidth, ...programs.map((program) => program.name.length));
  for (const [index, program] of programs.entries()) {
    supervised.push({
      program,
      prefix: prefixFor(program.name, index),
      child: undefined,
      startedAt: 0,
      delayMs: FIRST_RESTART_DELAY_MS,
      restartTimer: undefined,
      done: false,
      lastCode: null,
    });
  }
  process.on('SIGINT', stopAll);
  process.on('SIGTERM', stopAll);
  // Should this script die of a bug, do not leave the services behind.
  process.on('exit', killRemaining);

  const nats = process.env.NATS_URL ?? 'nats://127.0.0.1:4222 (default)';
  const pgHost = sharedServer.PGHOST ?? process.env.PGHOST;
  const pgPort = sharedServer.PGPORT ?? process.env.PGPORT;
  const database = pgHost || pgPort ? `${pgHost ?? '127.0.0.1'}:${pgPort ?? '5432'}` : '127.0.0.1:5432 (default)';
  say(`starting ${programs.map((program) => program.name).join(', ')} with node ${process.version}`);
  say(`NATS ${nats}; PostgreSQL ${database}, one database per service`);
  if (programs.some((program) => program.name === 'bff') && !process.env.JWT_SECRET) {
    say('JWT_SECRET is not set: the BFF signs with a random secret for this run');
  }
  for (const entry of supervised) launch(entry);
}

main();
