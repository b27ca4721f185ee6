// Nobody gets in where they don't belong, against the shop running as real
// processes (every service and the BFF): tokens that are tampered with,
// forged, expired or signed with another algorithm are refused; a customer
// cannot read or cancel another's order by any path the API offers; admin
// mutations need the admin role; the rate limit holds under a concurrent
// burst, forged tokens included; nats.conf keeps every process to its own
// domain's events; and hostile strings in every text field are stored and
// returned verbatim (SQL stays parameterized).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import WebSocket from 'ws';
import { connect, type NatsConnection } from 'nats';
import { allEvents, streams, type StreamDefinition } from '../subjects/index.ts';
import { toStreamConfig } from '../services/kit/index.ts';
import { ADMIN_EMAIL, JWT_SECRET, Shop, email } from './chaos/shop.ts';
import { ROOT, natsCredentials, startNats, waitFor, type NatsUser, type TestNats } from './harness.ts';

let shop: Shop;
let url: string;

interface User {
  id: string;
  token: string;
  email: string;
}
let admin: User;
let alice: User;
let bob: User;
let product: { id: string };

interface GqlError {
  message: string;
  extensions: { code: string };
}
interface Gql {
  status: number;
  data: Record<string, any> | null;
  errors?: GqlError[];
  text: string;
}

async function gql(query: string, variables: Record<string, unknown> = {}, token?: string, base = url): Promise<Gql> {
  const response = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
    body: JSON.stringify({ query, variables }),
  });
  const text = await response.text();
  const body = JSON.parse(text) as { data?: Record<string, any> | null; errors?: GqlError[] };
  return { status: response.status, data: body.data ?? null, ...(body.errors ? { errors: body.errors } : {}), text };
}

async function ok(query: string, variables: Record<string, unknown> = {}, token?: string): Promise<Record<string, any>> {
  const response = await gql(query, variables, token);
  assert.equal(response.errors, undefined, `${query}: ${JSON.stringify(response.errors)}`);
  return response.data!;
}

const code = (response: Gql) => response.errors?.[0]?.extensions.code;

const REGISTER =
  'mutation($e: String!, $n: String!, $p: String!) { register(email: $e, name: $n, password: $p) { token customer { id } } }';
const PLACE = 'mutation($lines: [OrderLineInput!]!, $t: String!) { placeOrder(lines: $lines, paymentToken: $t) { id status } }';
const ORDER =
  'query($id: ID!) { order(id: $id) { id status total { amount } customer { email } payment { status } history { status reason } } }';

async function register(name: string, address = email(name.toLowerCase()), password = 'correct horse'): Promise<User> {
  const data = await ok(REGISTER, { e: address, n: name, p: password });
  return { id: data.register.customer.id, token: data.register.token, email: address };
}

async function settled(id: string, token: string): Promise<Record<string, any>> {
  return waitFor(
    async () => {
      const { order } = await ok(ORDER, { id }, token);
      return order.status !== 'PENDING' && order;
    },
    { timeoutMs: 30_000, what: `order ${id} to settle` },
  );
}

before(async () => {
  shop = await Shop.start({ bff: { RATE_LIMIT_MAX: '100000' } });
  url = shop.bff!.url;
  admin = await register('Admin', ADMIN_EMAIL);
  alice = await register('Alice');
  bob = await register('Bob');
  const created = await ok(
    'mutation($i: CreateProductInput!) { createProduct(input: $i) { id } }',
    { i: { sku: `SEC-${randomUUID().slice(0, 8)}`, name: 'Safe', price: { amount: 4200, currency: 'EUR' }, initialStock: 1000 } },
    admin.token,
  );
  product = created.createProduct;
});

after(async () => {
  await shop?.close();
});

// --- Tokens ------------------------------------------------------------------------------------

const base64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** A JWT made by hand: any header, any claims, signed with `secret` under `hash`, or given a `signature`. */
function jwt(
  header: Record<string, unknown>,
  claims: Record<string, unknown>,
  secret = JWT_SECRET,
  hash = 'sha256',
  signature?: string,
): string {
  const input = `${base64url(header)}.${base64url(claims)}`;
  return `${input}.${signature ?? createHmac(hash, secret).update(input).digest('base64url')}`;
}

const now = () => Math.floor(Date.now() / 1000);

test('tampered, forged, expired and wrong-algorithm tokens are refused; only a token signed with the secret passes', async () => {
  const claims = { sub: alice.id, role: 'customer', iat: now(), exp: now() + 600 };
  // The control: a token made here the way the BFF makes them is accepted, so the refusals below are about what was changed.
  const genuine = jwt({ alg: 'HS256', typ: 'JWT' }, claims);
  assert.equal((await ok('{ me { id } }', {}, genuine)).me.id, alice.id);

  const [head, body, signature] = alice.token.split('.') as [string, string, string];
  const asAdmin = base64url({ ...JSON.parse(Buffer.from(body, 'base64url').toString()), role: 'admin' });
  const asBob = base64url({ ...JSON.parse(Buffer.from(body, 'base64url').toString()), sub: bob.id });
  const refused: [string, string, RegExp?][] = [
    ['role raised to admin, signature kept', `${head}.${asAdmin}.${signature}`],
    ['subject changed to another customer, signature kept', `${head}.${asBob}.${signature}`],
    ['signature cut off', `${head}.${body}.`],
    ['signature of another token', `${head}.${body}.${bob.token.split('.')[2]}`],
    ['signed with another secret', jwt({ alg: 'HS256', typ: 'JWT' }, claims, 'not-the-secret-not-the-secret-not-the-secret')],
    ['alg none, no signature', jwt({ alg: 'none', typ: 'JWT' }, { ...claims, role: 'admin' }, '', '', '')],
    ['alg "None", no signature', jwt({ alg: 'None' }, claims, '', '', '')],
    ['HS512 with the right secret', jwt({ alg: 'HS512', typ: 'JWT' }, claims, JWT_SECRET, 'sha512')],
    ['HS384 with the right secret', jwt({ alg: 'HS384', typ: 'JWT' }, claims, JWT_SECRET, 'sha384')],
    ['RS256 header over an HMAC signature (algorithm confusion)', jwt({ alg: 'RS256', typ: 'JWT' }, claims)],
    ['expired a minute ago', jwt({ alg: 'HS256', typ: 'JWT' }, { ...claims, iat: now() - 3600, exp: now() - 60 }), /expired/],
    ['not valid before an hour from now', jwt({ alg: 'HS256', typ: 'JWT' }, { ...claims, nbf: now() + 3600 })],
    ['a role that does not exist', jwt({ alg: 'HS256', typ: 'JWT' }, { ...claims, role: 'superuser' })],
    ['no subject', jwt({ alg: 'HS256', typ: 'JWT' }, { role: 'customer', iat: now(), exp: now() + 600 })],
    ['not a JWT', 'definitely-not-a-token'],
    ['an 8 KiB token', 'A'.repeat(8 * 1024)],
  ];
  for (const [what, token, message] of refused) {
    const response = await gql('{ me { id email } }', {}, token);
    assert.equal(code(response), 'UNAUTHENTICATED', what);
    assert.equal(response.data?.me ?? null, null, what);
    assert.doesNotMatch(response.text, new RegExp(alice.email), `${what}: nothing of Alice's`);
    if (message) assert.match(response.errors![0]!.message, message, what);
  }
  // Other ways of sending one: not as a Bearer.
  for (const header of [`Basic ${Buffer.from('alice:pw').toString('base64')}`, `Bearer ${genuine} ${genuine}`, `Token ${genuine}`]) {
    const response = await fetch(`${url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: header },
      body: JSON.stringify({ query: '{ me { id } }' }),
    });
    const answer = (await response.json()) as { errors?: GqlError[] };
    assert.equal(answer.errors?.[0]?.extensions.code, 'UNAUTHENTICATED', header.split(' ')[0]);
  }
  // A forged admin token can do nothing an admin can.
  const forgedAdmin = jwt({ alg: 'none' }, { sub: admin.id, role: 'admin', iat: now(), exp: now() + 600 }, '', '', '');
  const create = await gql(
    'mutation { createProduct(input: { sku: "FORGED-1", name: "Forged", price: { amount: 1, currency: "EUR" } }) { id } }',
    {},
    forgedAdmin,
  );
  assert.equal(code(create), 'UNAUTHENTICATED');
});

// --- Other people's orders ---------------------------------------------------------------------

/** A minimal graphql-transport-ws client: every message it receives. */
async function subscribe(token: string | undefined, query: string, variables: Record<string, unknown>) {
  const socket = new WebSocket(`${url.replace(/^http/, 'ws')}/graphql`, 'graphql-transport-ws');
  const messages: { type: string; id?: string; payload?: any }[] = [];
  socket.on('message', (data) => messages.push(JSON.parse(String(data))));
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  socket.send(JSON.stringify({ type: 'connection_init', payload: token ? { authorization: `Bearer ${token}` } : {} }));
  await waitFor(() => messages.some((m) => m.type === 'connection_ack'), { what: 'connection_ack' });
  socket.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query, variables } }));
  const end = await waitFor(() => messages.find((m) => m.id === '1' && (m.type === 'error' || m.type === 'next')), {
    what: 'the subscription to answer',
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.close();
  await closed;
  return { first: end, messages };
}

test("one customer cannot read or cancel another's order, by any path", async () => {
  const placed = (await ok(PLACE, { lines: [{ productId: product.id, quantity: 2 }], t: 'tok_visa' }, alice.token)).placeOrder;
  const before = await settled(placed.id, alice.token);
  assert.equal(before.status, 'CONFIRMED');
  const secret = [alice.email, String(before.total.amount)];
  const leaks = (response: { text?: string } | string) =>
    secret.filter((s) => (typeof response === 'string' ? response : response.text!).includes(s));

  // Reading it: directly, through lists, through nested fields.
  const read = await gql(ORDER, { id: placed.id }, bob.token);
  assert.equal(code(read), 'ORDER_NOT_FOUND');
  assert.equal(read.data?.order, null);
  assert.deepEqual(leaks(read), []);
  const lists = await gql(
    '{ orders(first: 100) { edges { node { id } } } me { orders(first: 100) { edges { node { id } } } } }',
    {},
    bob.token,
  );
  assert.equal(lists.errors, undefined);
  assert.ok(!lists.text.includes(placed.id), "Bob's lists hold nothing of Alice's");
  const nested = await gql(
    `query($id: ID!) { order(id: $id) { payment { status } notifications { email } customer { orders { edges { node { id } } } } } }`,
    { id: placed.id },
    bob.token,
  );
  assert.equal(code(nested), 'ORDER_NOT_FOUND');
  assert.deepEqual(leaks(nested), []);
  // Without a token, and with a token naming Alice that is not signed with the secret.
  assert.equal(code(await gql(ORDER, { id: placed.id })), 'UNAUTHENTICATED');
  const posing = jwt(
    { alg: 'HS256' },
    { sub: alice.id, role: 'customer', iat: now(), exp: now() + 600 },
    'guessed-secret-guessed-secret-guessed-secret',
  );
  assert.equal(code(await gql(ORDER, { id: placed.id }, posing)), 'UNAUTHENTICATED');

  // Following it live.
  const live = await subscribe(bob.token, 'subscription($id: ID!) { orderUpdated(id: $id) { id status total { amount } } }', {
    id: placed.id,
  });
  assert.equal(live.first.type, 'error');
  assert.equal(live.first.payload[0].extensions.code, 'ORDER_NOT_FOUND');
  assert.ok(!live.messages.some((m) => m.type === 'next'), 'nothing of the order was pushed');
  const forgedLive = await subscribe(posing, 'subscription($id: ID!) { orderUpdated(id: $id) { id } }', { id: placed.id });
  assert.equal(forgedLive.first.payload[0].extensions.code, 'UNAUTHENTICATED');

  // Cancelling it, with and without a reason, twice.
  for (const reason of [undefined, 'mine now', undefined]) {
    const cancel = await gql(
      'mutation($id: ID!, $r: String) { cancelOrder(id: $id, reason: $r) { id status } }',
      { id: placed.id, r: reason },
      bob.token,
    );
    assert.equal(code(cancel), 'ORDER_NOT_FOUND');
    assert.deepEqual(leaks(cancel), []);
  }

  // Alice's order is as it was: confirmed, paid, with the same history.
  const after = (await ok(ORDER, { id: placed.id }, alice.token)).order;
  assert.deepEqual(after, before);
  assert.equal(after.payment.status, 'CAPTURED');
  // And the admin sees it (the id was right all along).
  assert.equal((await ok(ORDER, { id: placed.id }, admin.token)).order.customer.email, alice.email);
});

// --- Roles -------------------------------------------------------------------------------------

test('admin mutations need the admin role', async () => {
  const catalog = async () =>
    (await shop.query('product', 'SELECT id, sku, name, on_hand FROM products ORDER BY id')).map((row) => JSON.stringify(row));
  const before = await catalog();
  const create = 'mutation($i: CreateProductInput!) { createProduct(input: $i) { id } }';
  const input = { sku: `ROLE-${randomUUID().slice(0, 8)}`, name: 'Not yours', price: { amount: 100, currency: 'EUR' }, initialStock: 5 };
  const restock = 'mutation($p: ID!) { restock(productId: $p, quantity: 1000) { available } }';
  const update = 'mutation($p: ID!) { updateProduct(id: $p, input: { name: "Mine", price: { amount: 1, currency: "EUR" } }) { id } }';
  const archive = 'mutation($p: ID!) { archiveProduct(id: $p) { id } }';
  for (const [who, token, expected] of [
    ['a customer', alice.token, 'FORBIDDEN'],
    ['nobody', undefined, 'UNAUTHENTICATED'],
    [
      'a customer whose token claims admin',
      jwt({ alg: 'HS256' }, { sub: alice.id, role: 'admin', iat: now(), exp: now() + 600 }, 'wrong-secret-wrong-secret-wrong-secret'),
      'UNAUTHENTICATED',
    ],
  ] as const) {
    assert.equal(code(await gql(create, { i: input }, token)), expected, `createProduct by ${who}`);
    assert.equal(code(await gql(restock, { p: product.id }, token)), expected, `restock by ${who}`);
    assert.equal(code(await gql(update, { p: product.id }, token)), expected, `updateProduct by ${who}`);
    assert.equal(code(await gql(archive, { p: product.id }, token)), expected, `archiveProduct by ${who}`);
  }
  // No way to ask for the role at sign-up.
  const sneaky = await gql(
    'mutation { register(email: "sneaky@chaos.test", name: "Sneaky", password: "correct horse", role: ADMIN) { token } }',
  );
  assert.equal(code(sneaky), 'GRAPHQL_VALIDATION_FAILED');
  assert.deepEqual(await catalog(), before, 'nothing was created or restocked');
  // The admin may.
  assert.ok((await ok(create, { i: input }, admin.token)).createProduct.id);
});

// --- Rate limit --------------------------------------------------------------------------------

test('the rate limit holds under a concurrent burst, per user and per address, forged tokens included', async () => {
  const limited = await shop.startBff({ RATE_LIMIT_MAX: '20', RATE_LIMIT_WINDOW_MS: '600000' });
  try {
    const burst = async (count: number, token: (i: number) => string | undefined) => {
      const answers = await Promise.all(Array.from({ length: count }, (_, i) => gql('{ me { id } }', {}, token(i), limited.url)));
      const statuses = new Map<number, number>();
      for (const answer of answers) statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
      return { answers, statuses };
    };
    const mine = await burst(60, () => alice.token);
    assert.deepEqual(Object.fromEntries(mine.statuses), { 200: 20, 429: 40 }, 'exactly the limit passes');
    assert.ok(mine.answers.filter((a) => a.status === 429).every((a) => code(a) === 'RATE_LIMITED'));
    assert.ok(mine.answers.filter((a) => a.status === 200).every((a) => a.data?.me?.id === alice.id));

    // Another user's budget is their own.
    assert.equal((await gql('{ me { id } }', {}, bob.token, limited.url)).status, 200);
    // Without a valid token the address is the key: a fresh forged token per request does not escape it.
    const forged = await burst(60, (i) =>
      jwt(
        { alg: 'HS256' },
        { sub: randomUUID(), role: 'customer', iat: now(), exp: now() + 600 },
        `forger-${i}-forger-forger-forger-forger-forger`,
      ),
    );
    assert.deepEqual(Object.fromEntries(forged.statuses), { 200: 20, 429: 40 });
    assert.equal(
      (await gql('{ products(first: 1) { edges { node { id } } } }', {}, undefined, limited.url)).status,
      429,
      'anonymous callers share it',
    );
  } finally {
    await shop.stopBff(limited);
  }
});

// --- NATS permissions --------------------------------------------------------------------------

test("nats.conf: no process may publish another domain's events, nor another's dead letters", async () => {
  const nats: TestNats = await startNats({ users: true });
  const connections: NatsConnection[] = [];
  const connectAs = async (user: NatsUser) => {
    const { NATS_USER, NATS_PASSWORD } = natsCredentials(user);
    const nc = await connect({ servers: nats.url, user: NATS_USER, pass: NATS_PASSWORD, noAsyncTraces: true });
    connections.push(nc);
    return nc;
  };
  try {
    await assert.rejects(
      connect({ servers: nats.url, noAsyncTraces: true, reconnect: false }),
      /authorization/i,
      'no credentials, no entry',
    );
    const adminNc = await connectAs('admin');
    const jsm = await adminNc.jetstreamManager();
    for (const stream of Object.values(streams) as StreamDefinition[]) await jsm.streams.add(toStreamConfig(stream, 1));

    // Who emits what (the first token of an event subject names its domain; inventory is the product service's too).
    const owner: Record<string, NatsUser> = {
      customers: 'customers',
      inventory: 'products',
      products: 'products',
      orders: 'orders',
      payments: 'payments',
    };
    const asyncapi = JSON.parse(await readFile(join(ROOT, 'docs', 'asyncapi.json'), 'utf8')) as {
      operations: Record<string, { 'x-service': string; 'x-durable'?: string; channel: { $ref: string } }>;
    };
    const streamOf = new Map(allEvents.map((event) => [event.subject, event.stream]));
    const durables = Object.values(asyncapi.operations)
      .filter((operation) => operation['x-durable'])
      .map((operation) => ({
        owner: operation['x-service'],
        subject: `dlq.${streamOf.get(operation.channel.$ref.split('/').pop()!)}.${operation['x-durable']}`,
      }));
    assert.ok(durables.length >= 10);

    const wrong: string[] = [];
    let refusals = 0;
    let allowed = 0;
    for (const user of ['customers', 'products', 'orders', 'payments', 'notifications', 'bff'] as const) {
      const js = (await connectAs(user)).jetstream();
      const attempts = [
        ...allEvents.map((event) => ({ subject: event.subject, mine: owner[event.subject.split('.')[0]!] === user })),
        ...durables.map((durable) => ({ subject: durable.subject, mine: durable.owner === user })),
      ];
      for (const { subject, mine } of attempts) {
        const payload = JSON.stringify({ id: randomUUID(), type: subject, occurredAt: new Date().toISOString(), data: { forged: user } });
        try {
          await js.publish(subject, payload, { msgID: randomUUID(), timeout: 3000 });
          allowed++;
          if (!mine) wrong.push(`${user} could publish ${subject}`);
        } catch (error) {
          refusals++;
          if (mine) wrong.push(`${user} could not publish its own ${subject}: ${(error as Error).message}`);
          else if (!/permission/i.test((error as Error).message)) wrong.push(`${user} → ${subject}: ${(error as Error).message}`);
        }
      }
    }
    assert.deepEqual(wrong, []);
    assert.ok(refusals > allowed * 3, `most cross-domain publishes refused (${refusals} refused, ${allowed} allowed)`);
    // What landed is exactly what was allowed.
    let stored = 0;
    for (const stream of Object.values(streams) as StreamDefinition[]) stored += (await jsm.streams.info(stream.name)).state.messages;
    assert.equal(stored, allowed);
  } finally {
    for (const nc of connections) await nc.close().catch(() => {});
    await nats.cleanup();
  }
});

// --- Hostile strings ---------------------------------------------------------------------------

const HOSTILE = [
  "Robert'); DROP TABLE customers;--",
  `" OR "1"="1`,
  "' OR 1=1 --",
  "x'; SELECT pg_sleep(10); --",
  '$1 $2 ::text $$ ; DROP TABLE orders; $$',
  "\\'; DELETE FROM products WHERE ''='",
  '%_\\%',
  "1; UPDATE payments SET status = 'REFUNDED'",
  '/* */ UNION SELECT password_hash FROM customers --',
  "E'\\x27' || chr(39)",
  'ʼ＇‘’ 😀 \u202e evil',
];
const HOSTILE_EMAILS = ["o'neil+drop_table--@chaos.test", "x'or'1'='1@chaos.test", '"--;drop"@chaos.test', 'a%25_\\@chaos.test'];

test('hostile strings in every text field are stored and returned verbatim: SQL stays parameterized', async () => {
  const tables = async () =>
    (
      await Promise.all(
        (['customer', 'product', 'order', 'payment', 'notification'] as const).map((dir) =>
          shop.query<{ name: string }>(dir, "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public'"),
        ),
      )
    )
      .flat()
      .map((row) => row.name)
      .sort();
  const tablesBefore = await tables();

  // Accounts: hostile names, emails and passwords.
  for (const [i, hostile] of HOSTILE.entries()) {
    const address = HOSTILE_EMAILS[i % HOSTILE_EMAILS.length]!.replace('@', `${i}@`);
    const user = await register(hostile, address, `${hostile}-password`);
    const me = (await ok('{ me { name email } }', {}, user.token)).me;
    assert.deepEqual(me, { name: hostile, email: address.toLowerCase() });
    const login = await ok('mutation($e: String!, $p: String!) { login(email: $e, password: $p) { customer { id } } }', {
      e: address,
      p: `${hostile}-password`,
    });
    assert.equal(login.login.customer.id, user.id);
    const wrong = await gql('mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }', {
      e: address,
      p: "' OR '1'='1",
    });
    assert.equal(code(wrong), 'INVALID_CREDENTIALS');
  }
  const [stored] = await shop.query<{ count: number }>('customer', 'SELECT count(*)::int AS count FROM customers WHERE name = ANY($1)', [
    HOSTILE,
  ]);
  assert.equal(stored!.count, HOSTILE.length, 'every hostile name stored as given');

  // Products: hostile names and descriptions; search takes them literally.
  const created: { id: string; name: string }[] = [];
  for (const [i, hostile] of HOSTILE.entries()) {
    const data = await ok(
      'mutation($i: CreateProductInput!) { createProduct(input: $i) { id name description } }',
      {
        i: {
          sku: `HOSTILE-${i}-${randomUUID().slice(0, 6)}`,
          name: hostile,
          description: `about ${hostile}`,
          price: { amount: 100, currency: 'EUR' },
          initialStock: 50,
        },
      },
      admin.token,
    );
    assert.equal(data.createProduct.name, hostile);
    assert.equal(data.createProduct.description, `about ${hostile}`);
    created.push(data.createProduct);
  }
  for (const item of created) {
    const found = await ok('query($s: String) { products(search: $s, first: 100) { edges { node { id name } } } }', {
      s: item.name.trim(),
    });
    const names = found.products.edges.map((edge: { node: { name: string } }) => edge.node.name);
    assert.ok(names.includes(item.name), `search for ${JSON.stringify(item.name)} finds it`);
    assert.ok(
      names.every((name: string) => name.includes(item.name.trim())),
      `search for ${JSON.stringify(item.name)} matches literally: ${names}`,
    );
  }
  for (const cursor of HOSTILE) {
    assert.equal(
      code(await gql('query($a: String) { products(after: $a) { edges { node { id } } } }', { a: cursor })),
      'VALIDATION_FAILED',
    );
    assert.equal(
      code(await gql('query($a: String) { orders(after: $a) { edges { node { id } } } }', { a: cursor }, alice.token)),
      'VALIDATION_FAILED',
    );
  }

  // Orders: a hostile payment token goes through the saga to the provider; a hostile cancel reason into the history.
  for (const hostile of HOSTILE.slice(0, 4)) {
    const placed = (await ok(PLACE, { lines: [{ productId: created[0]!.id, quantity: 1 }], t: hostile }, alice.token)).placeOrder;
    const done = await settled(placed.id, alice.token);
    assert.equal(done.status, 'CONFIRMED', `paid with token ${JSON.stringify(hostile)}`);
    const cancelled = await ok(
      'mutation($id: ID!, $r: String) { cancelOrder(id: $id, reason: $r) { status history { reason } } }',
      { id: placed.id, r: hostile },
      alice.token,
    );
    assert.equal(cancelled.cancelOrder.status, 'CANCELLED');
    assert.equal(cancelled.cancelOrder.history.at(-1).reason, hostile);
  }

  // Event ids reach SQL too (every consumer's inbox): a hostile one is stored as given, by every consumer of the subject.
  const eventId = "x'); DELETE FROM inbox; DROP TABLE inbox; --\\'";
  const envelope = {
    id: eventId,
    type: 'orders.events.cancelled',
    occurredAt: new Date().toISOString(),
    data: {
      orderId: randomUUID(),
      customerId: randomUUID(),
      reasonCode: 'CUSTOMER_CANCELLED',
      reason: HOSTILE[0],
      previousStatus: 'PENDING',
      total: { amount: 100, currency: 'EUR' },
    },
  };
  await shop.nc.jetstream().publish('orders.events.cancelled', JSON.stringify(envelope), { msgID: randomUUID() });
  for (const dir of ['product', 'payment', 'notification'] as const) {
    const inbox = await waitFor(
      async () => {
        const rows = await shop.query<{ event_id: string }>(dir, 'SELECT event_id FROM inbox WHERE event_id = $1', [eventId]);
        return rows.length > 0 && rows;
      },
      { what: `the ${dir} service to record the hostile event id` },
    );
    assert.deepEqual(inbox, [{ event_id: eventId }]);
  }

  // A character PostgreSQL cannot store is a client error, not a crash or a 500.
  const nul = await gql(REGISTER, { e: email('nul'), n: 'nul\u0000byte', p: 'correct horse' });
  assert.equal(code(nul), 'VALIDATION_FAILED');
  assert.equal(nul.status, 200);

  assert.deepEqual(await tables(), tablesBefore, 'every table is still there');
  // The saga ran on the hostile tokens and reasons like on any others: exactly the four cancelled orders refunded.
  await waitFor(
    async () => {
      const [row] = await shop.query<{ n: number }>('payment', "SELECT count(*)::int AS n FROM payments WHERE status = 'REFUNDED'");
      return row!.n === 4;
    },
    { timeoutMs: 20_000, what: 'the four refunds' },
  );
  assert.deepEqual(shop.crashes, []);
});
