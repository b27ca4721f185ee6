// The BFF over real HTTP and WebSocket, in front of the five real services on
// a nats-server and PostgreSQL of this test run.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { allOperations } from '../../subjects/index.ts';
import { ADMIN_EMAIL, gql, ok, openWs, startStack, waitFor, type Stack } from './stack.ts';

let stack: Stack;
let url: string;
let admin: string;
let alice: { token: string; id: string };
let bob: { token: string; id: string };
const catalog: { id: string; name: string }[] = [];

const REGISTER = `mutation Register($email: String!, $name: String!, $password: String!) {
  register(email: $email, name: $name, password: $password) { token expiresAt customer { id email name role } }
}`;
const PLACE = `mutation Place($lines: [OrderLineInput!]!, $token: String!) {
  placeOrder(lines: $lines, paymentToken: $token) { id status total { amount currency } currency lines { productId quantity } }
}`;
const ORDER = `query Order($id: ID!) {
  order(id: $id) {
    id status currency cancelReason
    total { amount currency }
    lines { productId sku name quantity unitPrice { amount } lineTotal { amount } product { id name available } }
    history { status at reason }
    customer { id email }
    payment { status amount { amount currency } declineReason }
    notifications { eventType subject status }
  }
}`;

async function register(name: string, email = `${name.toLowerCase()}-${randomUUID()}@shop.test`) {
  const data = await ok(url, REGISTER, { email, name, password: 'correct horse' });
  return { token: data.register.token as string, id: data.register.customer.id as string, email };
}

async function placeOrder(token: string, lines: { productId: string; quantity: number }[], paymentToken = 'tok_visa') {
  const data = await ok(url, PLACE, { lines, token: paymentToken }, token);
  return data.placeOrder as { id: string; status: string };
}

async function settled(id: string, token: string) {
  return waitFor(
    async () => {
      const data = await ok(url, ORDER, { id }, token);
      return data.order.status !== 'PENDING' && data.order;
    },
    { what: `order ${id} to settle` },
  );
}

before(async () => {
  stack = await startStack();
  url = stack.url;
  admin = (await register('Admin', ADMIN_EMAIL)).token;
  for (const [sku, name, amount] of [
    ['mug-blue', 'Blue mug', 1299],
    ['mug-red', 'Red mug', 1399],
    ['tea-green', 'Green tea', 650],
    ['tea-black', 'Black tea', 590],
  ] as const) {
    const data = await ok(
      url,
      `mutation Create($input: CreateProductInput!) { createProduct(input: $input) { id name } }`,
      { input: { sku, name, description: `A ${name.toLowerCase()}`, price: { amount, currency: 'EUR' }, initialStock: 1000 } },
      admin,
    );
    catalog.push(data.createProduct);
  }
  alice = await register('Alice');
  bob = await register('Bob');
});

after(async () => {
  await stack?.close();
});

test('register and login answer a token and the customer; me is the token holder', async () => {
  const email = `carol-${randomUUID()}@Shop.test`;
  const registered = await ok(url, REGISTER, { email, name: 'Carol', password: 'correct horse' });
  assert.equal(registered.register.customer.role, 'CUSTOMER');
  assert.equal(registered.register.customer.email, email.toLowerCase());
  assert.ok(Date.parse(registered.register.expiresAt) > Date.now());

  const login = await ok(url, `mutation { login(email: "${email}", password: "correct horse") { token customer { id name } } }`);
  assert.equal(login.login.customer.id, registered.register.customer.id);
  const me = await ok(url, `{ me { id email name role } }`, {}, login.login.token);
  assert.deepEqual(me.me, { ...registered.register.customer });

  const wrong = await gql(url, `mutation { login(email: "${email}", password: "wrong password") { token } }`);
  assert.equal(wrong.errors?.[0]?.extensions.code, 'INVALID_CREDENTIALS');
  assert.equal(wrong.data, null);

  const taken = await gql(url, REGISTER, { email, name: 'Carol again', password: 'correct horse' });
  assert.equal(taken.errors?.[0]?.extensions.code, 'EMAIL_TAKEN');

  const short = await gql(url, REGISTER, { email: `d-${randomUUID()}@shop.test`, name: 'D', password: 'short' });
  assert.equal(short.errors?.[0]?.extensions.code, 'VALIDATION_FAILED');
  assert.match(short.errors![0]!.message, /password/);
  assert.doesNotMatch(short.errors![0]!.message, /customers\.register/, 'no subject names leak');
});

test('products: Relay paging, search, one by id with its stock', async () => {
  const first = await ok(
    url,
    `{ products(first: 3) { edges { node { id name available price { amount currency } } } pageInfo { endCursor hasNextPage } } }`,
  );
  assert.equal(first.products.edges.length, 3);
  assert.equal(first.products.pageInfo.hasNextPage, true);
  const rest = await ok(
    url,
    `query($after: String) { products(first: 3, after: $after) { edges { node { id } } pageInfo { endCursor hasNextPage } } }`,
    {
      after: first.products.pageInfo.endCursor,
    },
  );
  assert.equal(rest.products.edges.length, 1);
  assert.equal(rest.products.pageInfo.hasNextPage, false);
  assert.equal(rest.products.pageInfo.endCursor, null);
  const seen = new Set([...first.products.edges, ...rest.products.edges].map((e: { node: { id: string } }) => e.node.id));
  assert.deepEqual(seen, new Set(catalog.map((p) => p.id)));

  const teas = await ok(url, `{ products(search: "tea") { edges { node { name } } } }`);
  assert.deepEqual(teas.products.edges.map((e: { node: { name: string } }) => e.node.name).sort(), ['Black tea', 'Green tea']);

  const one = await ok(url, `query($id: ID!) { product(id: $id) { id sku name available price { amount currency } } }`, {
    id: catalog[0]!.id,
  });
  assert.equal(one.product.sku, 'mug-blue');
  assert.equal(typeof one.product.available, 'number');
  assert.deepEqual(one.product.price, { amount: 1299, currency: 'EUR' });

  const missing = await gql(url, `query($id: ID!) { product(id: $id) { id } }`, { id: randomUUID() });
  assert.equal(missing.status, 200);
  assert.equal(missing.data?.product, null);
  assert.equal(missing.errors?.[0]?.extensions.code, 'PRODUCT_NOT_FOUND');

  const tooMany = await gql(url, `{ products(first: 500) { edges { node { id } } } }`);
  assert.equal(tooMany.errors?.[0]?.extensions.code, 'BAD_USER_INPUT');
});

test('admin creates and restocks products; a customer is FORBIDDEN, no token UNAUTHENTICATED', async () => {
  const input = { sku: `cup-${randomUUID().slice(0, 8)}`, name: 'Cup', price: { amount: 450, currency: 'EUR' }, initialStock: 2 };
  const CREATE = `mutation($input: CreateProductInput!) { createProduct(input: $input) { id sku available description } }`;
  const created = await ok(url, CREATE, { input }, admin);
  assert.equal(created.createProduct.available, 2);
  assert.equal(created.createProduct.description, '');
  const RESTOCK = `mutation($id: ID!) { restock(productId: $id, quantity: 5) { id available } }`;
  const restocked = await ok(url, RESTOCK, { id: created.createProduct.id }, admin);
  assert.equal(restocked.restock.available, 7);

  const asCustomer = await gql(url, CREATE, { input: { ...input, sku: 'other-sku' } }, alice.token);
  assert.equal(asCustomer.errors?.[0]?.extensions.code, 'FORBIDDEN');
  const restockAsCustomer = await gql(url, RESTOCK, { id: created.createProduct.id }, alice.token);
  assert.equal(restockAsCustomer.errors?.[0]?.extensions.code, 'FORBIDDEN');
  const anonymous = await gql(url, RESTOCK, { id: created.createProduct.id });
  assert.equal(anonymous.errors?.[0]?.extensions.code, 'UNAUTHENTICATED');
  const duplicate = await gql(url, CREATE, { input }, admin);
  assert.equal(duplicate.errors?.[0]?.extensions.code, 'SKU_TAKEN');

  const after = await ok(url, `query($id: ID!) { product(id: $id) { available } }`, { id: created.createProduct.id });
  assert.equal(after.product.available, 7, 'refused mutations changed nothing');
});

test('an order is placed PENDING, settles CONFIRMED with its lines, payment, history and notifications, and can be cancelled', async () => {
  const placed = await placeOrder(alice.token, [
    { productId: catalog[0]!.id, quantity: 2 },
    { productId: catalog[2]!.id, quantity: 1 },
  ]);
  assert.equal(placed.status, 'PENDING');

  const order = await settled(placed.id, alice.token);
  assert.equal(order.status, 'CONFIRMED');
  assert.equal(order.currency, 'EUR');
  assert.deepEqual(order.total, { amount: 2 * 1299 + 650, currency: 'EUR' });
  assert.deepEqual(
    order.lines.map((l: { product: { name: string } }) => l.product.name),
    ['Blue mug', 'Green tea'],
  );
  assert.equal(order.lines[0].lineTotal.amount, 2598);
  assert.deepEqual(
    order.history.map((h: { status: string }) => h.status),
    ['PENDING', 'CONFIRMED'],
  );
  assert.equal(order.customer.id, alice.id);
  assert.equal(order.payment.status, 'CAPTURED');
  assert.deepEqual(order.payment.amount, order.total);
  const withMail = await waitFor(
    async () => {
      const data = await ok(url, ORDER, { id: placed.id }, alice.token);
      return data.order.notifications.length > 0 && data.order;
    },
    { what: 'the confirmation email record' },
  );
  assert.equal(withMail.notifications[0].eventType, 'orders.events.confirmed');

  const listed = await ok(url, `{ orders(first: 10) { edges { node { id status } } pageInfo { hasNextPage } } }`, {}, alice.token);
  assert.ok(listed.orders.edges.some((e: { node: { id: string } }) => e.node.id === placed.id));

  const CANCEL = `mutation($id: ID!) { cancelOrder(id: $id, reason: "changed my mind") { id status cancelReason } }`;
  const cancelled = await ok(url, CANCEL, { id: placed.id }, alice.token);
  assert.equal(cancelled.cancelOrder.status, 'CANCELLED');
  assert.equal(cancelled.cancelOrder.cancelReason, 'CUSTOMER_CANCELLED');
  const refunded = await waitFor(
    async () => {
      const data = await ok(url, ORDER, { id: placed.id }, alice.token);
      return data.order.payment?.status === 'REFUNDED' && data.order;
    },
    { what: 'the refund' },
  );
  assert.equal(refunded.status, 'CANCELLED');
  // Cancelling again is idempotent: the same cancelled order, no error.
  const again = await ok(url, CANCEL, { id: placed.id }, alice.token);
  assert.equal(again.cancelOrder.status, 'CANCELLED');
});

test('a declined payment cancels the order; out of stock is refused by name', async () => {
  const placed = await placeOrder(alice.token, [{ productId: catalog[1]!.id, quantity: 1 }], 'tok_decline');
  const order = await settled(placed.id, alice.token);
  assert.equal(order.status, 'CANCELLED');
  assert.equal(order.cancelReason, 'PAYMENT_DECLINED');
  assert.equal(order.payment.status, 'DECLINED');

  const greedy = await gql(url, PLACE, { lines: [{ productId: randomUUID(), quantity: 1 }], token: 'tok_visa' }, alice.token);
  assert.equal(greedy.errors?.[0]?.extensions.code, 'PRODUCT_NOT_FOUND');
});

test("another customer's order is invisible: query, list, cancel and subscription answer not found", async () => {
  const placed = await placeOrder(alice.token, [{ productId: catalog[3]!.id, quantity: 1 }]);
  const peek = await gql(url, ORDER, { id: placed.id }, bob.token);
  assert.equal(peek.status, 200);
  assert.equal(peek.data?.order, null);
  assert.equal(peek.errors?.[0]?.extensions.code, 'ORDER_NOT_FOUND');
  const cancel = await gql(url, `mutation($id: ID!) { cancelOrder(id: $id) { id } }`, { id: placed.id }, bob.token);
  assert.equal(cancel.errors?.[0]?.extensions.code, 'ORDER_NOT_FOUND');
  const list = await ok(url, `{ orders { edges { node { id } } } }`, {}, bob.token);
  assert.ok(!list.orders.edges.some((e: { node: { id: string } }) => e.node.id === placed.id));
  const own = await gql(url, `{ me { orders { edges { node { customer { orders { pageInfo { hasNextPage } } } } } } } }`, {}, alice.token);
  assert.equal(own.errors, undefined, 'Customer.orders of oneself is allowed');

  const ws = await openWs(url, bob.token);
  ws.send({
    id: 'peek',
    type: 'subscribe',
    payload: { query: `subscription($id: ID!) { orderUpdated(id: $id) { id status } }`, variables: { id: placed.id } },
  });
  const refused = await ws.waitFor((m) => m.id === 'peek' && m.type === 'error', 'the subscription to be refused');
  assert.equal(refused.payload[0].extensions.code, 'ORDER_NOT_FOUND');
  assert.ok(!ws.messages.some((m) => m.type === 'next'), 'nothing of the order was sent');
  await ws.close();

  // The admin sees it.
  const asAdmin = await ok(url, `query($id: ID!) { order(id: $id) { id customer { id } } }`, { id: placed.id }, admin);
  assert.equal(asAdmin.order.customer.id, alice.id);
  await settled(placed.id, alice.token);
});

test('without a valid token: UNAUTHENTICATED, on HTTP and on WebSocket', async () => {
  for (const query of [`{ me { id } }`, `{ orders { edges { node { id } } } }`, `{ order(id: "${randomUUID()}") { id } }`]) {
    const response = await gql(url, query);
    assert.equal(response.status, 200);
    assert.equal(response.errors?.[0]?.extensions.code, 'UNAUTHENTICATED', query);
  }
  const place = await gql(url, PLACE, { lines: [{ productId: catalog[0]!.id, quantity: 1 }], token: 'tok_visa' });
  assert.equal(place.errors?.[0]?.extensions.code, 'UNAUTHENTICATED');

  const forged = await gql(url, `{ me { id } }`, {}, `${alice.token.slice(0, -4)}AAAA`);
  assert.equal(forged.errors?.[0]?.extensions.code, 'UNAUTHENTICATED');
  assert.equal(forged.errors?.[0]?.message, 'invalid token');
  const expiredToken = stack.bff.jwt.sign({ sub: alice.id, role: 'customer', iat: Math.floor(Date.now() / 1000) - 86_400 } as never);
  const expired = await gql(url, `{ me { id } }`, {}, expiredToken);
  assert.equal(expired.errors?.[0]?.extensions.code, 'UNAUTHENTICATED');
  assert.match(expired.errors![0]!.message, /expired/);

  // Public fields still answer beside the refused one.
  const mixed = await gql(url, `{ me { id } products(first: 1) { edges { node { id } } } }`);
  assert.equal(mixed.data?.me, null);
  assert.equal(mixed.data?.products.edges.length, 1);

  const ws = await openWs(url);
  ws.send({ id: 'anon', type: 'subscribe', payload: { query: `subscription { orderUpdated(id: "${randomUUID()}") { id } }` } });
  const refused = await ws.waitFor((m) => m.id === 'anon' && m.type === 'error', 'the anonymous subscription to be refused');
  assert.equal(refused.payload[0].extensions.code, 'UNAUTHENTICATED');
  await ws.close();
});

test('a query deeper than the limit is refused before anything runs', async () => {
  const deep = `{ me { orders { edges { node { customer { orders { edges { node { customer { id } } } } } } } } } }`;
  const response = await gql(url, deep, {}, alice.token);
  assert.equal(response.status, 400);
  assert.equal(response.data, null);
  assert.equal(response.errors?.[0]?.extensions.code, 'QUERY_TOO_DEEP');
  const shallow = await gql(url, `{ me { orders { edges { node { lines { product { price { amount } } } } } } } }`, {}, alice.token);
  assert.equal(shallow.errors, undefined, 'the storefront depth of 8 passes');
});

test('introspection and GraphiQL are off unless GRAPHQL_DEV=true', async () => {
  const introspection = await gql(url, `{ __schema { queryType { name } } }`);
  assert.equal(introspection.status, 400);
  assert.equal(introspection.errors?.[0]?.extensions.code, 'GRAPHQL_VALIDATION_FAILED');
  assert.equal((await fetch(`${url}/graphiql`)).status, 404);

  const dev = await stack.startBff({ GRAPHQL_DEV: 'true' });
  const allowed = await ok(dev.url, `{ __schema { queryType { name } } }`);
  assert.equal(allowed.__schema.queryType.name, 'Query');
  assert.equal((await fetch(`${dev.url}/graphiql`)).status, 200);
});

test('/dev/mail shows the emails of DEV_MAIL_DIR, newest first and escaped, and is not there without it', async () => {
  assert.equal((await fetch(`${url}/dev/mail`)).status, 404);
  assert.equal((await fetch(`${url}/dev/mail.json`)).status, 404);

  const folder = await mkdtemp(join(tmpdir(), 'shop-mail-'));
  try {
    const mail = (minute: number, subject: string) => ({
      receivedAt: `2026-01-01T10:0${minute}:00.000Z`,
      from: 'The Shop <shop@example.com>',
      to: 'ada@example.com',
      subject,
      messageId: `<${minute}@example.com>`,
      text: `Hello <b>Ada</b> ${minute}`,
    });
    await writeFile(join(folder, '2026-01-01T10-01.json'), JSON.stringify(mail(1, 'First')));
    await writeFile(join(folder, '2026-01-01T10-02.json'), JSON.stringify(mail(2, 'Second')));
    // Half-written files (the catcher renames them once whole) are not read.
    await writeFile(join(folder, '.2026-01-01T10-03.json.partial'), '{"receivedAt":');
    const dev = await stack.startBff({ DEV_MAIL_DIR: folder });
    const listed = (await (await fetch(`${dev.url}/dev/mail.json`)).json()) as { subject: string }[];
    assert.deepEqual(
      listed.map((entry) => entry.subject),
      ['Second', 'First'],
    );
    const page = await fetch(`${dev.url}/dev/mail`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    const html = await page.text();
    assert.ok(html.includes('Hello &#60;b&#62;Ada&#60;/b&#62; 2'), html);
    assert.ok(!html.includes('<b>Ada</b>'), 'the text of an email is escaped');
  } finally {
    await rm(folder, { recursive: true, force: true });
  }
});

test('orderUpdated pushes PENDING, then CONFIRMED, to its owner over WebSocket', async () => {
  // Hold the saga at PENDING: with the payment service stopped nobody charges.
  await stack.stopService('payments');
  const placed = await placeOrder(alice.token, [{ productId: catalog[0]!.id, quantity: 1 }]);
  const ws = await openWs(url, alice.token);
  ws.send({
    id: 'watch',
    type: 'subscribe',
    payload: {
      query: `subscription($id: ID!) { orderUpdated(id: $id) { id status history { status } lines { product { name } } } }`,
      variables: { id: placed.id },
    },
  });
  const first = await ws.waitFor((m) => m.id === 'watch' && m.type === 'next', 'the current state');
  assert.equal(first.payload.data.orderUpdated.status, 'PENDING');
  assert.equal(first.payload.data.orderUpdated.lines[0].product.name, 'Blue mug');
  assert.equal(stack.bff.feed.watched, 1);

  await stack.startService('payments');
  const confirmed = await ws.waitFor(
    (m) => m.id === 'watch' && m.type === 'next' && m.payload.data.orderUpdated.status === 'CONFIRMED',
    'CONFIRMED to be pushed',
  );
  assert.deepEqual(
    confirmed.payload.data.orderUpdated.history.map((h: { status: string }) => h.status),
    ['PENDING', 'CONFIRMED'],
  );
  // A shipment's steps are pushed too, with the order's status as it is: count each status once.
  const statuses = ws.messages
    .filter((m) => m.id === 'watch' && m.type === 'next')
    .map((m) => m.payload.data.orderUpdated.status)
    .filter((status: string, i: number, all: string[]) => status !== all[i - 1]);
  assert.deepEqual(statuses, ['PENDING', 'CONFIRMED'], 'each status in order, none going back');

  // Cancelling is the last change: pushed, then the subscription completes.
  await ok(url, `mutation($id: ID!) { cancelOrder(id: $id) { id } }`, { id: placed.id }, alice.token);
  await ws.waitFor((m) => m.id === 'watch' && m.type === 'complete', 'the subscription to complete after CANCELLED');
  assert.equal(ws.messages.filter((m) => m.id === 'watch' && m.type === 'next').at(-1)!.payload.data.orderUpdated.status, 'CANCELLED');
  await waitFor(() => stack.bff.feed.watched === 0, { what: 'the watch to be released' });
  await ws.close();
});

test('an orders page of 20 orders with 3 lines each costs a bounded number of NATS requests', async () => {
  const dave = await register('Dave');
  const lines = catalog.slice(0, 3).map((p) => ({ productId: p.id, quantity: 1 }));
  const ids: string[] = [];
  for (let i = 0; i < 20; i++) ids.push((await placeOrder(dave.token, lines)).id);
  await Promise.all(ids.map((id) => settled(id, dave.token)));

  // Count the requests the BFF's client sends: every request subject of the
  // contracts, on a connection of our own that sees all traffic, keeping
  // those whose reply goes to the BFF's reply inbox. A call the kit retried
  // (a transient timeout on a loaded machine) sends the same payload again:
  // calls are counted by subject and payload, sends as they come.
  const watcher: NatsConnection = await connect({ servers: stack.nats.url, noAsyncTraces: true });
  const requestSubjects = new Set(allOperations.map((op) => op.subject));
  const seen: { subject: string; reply: string; data: string }[] = [];
  const sub = watcher.subscribe('>', {
    callback: (_error, msg) => {
      if (requestSubjects.has(msg.subject) && msg.reply) seen.push({ subject: msg.subject, reply: msg.reply, data: msg.string() });
    },
  });
  await watcher.flush();
  // A search still asks the product service (products and customers by id come from the read models).
  await ok(url, `{ products(first: 1, search: "mug") { edges { node { id } } } }`);
  await waitFor(() => seen.some((s) => s.subject === 'products.list'), { what: 'the probe request' });
  const bffInbox = seen.find((s) => s.subject === 'products.list')!.reply.replace(/\.[^.]+$/, '.');

  const count = async (query: string) => {
    seen.length = 0;
    const data = await ok(url, query, {}, dave.token);
    await watcher.flush();
    const mine = seen.filter((s) => s.reply.startsWith(bffInbox));
    const calls = new Map(mine.map((s) => [`${s.subject} ${s.data}`, s.subject]));
    const bySubject: Record<string, number> = {};
    for (const subject of calls.values()) bySubject[subject] = (bySubject[subject] ?? 0) + 1;
    return { data, calls: calls.size, sends: mine.length, bySubject };
  };

  const page = await count(`{
    orders(first: 20) { edges { node { id status total { amount } customer { email }
      lines { quantity product { name available price { amount } } } } } }
  }`);
  assert.equal(page.data.orders.edges.length, 20);
  assert.equal(page.data.orders.edges.flatMap((e: { node: { lines: unknown[] } }) => e.node.lines).length, 60);
  // Products and customers come from the read models: only the page itself is a request.
  assert.deepEqual(page.bySubject, { 'orders.listByCustomer': 1 });
  assert.equal(page.calls, 1, '1 page; the 60 lines and 20 customers from memory, not 80 requests');
  assert.ok(page.sends <= 3 * page.calls, 'retries are bounded too (2 per idempotent call)');

  const full = await count(`{
    orders(first: 20) { edges { node { id customer { email } lines { product { name } } payment { status } notifications { subject } } } }
  }`);
  // Payments and notifications of the page: one batch each, not one call per order (43 before).
  assert.deepEqual(full.bySubject, {
    'orders.listByCustomer': 1,
    'payments.getByOrders': 1,
    'notifications.listByOrders': 1,
  });
  assert.ok(full.sends <= 3 * full.calls);
  console.log(
    `# requests per orders page (20 orders x 3 lines): ${page.calls} with products and customers (${page.sends} sent); ` +
      `${full.calls} with payments and notifications too (${full.sends} sent)`,
  );
  sub.unsubscribe();
  await watcher.close();
});

test('the rate limit answers 429 per user and per address', async () => {
  const limited = await stack.startBff({ RATE_LIMIT_MAX: '3', RATE_LIMIT_WINDOW_MS: '60000' });
  const anonymous = [];
  for (let i = 0; i < 4; i++) anonymous.push(await gql(limited.url, `{ products(first: 1) { edges { node { id } } } }`));
  assert.deepEqual(
    anonymous.map((r) => r.status),
    [200, 200, 200, 429],
  );
  assert.equal(anonymous[3]!.errors?.[0]?.extensions.code, 'RATE_LIMITED');

  // A signed-in user counts on their own key, not on the address's.
  const mine = [];
  for (let i = 0; i < 4; i++) mine.push(await gql(limited.url, `{ me { id } }`, {}, alice.token));
  assert.deepEqual(
    mine.map((r) => r.status),
    [200, 200, 200, 429],
  );
  const other = await gql(limited.url, `{ me { id } }`, {}, bob.token);
  assert.equal(other.status, 200, "another user's budget is untouched");
  assert.equal((await fetch(`${limited.url}/health/live`)).status, 200, 'health is never limited');
});

test('health: live, and ready once NATS and every service answer', async () => {
  const live = await fetch(`${url}/health/live`);
  assert.equal(live.status, 200);
  const ready = await fetch(`${url}/health/ready`);
  const body = (await ready.json()) as { status: string; checks: { services: Record<string, boolean> } };
  assert.equal(ready.status, 200, JSON.stringify(body));
  assert.deepEqual(Object.keys(body.checks.services).sort(), ['customers', 'notifications', 'orders', 'payments', 'products', 'shipments']);
  assert.ok(Object.values(body.checks.services).every(Boolean));
});

test('the storefront is served at /', async () => {
  const page = await fetch(`${url}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type') ?? '', /text\/html/);
  assert.match(await page.text(), /<script type="module" src="\/app\.js">/);
  assert.equal(page.headers.get('cache-control'), 'no-cache', 'revalidated on each visit');
  assert.equal(page.headers.get('x-content-type-options'), 'nosniff');
  assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'self'/);
  const script = await fetch(`${url}/app.js`);
  assert.match(script.headers.get('content-type') ?? '', /javascript/);
  assert.match(await script.text(), /graphql-transport-ws/);
  assert.equal((await fetch(`${url}/style.css`)).status, 200);
  assert.equal((await fetch(`${url}/nope.js`)).status, 404);
});
