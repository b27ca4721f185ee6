// What keeps the shop from starting is said in one line with what to do, not
// in silence nor in a stack trace: `npm start`'s script (scripts/start.ts)
// and one service's main.ts run as real child processes against a port where
// nothing listens and against a port already taken, and their output is read.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { registry } from '../subjects/index.ts';
import { launch, launchProcess, type Launched } from '../scripts/launcher.ts';
import { dropTestDatabases, startNats, testDatabaseUrl, waitFor, type TestNats } from './harness.ts';

let nats: TestNats;
const servers: Server[] = [];

before(async () => {
  nats = await startNats();
});

after(async () => {
  for (const server of servers) await new Promise((resolve) => server.close(resolve));
  await nats?.cleanup();
  await dropTestDatabases();
});

/** A port something listens on (taken), kept until the end. */
async function takenPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  return (server.address() as AddressInfo).port;
}

/** A port nothing listens on. */
async function silentPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Runs `started` to its end (killed after `timeoutMs`), returning its exit code and every line it wrote. */
async function outcome(started: (onLine: (line: string) => void) => Launched, timeoutMs = 20_000) {
  const lines: string[] = [];
  const child = started((line) => lines.push(line));
  const timer = setTimeout(() => void child.kill('SIGKILL'), timeoutMs);
  const exit = await child.exited;
  clearTimeout(timer);
  return { code: exit.code, lines, text: lines.join('\n') };
}

const noStackTrace = (text: string) => assert.doesNotMatch(text, /^\s+at /m, `a stack trace:\n${text}`);

test('npm start with no NATS server answering says so in one line and ends, starting nothing', async () => {
  const port = await silentPort();
  const run = await outcome((onLine) =>
    launch({ name: 'start', script: 'scripts/start.ts', env: { NATS_URL: `nats://127.0.0.1:${port}`, LOG_FORMAT: 'json' }, onLine }),
  );
  assert.equal(run.code, 1, run.text);
  const line = run.lines.find((candidate) => candidate.includes('no NATS server answers'));
  assert.ok(line, run.text);
  assert.match(
    line,
    new RegExp(`no NATS server answers at nats://127\\.0\\.0\\.1:${port}: start one with \`nats-server -js\`, or set NATS_URL$`),
  );
  assert.doesNotMatch(run.text, /service started|starting customers/);
  noStackTrace(run.text);
});

test('npm start with BFF_PORT and an operations port taken, and PostgreSQL absent, says each in one line', async () => {
  const taken = await takenPort();
  const noDatabase = await silentPort();
  // The registry's port of the notification service: held here (or by whoever holds it now).
  const opsPort = registry.notifications.opsPort;
  const holder = createServer();
  await new Promise<void>((resolve) => holder.once('error', () => resolve()).listen(opsPort, '127.0.0.1', resolve));
  if (holder.listening) servers.push(holder);
  const run = await outcome((onLine) =>
    launch({
      name: 'start',
      script: 'scripts/start.ts',
      env: {
        NATS_URL: nats.url,
        BFF_PORT: String(taken),
        BFF_HOST: '127.0.0.1',
        PGHOST: '127.0.0.1',
        PGPORT: String(noDatabase),
        DATABASE_URL: undefined,
      },
      onLine,
    }),
  );
  assert.equal(run.code, 1, run.text);
  assert.ok(
    run.lines.some((line) => line.endsWith(`port ${taken} (BFF_PORT) is taken: stop what listens there, or set BFF_PORT to a free port`)),
    run.text,
  );
  assert.ok(
    run.lines.some((line) =>
      line.endsWith(`no PostgreSQL server answers at 127.0.0.1:${noDatabase}: start one, or set PGHOST and PGPORT (or DATABASE_URL)`),
    ),
    run.text,
  );
  assert.ok(
    run.lines.some((line) =>
      line.endsWith(
        `port ${opsPort} (OPS_PORT of notifications) is taken: stop what listens there, or give notifications another opsPort in subjects/services.ts`,
      ),
    ),
    run.text,
  );
  assert.ok(!run.lines.some((line) => line.includes('NATS')), 'NATS answers: nothing said about it');
  noStackTrace(run.text);
});

test('npm start names an unknown process and lists those of the registry', async () => {
  const run = await outcome((onLine) => launch({ name: 'start', script: 'scripts/start.ts', args: ['customers', 'frobnicate'], onLine }));
  assert.equal(run.code, 2, run.text);
  assert.equal(run.text, 'unknown process frobnicate; there are: customers, products, orders, payments, notifications, bff');
});

test('a service whose ops port is taken ends with one line saying so, and exit 1', async () => {
  const taken = await takenPort();
  const run = await outcome((onLine) =>
    launchProcess(registry.customers, {
      opsPort: taken,
      databaseUrl: testDatabaseUrl('start'),
      env: { NATS_URL: nats.url, LOG_FORMAT: 'json' },
      onLine,
    }),
  );
  assert.equal(run.code, 1, run.text);
  assert.ok(run.lines.includes(`port ${taken} (OPS_PORT) is taken: stop what listens there, or set OPS_PORT to a free port`), run.text);
  noStackTrace(run.text);
});

test('a service with no PostgreSQL ends with one line saying so; with no NATS it says so and waits', async () => {
  const noDatabase = await silentPort();
  const refused = await outcome((onLine) =>
    launchProcess(registry.products, {
      env: { NATS_URL: nats.url, DATABASE_URL: undefined, PGHOST: '127.0.0.1', PGPORT: String(noDatabase), LOG_FORMAT: 'json' },
      onLine,
    }),
  );
  assert.equal(refused.code, 1, refused.text);
  assert.ok(
    refused.lines.includes(
      `no PostgreSQL server answers at 127.0.0.1:${noDatabase}: start one, or set PGHOST and PGPORT (or DATABASE_URL)`,
    ),
    refused.text,
  );
  noStackTrace(refused.text);

  const noNats = await silentPort();
  const lines: string[] = [];
  const waiting = launchProcess(registry.products, {
    databaseUrl: testDatabaseUrl('start'),
    env: { NATS_URL: `nats://127.0.0.1:${noNats}`, LOG_FORMAT: 'json' },
    onLine: (line) => lines.push(line),
  });
  try {
    const warned = await waitFor(() => lines.find((line) => line.includes('no NATS server answers')), {
      timeoutMs: 15_000,
      what: 'the warning',
    });
    assert.match(
      warned,
      new RegExp(
        `no NATS server answers at nats://127\\.0\\.0\\.1:${noNats}: start one with \`nats-server -js\`, or set NATS_URL; waiting for it`,
      ),
    );
    assert.ok(waiting.running, 'it waits for NATS');
  } finally {
    await waiting.stop(2000);
  }
});
