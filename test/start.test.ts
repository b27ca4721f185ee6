// npm start as a newcomer meets it, run as a real child process whose output
// is read: with nothing answering on the ports it is given, it runs NATS,
// PostgreSQL and an email catcher itself, and an order placed through GraphQL
// reaches CONFIRMED with its email shown at /dev/mail; Ctrl-C stops it all and
// a second run picks up the data. What it cannot fix (a server elsewhere that
// does not answer, a port already taken) it says in one line with what to do,
// not in silence nor in a stack trace; one service's main.ts does the same.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROCESSES, databaseVariable, opsPortVariable, registry } from '../subjects/index.ts';
import { answers } from '../services/kit/startup.ts';
import { NATS_USERS, launch, launchProcess, natsUserPasswordVariable, type Launched } from '../scripts/lib/launcher.ts';
import { NO_NATS_SERVER, ROOT_POSTGRES_HOME, embeddedPostgresDir, findNatsServer } from '../scripts/local-servers.ts';
import { dropTestDatabases, freePort, startNats, testDatabaseUrl, waitFor, type TestNats } from './harness.ts';

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

test('npm start with no NATS server answering at a remote NATS_URL says so in one line and ends, starting nothing', async () => {
  // 192.0.2.0/24 is for documentation: nothing answers there, and it is not this machine, so npm start runs no server of its own.
  const run = await outcome((onLine) =>
    launch({ name: 'start', script: 'scripts/start.ts', env: { NATS_URL: 'nats://192.0.2.1:4222', LOG_FORMAT: 'json' }, onLine }),
  );
  assert.equal(run.code, 1, run.text);
  const line = run.lines.find((candidate) => candidate.includes('no NATS server answers'));
  assert.ok(line, run.text);
  assert.match(line, /no NATS server answers at nats:\/\/192\.0\.2\.1:4222: start one with `nats-server -js`, or set NATS_URL$/);
  assert.doesNotMatch(run.text, /service started|starting customers|starting \//);
  noStackTrace(run.text);
});

test('with no nats-server on NATS_SERVER_BIN, PATH or the usual places, npm start says how to install one', async () => {
  const folder = await mkdtemp(join(tmpdir(), 'shop-bin-'));
  try {
    const fake = join(folder, 'nats-server');
    await writeFile(fake, '#!/bin/sh\n', { mode: 0o755 });
    assert.equal(findNatsServer({ PATH: folder }, []), fake, 'found on PATH');
    assert.equal(findNatsServer({ NATS_SERVER_BIN: fake, PATH: '' }, []), fake, 'named by NATS_SERVER_BIN');
    assert.equal(findNatsServer({ PATH: '' }, [folder]), fake, 'found in a usual place');
    assert.equal(findNatsServer({ NATS_SERVER_BIN: join(folder, 'absent'), PATH: join(folder, 'none') }, []), undefined);
  } finally {
    await rm(folder, { recursive: true, force: true });
  }
  assert.match(NO_NATS_SERVER, /install it \(`apt-get install nats-server`, `brew install nats-server`/);
});

test('npm start with BFF_PORT and an operations port taken, and PostgreSQL absent, says each in one line', async () => {
  const taken = await takenPort();
  const noDatabase = await freePort();
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
        // Not this machine: npm start runs no PostgreSQL of its own there.
        PGHOST: '192.0.2.1',
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
      line.endsWith(`no PostgreSQL server answers at 192.0.2.1:${noDatabase}: start one, or set PGHOST and PGPORT (or DATABASE_URL)`),
    ),
    run.text,
  );
  assert.ok(
    run.lines.some((line) =>
      line.endsWith(
        `port ${opsPort} (OPS_PORT of notifications) is taken: stop what listens there, or set NOTIFICATION_OPS_PORT, or give notifications another opsPort in subjects/services.ts`,
      ),
    ),
    run.text,
  );
  assert.ok(!run.lines.some((line) => line.includes('NATS')), 'NATS answers: nothing said about it');
  noStackTrace(run.text);
});

test('npm start refuses one port given to two processes, before starting anything', async () => {
  const port = await freePort();
  const run = await outcome((onLine) =>
    launch({
      name: 'start',
      script: 'scripts/start.ts',
      env: { BFF_PORT: String(port), [opsPortVariable(registry.orders)]: String(port), LOG_FORMAT: 'json' },
      onLine,
    }),
  );
  assert.equal(run.code, 1, run.text);
  assert.ok(
    run.lines.some((line) => line.endsWith(`port ${port} is given to ORDER_OPS_PORT and BFF_PORT: give each its own`)),
    run.text,
  );
  assert.doesNotMatch(run.text, /starting/);
});

test('npm start names an unknown process and lists those of the registry', async () => {
  const run = await outcome((onLine) => launch({ name: 'start', script: 'scripts/start.ts', args: ['customers', 'frobnicate'], onLine }));
  assert.equal(run.code, 2, run.text);
  assert.equal(run.text, `unknown process frobnicate; there are: ${PROCESSES.join(', ')}`);
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
  const noDatabase = await freePort();
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

  const noNats = await freePort();
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

test('as root, PostgreSQL asked to keep its data past a folder the user postgres cannot pass says which, and what to do', {
  skip: process.getuid?.() !== 0 && 'only root runs PostgreSQL as another user',
}, async () => {
  // npm start itself moves the data out of such a folder (below): this is the last line of defence.
  const closed = await mkdtemp(join(tmpdir(), 'shop-closed-'));
  const port = await freePort();
  try {
    const run = await outcome((onLine) =>
      launch({
        name: 'postgres',
        script: 'scripts/embedded-postgres.ts',
        args: [join(closed, 'data', 'postgres'), String(port)],
        env: { PGPASSWORD: 'unused' },
        onLine,
      }),
    );
    assert.equal(run.code, 1, run.text);
    assert.equal(
      run.text,
      `PostgreSQL runs as the user postgres, who cannot pass through ${closed} to ${join(closed, 'data', 'postgres')}: set DATA_DIR to a folder whose every parent lets others through (e.g. DATA_DIR=/srv/shop), open that one folder to them (chmod o+x ${closed}), or run npm start as a user other than root`,
    );
    assert.equal((await stat(closed)).mode & 0o777, 0o700, 'left as it was');
  } finally {
    await rm(closed, { recursive: true, force: true });
  }
});

test("as root, a DATA_DIR under folders others may pass keeps PostgreSQL's data, opened just enough (o+x) for postgres to pass", {
  skip: process.getuid?.() !== 0 && 'only root runs PostgreSQL as another user',
}, async () => {
  // As a fresh clone in /tmp or /srv: the folders above are open; nats-server made DATA_DIR 0750 before PostgreSQL started.
  const open = await mkdtemp(join(tmpdir(), 'shop-open-'));
  try {
    await chmod(open, 0o755);
    const dataDir = join(open, 'data');
    await mkdir(dataDir);
    await chmod(dataDir, 0o750);
    assert.deepEqual(await embeddedPostgresDir(dataDir), { dir: join(dataDir, 'postgres') });
    assert.equal((await stat(dataDir)).mode & 0o777, 0o751, 'others may pass through, not list it');
  } finally {
    await rm(open, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------
// The newcomer's path: nothing answers, npm start runs what is missing

/**
 * npm start's DATA_DIR, not made here: a folder in one that only its owner
 * may enter, as a project under /root is. As root, PostgreSQL runs as the
 * user postgres, who cannot pass through it, so its data goes elsewhere;
 * `postgresDir` is where npm start must put it, `cleanup` removes both.
 */
async function dataFolder() {
  const home = await mkdtemp(join(tmpdir(), 'shop-start-'));
  const dataDir = join(home, 'data');
  const asRoot = process.getuid?.() === 0;
  const postgresDir = asRoot ? join(ROOT_POSTGRES_HOME, dataDir, 'postgres') : join(dataDir, 'postgres');
  const cleanup = async () => {
    await rm(home, { recursive: true, force: true });
    if (asRoot) await rm(join(ROOT_POSTGRES_HOME, home), { recursive: true, force: true });
  };
  return { home, dataDir, postgresDir, asRoot, cleanup };
}

/** Nothing answers on any of these at the start: each a free port, as npm start is told them. */
async function freePorts() {
  const ports = { nats: await freePort(), postgres: await freePort(), smtp: await freePort(), bff: await freePort() };
  const ops = Object.fromEntries(await Promise.all(PROCESSES.map(async (name) => [name, await freePort()] as const)));
  return { ...ports, ops };
}

function startShop(dataDir: string, ports: Awaited<ReturnType<typeof freePorts>>, lines: string[]): Launched {
  const env: Record<string, string | undefined> = {
    DATA_DIR: dataDir,
    NATS_URL: `nats://127.0.0.1:${ports.nats}`,
    PGHOST: '127.0.0.1',
    PGPORT: String(ports.postgres),
    SMTP_HOST: '127.0.0.1',
    SMTP_PORT: String(ports.smtp),
    BFF_PORT: String(ports.bff),
    BFF_HOST: '127.0.0.1',
    ADMIN_EMAILS: ADMIN,
    LOG_FORMAT: 'json',
    LOG_LEVEL: 'warn',
    // Whatever this test runs under: npm start makes its own.
    DATABASE_URL: undefined,
    PGUSER: undefined,
    PGPASSWORD: undefined,
    JWT_SECRET: undefined,
    GRAPHQL_DEV: undefined,
    NATS_USER: undefined,
    NATS_PASSWORD: undefined,
  };
  for (const name of PROCESSES) {
    env[opsPortVariable(registry[name])] = String(ports.ops[name]);
    env[databaseVariable(registry[name])] = undefined;
  }
  for (const user of NATS_USERS) env[natsUserPasswordVariable(user)] = undefined;
  return launch({ name: 'start', script: 'scripts/start.ts', env, onLine: (line) => lines.push(line) });
}

async function whenReady(shop: Launched, lines: string[]): Promise<void> {
  await waitFor(
    () => {
      if (!shop.running) throw new Error(`npm start exited (${JSON.stringify(shop.lastExit)}):\n${lines.join('\n')}`);
      return lines.some((line) => line.includes('the shop is ready'));
    },
    { timeoutMs: 180_000, intervalMs: 200, what: 'npm start to say the shop is ready' },
  ).catch((error: Error) => {
    throw new Error(`${error.message}\n${lines.slice(-40).join('\n')}`);
  });
}

/** Ctrl-C as a terminal sends it; resolves with the exit code once everything has stopped. */
async function interrupt(shop: Launched): Promise<number | null> {
  shop.child?.kill('SIGINT');
  const timer = setTimeout(() => void shop.kill('SIGKILL'), 90_000);
  const exit = await shop.exited;
  clearTimeout(timer);
  return exit.code;
}

const ADMIN = 'admin@start.test';

test('npm start with nothing answering runs NATS, PostgreSQL and an email catcher itself: an order reaches CONFIRMED, its email shows at /dev/mail, Ctrl-C stops it all, a second run reuses the data', async () => {
  const { home, dataDir, postgresDir, asRoot, cleanup } = await dataFolder();
  const ports = await freePorts();
  const lines: string[] = [];
  let shop = startShop(dataDir, ports, lines);
  try {
    await whenReady(shop, lines);
    const text = lines.join('\n');
    assert.match(text, new RegExp(`starting .*nats-server with JetStream, its store in ${dataDir}/nats`));
    assert.ok(text.includes(`starting PostgreSQL from embedded-postgres, its data in ${postgresDir}`), text);
    if (asRoot) {
      assert.ok(text.includes(`it runs as the user postgres, who cannot pass through ${home} to ${dataDir}`), text);
      assert.equal((await stat(home)).mode & 0o777, 0o700, 'the closed folder is left closed');
      assert.equal((await stat(postgresDir)).mode & 0o777, 0o700, "PostgreSQL's data is for postgres alone");
    }
    assert.match(text, /first run: initialising/);
    assert.match(text, new RegExp(`an email catcher at 127\\.0\\.0\\.1:${ports.smtp}`));
    const site = `http://localhost:${ports.bff}`;
    for (const url of [`${site}/`, `${site}/graphql`, `${site}/graphiql`, `${site}/dev/mail`]) assert.ok(text.includes(url), url);
    for (const name of PROCESSES) {
      assert.ok(text.includes(`${name} http://127.0.0.1:${ports.ops[name]}/metrics`), `${name}'s operations port is printed`);
      const ready = await fetch(`http://127.0.0.1:${ports.ops[name]}/health/ready`);
      assert.equal(ready.status, 200, `${name} is ready on its own operations port`);
    }

    const api = `http://127.0.0.1:${ports.bff}`;
    const gql = async (query: string, variables: Record<string, unknown> = {}, token?: string) => {
      const response = await fetch(`${api}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify({ query, variables }),
      });
      const body = (await response.json()) as { data?: any; errors?: unknown[] };
      assert.equal(body.errors, undefined, JSON.stringify(body.errors));
      return body.data;
    };
    // GraphiQL and introspection are on under npm start.
    assert.equal((await gql('{ __schema { queryType { name } } }')).__schema.queryType.name, 'Query');
    assert.equal((await fetch(`${api}/graphiql`)).status, 200);

    const REGISTER = 'mutation($e: String!, $n: String!, $p: String!) { register(email: $e, name: $n, password: $p) { token } }';
    const admin = (await gql(REGISTER, { e: ADMIN, n: 'Admin', p: 'correct horse' })).register.token;
    const product = (
      await gql(
        'mutation($i: CreateProductInput!) { createProduct(input: $i) { id } }',
        { i: { sku: 'START-1', name: 'Teapot', price: { amount: 2500, currency: 'EUR' }, initialStock: 10 } },
        admin,
      )
    ).createProduct.id;
    const customer = (await gql(REGISTER, { e: 'ada@start.test', n: 'Ada', p: 'correct horse' })).register.token;
    const placed = (
      await gql(
        'mutation($l: [OrderLineInput!]!) { placeOrder(lines: $l, paymentToken: "tok_visa") { id } }',
        { l: [{ productId: product, quantity: 2 }] },
        customer,
      )
    ).placeOrder.id as string;
    const ORDER = 'query($id: ID!) { order(id: $id) { status } }';
    await waitFor(async () => (await gql(ORDER, { id: placed }, customer)).order.status === 'CONFIRMED', {
      timeoutMs: 60_000,
      intervalMs: 200,
      what: 'the order to be CONFIRMED',
    });

    // Its email, caught: said by npm start, listed at /dev/mail.json and shown at /dev/mail.
    const confirmed = await waitFor(
      async () => {
        const mails = (await (await fetch(`${api}/dev/mail.json`)).json()) as { to: string; subject: string; text: string }[];
        return mails.find((mail) => mail.to.includes('ada@start.test') && /is confirmed/.test(mail.subject));
      },
      { timeoutMs: 60_000, intervalMs: 200, what: 'the confirmation email at /dev/mail.json' },
    );
    assert.match(confirmed.text, /Ada/);
    const page = await (await fetch(`${api}/dev/mail`)).text();
    assert.ok(page.includes(confirmed.subject), page);
    assert.ok(lines.some((line) => line.includes(`email to ${confirmed.to}: ${confirmed.subject}`)));

    // Ctrl-C: everything it started stops, the servers after the services, and every port is free again.
    assert.equal(await interrupt(shop), 0, lines.slice(-20).join('\n'));
    assert.ok(lines.some((line) => line.endsWith('PostgreSQL stopped')));
    assert.ok(lines.some((line) => line.endsWith('nats-server stopped')));
    for (const port of [ports.nats, ports.postgres, ports.smtp, ports.bff, ...Object.values(ports.ops)]) {
      assert.equal(await answers('127.0.0.1', port, 500), false, `nothing answers on ${port} after Ctrl-C`);
    }

    // A second run starts on the same data: no initdb, the order and its email are still there.
    lines.length = 0;
    shop = startShop(dataDir, ports, lines);
    await whenReady(shop, lines);
    assert.doesNotMatch(lines.join('\n'), /first run: initialising/);
    const again = (await gql('mutation { login(email: "ada@start.test", password: "correct horse") { token } }')).login.token;
    assert.equal((await gql(ORDER, { id: placed }, again)).order.status, 'CONFIRMED');
    const mails = (await (await fetch(`${api}/dev/mail.json`)).json()) as { subject: string }[];
    assert.ok(mails.some((mail) => mail.subject === confirmed.subject));
    assert.equal(await interrupt(shop), 0, lines.slice(-20).join('\n'));
  } finally {
    if (shop.running) await interrupt(shop);
    await cleanup();
  }
});
