// What keeps a process from starting, said in one line with what to do:
// no NATS server, no PostgreSQL, a port already taken. `npm start` checks
// these before it starts anything (scripts/start.ts); a service started on
// its own (runService) says the same when its start fails.
import { connect as connectTcp } from 'node:net';

/** Where NATS_URL points: its servers as host and port (4222 when none is given). */
export function natsAddresses(natsUrl: string): { host: string; port: number }[] {
  return natsUrl
    .split(',')
    .map((part) => part.trim())
    .filter(Boolean)
    .map((part) => {
      const url = new URL(part);
      return { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(url.port) || 4222 };
    });
}

/** The server of a PostgreSQL URL as host and port. */
export function postgresAddress(databaseUrl: string): { host: string; port: number } {
  const url = new URL(databaseUrl);
  return { host: url.hostname.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1', port: Number(url.port) || 5432 };
}

/** True when something accepts a TCP connection at `host`:`port` within `timeoutMs`. */
export function answers(host: string, port: number, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connectTcp({ host, port });
    const done = (result: boolean) => {
      socket.destroy();
      resolve(result);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

export function noNats(natsUrl: string): string {
  return `no NATS server answers at ${natsUrl}: start one with \`nats-server -js\`, or set NATS_URL`;
}

export function noPostgres(host: string, port: number): string {
  return `no PostgreSQL server answers at ${host}:${port}: start one, or set PGHOST and PGPORT (or DATABASE_URL)`;
}

/** `variable` names the setting that chose the port; `change` says how to choose another. */
export function portTaken(port: number, variable: string, change = `set ${variable} to a free port`): string {
  return `port ${port} (${variable}) is taken: stop what listens there, or ${change}`;
}

/** None of NATS_URL's servers answers: the line that says so, else undefined. */
export async function natsProblem(natsUrl: string, timeoutMs = 2000): Promise<string | undefined> {
  let addresses: { host: string; port: number }[];
  try {
    addresses = natsAddresses(natsUrl);
  } catch {
    return `NATS_URL (${JSON.stringify(natsUrl)}) is not a comma-separated list of nats:// URLs: set it to one, e.g. nats://127.0.0.1:4222`;
  }
  const results = await Promise.all(addresses.map(({ host, port }) => answers(host, port, timeoutMs)));
  return results.some(Boolean) ? undefined : noNats(natsUrl);
}

/** The one line explaining a failed start, when it is one of the known causes; undefined otherwise. */
export function explainStartFailure(error: unknown, context: { databaseUrl: string; opsPort?: number | undefined }): string | undefined {
  const failure = error as { code?: string; port?: number; address?: string; syscall?: string; message?: string };
  if (failure.code === 'EADDRINUSE') {
    const port = failure.port ?? context.opsPort;
    return portTaken(port ?? 0, port === context.opsPort ? 'OPS_PORT' : 'port');
  }
  const database = postgresAddress(context.databaseUrl);
  // NATS is waited for, never refused at start: a refused connection there is PostgreSQL's (an AggregateError names no port).
  const unreachable = failure.code === 'ECONNREFUSED' || failure.code === 'ETIMEDOUT' || failure.code === 'EHOSTUNREACH';
  if (unreachable && (failure.port === undefined || failure.port === database.port)) {
    return noPostgres(database.host, database.port);
  }
  if (failure.code === 'ENOTFOUND' && failure.message?.includes(database.host)) return noPostgres(database.host, database.port);
  // PostgreSQL's own refusals: unknown user or wrong password.
  if (failure.code === '28P01' || failure.code === '28000') {
    return `PostgreSQL at ${database.host}:${database.port} refused the sign-in (${failure.message}): set PGUSER and PGPASSWORD (or DATABASE_URL)`;
  }
  return undefined;
}
