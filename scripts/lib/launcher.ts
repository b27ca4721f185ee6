// The one way the shop's processes are started as child processes: by
// `npm start` (scripts/start.ts), the benchmarks (scripts/lib/shop.ts) and the
// chaos tests (test/chaos/shop.ts, test/harness.ts).
//
// launch() runs a script with the project's Node and hands every line of its
// output to the caller; stop() ends it gracefully (SIGTERM, a bounded wait,
// then SIGKILL); kill(), pause() and resume() are for fault injection; with
// `restart`, a process that exits on its own is started again after a
// growing pause (never after a configuration error, exit 78).
//
// launchProcess() starts a process of the registry (subjects/services.ts)
// with the environment the registry gives it: OTEL_SERVICE_NAME, its NATS
// user and password (when NATS_<USER>_PASSWORD is set), and, when asked, its
// operations port and its database.
import { spawn, type ChildProcess } from 'node:child_process';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { PROCESSES, entryScript, registry, type ProcessEntry } from '../../subjects/services.ts';

export const ROOT = join(import.meta.dirname, '..', '..');

/** The kit exits with EX_CONFIG (78) on a bad setting: starting it again cannot help. */
export const EX_CONFIG = 78;
/** A process that ran at least this long before exiting starts again after the first, short pause. */
const STABLE_AFTER_MS = 30_000;
const FIRST_RESTART_DELAY_MS = 500;
const MAX_RESTART_DELAY_MS = 30_000;

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface LaunchOptions {
  /** How the process is named in lines about it. */
  name: string;
  /** Entry script, relative to the project root (or absolute), run by the project's Node. */
  script?: string;
  /** An executable to run instead of a script (e.g. nats-server), with `args`. */
  command?: string;
  /** Added to this process's environment; an undefined value removes the variable. */
  env?: Record<string, string | undefined>;
  /** Arguments of the script. */
  args?: readonly string[];
  /** Options for Node itself, before the script (e.g. --cpu-prof). */
  nodeArgs?: readonly string[];
  /** Every line the process writes, as it comes. */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  /** Every exit of the process (and of each restart). */
  onExit?: (exit: Exit) => void;
  /** Its own process group: a Ctrl-C on the terminal then reaches only the launcher, which stops each child once. */
  detached?: boolean;
  /** Start it again when it exits on its own; `onRestart` hears each decision. */
  restart?: { onRestart?: (exit: Exit, delayMs: number) => void; onGiveUp?: (exit: Exit) => void };
}

export class Launched {
  readonly name: string;
  readonly #options: LaunchOptions;
  #child: ChildProcess | undefined;
  #exited: Promise<Exit> = Promise.resolve({ code: null, signal: null });
  #startedAt = 0;
  #delayMs = FIRST_RESTART_DELAY_MS;
  #restartTimer: NodeJS.Timeout | undefined;
  /** Told to stop (or killed on purpose): no restart. */
  #stopping = false;
  #lastExit: Exit | undefined;

  constructor(options: LaunchOptions) {
    this.name = options.name;
    this.#options = options;
    this.#start();
  }

  /** The running child, if any. */
  get child(): ChildProcess | undefined {
    return this.#child;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  get running(): boolean {
    return this.#child !== undefined;
  }

  /** How the process last ended, once it has. */
  get lastExit(): Exit | undefined {
    return this.#lastExit;
  }

  /** Resolves when the current child exits. */
  get exited(): Promise<Exit> {
    return this.#exited;
  }

  /** SIGTERM, then SIGKILL if it is still running after `graceMs`; no restart. Resolves with its exit. */
  async stop(graceMs = 10_000): Promise<Exit | undefined> {
    this.#stopping = true;
    clearTimeout(this.#restartTimer);
    const child = this.#child;
    if (!child) return this.#lastExit;
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    try {
      return await this.#exited;
    } finally {
      clearTimeout(killer);
    }
  }

  /** Sends `signal` (SIGKILL by default) and waits for the exit; no restart. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<Exit | undefined> {
    this.#stopping = true;
    clearTimeout(this.#restartTimer);
    if (!this.#child) return this.#lastExit;
    this.#child.kill(signal);
    return this.#exited;
  }

  /** Freezes the process (SIGSTOP): it holds its connections and answers nothing. */
  pause(): void {
    this.#child?.kill('SIGSTOP');
  }

  resume(): void {
    this.#child?.kill('SIGCONT');
  }

  #start(): void {
    this.#restartTimer = undefined;
    this.#startedAt = Date.now();
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const [name, value] of Object.entries(this.#options.env ?? {})) {
      if (value === undefined) delete env[name];
      else env[name] = value;
    }
    const { command, script, nodeArgs = [], args = [] } = this.#options;
    const child = spawn(command ?? process.execPath, command ? args : [...nodeArgs, resolve(ROOT, script ?? ''), ...args], {
      cwd: ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: this.#options.detached ?? false,
    });
    this.#child = child;
    const onLine = this.#options.onLine;
    if (onLine) {
      createInterface({ input: child.stdout! }).on('line', (line) => onLine(line, 'stdout'));
      createInterface({ input: child.stderr! }).on('line', (line) => onLine(line, 'stderr'));
    } else {
      child.stdout!.resume();
      child.stderr!.resume();
    }
    this.#exited = new Promise<Exit>((resolve) => {
      child.once('error', (error) => {
        // Spawning failed (no such executable): reported as an exit, so nobody waits forever.
        onLine?.(`could not start: ${error.message}`, 'stderr');
        if (child.exitCode === null && child.signalCode === null && child.pid === undefined)
          resolve(this.#ended({ code: 1, signal: null }));
      });
      child.once('exit', (code, signal) => resolve(this.#ended({ code, signal })));
    });
  }

  #ended(exit: Exit): Exit {
    this.#child = undefined;
    this.#lastExit = exit;
    this.#options.onExit?.(exit);
    const restart = this.#options.restart;
    if (!restart || this.#stopping) return exit;
    if (exit.code === EX_CONFIG) {
      restart.onGiveUp?.(exit);
      return exit;
    }
    if (Date.now() - this.#startedAt >= STABLE_AFTER_MS) this.#delayMs = FIRST_RESTART_DELAY_MS;
    const delay = this.#delayMs;
    this.#delayMs = Math.min(MAX_RESTART_DELAY_MS, this.#delayMs * 2);
    restart.onRestart?.(exit, delay);
    this.#restartTimer = setTimeout(() => this.#start(), delay);
    return exit;
  }
}

/** Starts `options.script` as a child process with the project's Node (or `options.command`). */
export function launch(options: LaunchOptions): Launched {
  return new Launched(options);
}

export interface ProcessEnvironmentOptions {
  /** Its operations port (e.g. the registry's, under npm start); unset: as the environment says. */
  opsPort?: number | undefined;
  /** Its database (services only). */
  databaseUrl?: string | undefined;
  /** Where NATS_<USER>_PASSWORD is looked up; process.env by default. */
  env?: NodeJS.ProcessEnv;
}

/** The environment the registry gives a process: its name for telemetry, its NATS user, its ports and database as asked. */
export function processEnvironment(entry: ProcessEntry, options: ProcessEnvironmentOptions = {}): Record<string, string> {
  const env = options.env ?? process.env;
  const result: Record<string, string> = { OTEL_SERVICE_NAME: entry.name };
  const password = env[natsPasswordVariable(entry)];
  if (password && !env.NATS_USER) Object.assign(result, { NATS_USER: entry.natsUser, NATS_PASSWORD: password });
  if (options.opsPort !== undefined) result.OPS_PORT = String(options.opsPort);
  if (options.databaseUrl) result.DATABASE_URL = options.databaseUrl;
  return result;
}

/** The users of nats.conf: one per process of the registry, and `admin` for operators. */
export const NATS_USERS: readonly string[] = [...PROCESSES.map((name) => registry[name].natsUser), 'admin'];

/** The variable holding a NATS user's password, which nats.conf reads too. */
export function natsUserPasswordVariable(user: string): string {
  return `NATS_${user.toUpperCase()}_PASSWORD`;
}

/** The variable holding a process's NATS password. */
export function natsPasswordVariable(entry: ProcessEntry): string {
  return natsUserPasswordVariable(entry.natsUser);
}

/** Starts a process of the registry: its entry script, with processEnvironment() under `options.env`. */
export function launchProcess(
  entry: ProcessEntry,
  options: Omit<LaunchOptions, 'name' | 'script'> & ProcessEnvironmentOptions & { name?: string },
): Launched {
  const { opsPort, databaseUrl, env, name, nodeArgs = [], ...rest } = options;
  return launch({
    ...rest,
    nodeArgs: [...(entry.nodeArgs ?? []), ...nodeArgs],
    name: name ?? entry.name,
    script: entryScript(entry),
    env: { ...processEnvironment(entry, { opsPort, databaseUrl }), ...env },
  });
}
