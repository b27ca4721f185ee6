// Placing orders safely through the GraphQL API, against the five real
// services: idempotency keys (header or argument), shipping addresses copied
// into the order, and product management (update, archive) that never
// rewrites a placed order.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { connect, type NatsConnection } from 'nats';
import { customers } from '../../subjects/index.ts';
import { RpcClient } from '../../services/kit/index.ts';
import { issueToken } from '../plugins/auth.ts';
import { ADMIN_EMAIL, gql, ok, startStack, waitFor, type GqlResponse, type Stack } from './stack.ts';

let stack: Stack;
let nc: NatsConnection;
let patient: RpcClient;
let url: string;
let admin: string;
let mug: { id: string };
let tea: { id: string };

const PLACE = `mutation Place($lines: [OrderLineInput!]!, $token: String!, $key: String) {
  placeOrder(lines: $lines, paymentToken: $token, idempotencyKey: $key) { id status total { amount } }
}`;
const ORDER = `query Order($id: ID!) { order(id: $id) { id status total { amount } payment { status amount { amount } } } }`;
const CREATE = `mutation Create($input: CreateProductInput!) { createProduct(input: $input) { id } }`;

/**
 * A customer signed in. Registration (scrypt) goes to the customer service
 * with a patient client rather than through the BFF's 1 s budget, which a
 * loaded test machine overruns; the token is the BFF's own. api.test.ts tests
 * register and login themselves.
 */
async function register(name: string, email = `${name.toLowerCase()}-${randomUUID()}@shop.test`) {
  const customer = await patient.call(customers.register, { email, name, password: 'correct horse' });
  return { token: issueToken(stack.bff, customer).token, id: customer.id };
}

/** GraphQL over HTTP with an Idempotency-Key header (or several). */
async function placeWithHeader(token: string, key: string | string[], variables: Record<string, unknown>): Promise<GqlResponse> {
  const headers = new Headers({ 'content-type': 'application/json', authorization: `Bearer ${token}` });
  for (const value of [key].flat()) headers.append('idempotency-key', value);
  const response = await fetch(`${url}/graphql`, { method: 'POST', headers, body: JSON.stringify({ query: PLACE, variables }) });
  const body = (await response.json()) as { data?: Record<string, any> | null; errors?: GqlResponse['errors'] };
  return { status: response.status, data: body.data ?? null, ...(body.errors ? { errors: body.errors } : {}) };
}

/** One connection per service database, taken at the start and kept: a busy PostgreSQL cannot refuse it mid-test. */
const databases = new Map<'orders' | 'payments', pg.Pool>();

/** Rows of one service's own database (the test reads what the services stored). */
async function rows<T extends pg.QueryResultRow>(service: 'orders' | 'payments', sql: string, values: unknown[]): Promise<T[]> {
  return (await databases.get(service)!.query<T>(sql, values)).rows;
}

before(async () => {
  stack = await startStack();
  url = stack.url;
  nc = await connect({ servers: stack.nats.url, noAsyncTraces: true });
  patient = new RpcClient(nc, { timeoutMs: 30_000 });
  for (const service of ['orders', 'payments'] as const) {
    const pool = new pg.Pool({ connectionString: stack.running.get(service)!.databaseUrl, max: 1, idleTimeoutMillis: 0 });
    await pool.query('SELECT 1');
    databases.set(service, pool);
  }
  admin = (await register('Admin', ADMIN_EMAIL)).token;
  const create = (sku: string, amount: number) =>
    ok(url, CREATE, { input: { sku, name: sku, price: { amount, currency: 'EUR' }, initialStock: 1000 } }, admin);
  mug = (await create('order-mug', 1200)).createProduct;
  tea = (await create('order-tea', 500)).createProduct;
});

after(async () => {
  for (const pool of databases.values()) await pool.end();
  patient?.close();
  await nc?.drain();
  await stack?.close();
});

test('one placeOrder sent 20 times at once with one Idempotency-Key: one order, confirmed, charged once', async () => {
  const carol = await register('Carol');
  const key = randomUUID();
  const variables = { lines: [{ productId: mug.id, quantity: 2 }], token: 'tok_visa' };
  // As a client would: a retryable refusal (the machine too slow for the BFF's budget) is sent again, same key.
  const placeUntilAnswered = async (): Promise<string> => {
    for (;;) {
      const answer = await placeWithHeader(carol.token, key, variables);
      const code = answer.errors?.[0]?.extensions.code;
      if (code !== 'TIMEOUT' && code !== 'SERVICE_UNAVAILABLE') {
        assert.equal(answer.errors, undefined, JSON.stringify(answer.errors));
        return answer.data!.placeOrder.id as string;
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  };
  const answers = await Promise.all(Array.from({ length: 20 }, placeUntilAnswered));

  const ids = new Set(answers);
  assert.equal(ids.size, 1, `one order for every answer, got ${ids.size}`);
  const [id] = ids as Set<string>;

  const settled = await waitFor(
    async () => {
      const data = await ok(url, ORDER, { id }, carol.token);
      return data.order.status !== 'PENDING' && data.order.payment && data.order;
    },
    { what: `order ${id} to settle` },
  );
  assert.equal(settled.status, 'CONFIRMED');
  assert.deepEqual(settled.payment, { status: 'CAPTURED', amount: { amount: 2400 } });

  const stored = await rows<{ id: string }>('orders', 'SELECT id FROM orders WHERE customer_id = $1', [carol.id]);
  assert.deepEqual(
    stored.map((row) => row.id),
    [id],
  );
  const charged = await rows<{ order_id: string }>('payments', 'SELECT order_id FROM payments WHERE customer_id = $1', [carol.id]);
  assert.deepEqual(
    charged.map((row) => row.order_id),
    [id],
  );
});

test('the key reused with other lines is IDEMPOTENCY_KEY_REUSED; argument and header must agree', async () => {
  const dan = await register('Dan');
  const key = randomUUID();
  const first = await ok(url, PLACE, { lines: [{ productId: tea.id, quantity: 1 }], token: 'tok_visa', key }, dan.token);

  // The argument and the header are the same key.
  const again = await placeWithHeader(dan.token, key, { lines: [{ productId: tea.id, quantity: 1 }], token: 'tok_visa' });
  assert.equal(again.data?.placeOrder.id, first.placeOrder.id);

  const reused = await gql(url, PLACE, { lines: [{ productId: mug.id, quantity: 1 }], token: 'tok_visa', key }, dan.token);
  assert.equal(reused.errors?.[0]?.extensions.code, 'IDEMPOTENCY_KEY_REUSED');
  assert.match(reused.errors![0]!.message, /another request/);

  const disagreeing = await placeWithHeader(dan.token, randomUUID(), {
    lines: [{ productId: tea.id, quantity: 1 }],
    token: 'tok_visa',
    key,
  });
  assert.equal(disagreeing.errors?.[0]?.extensions.code, 'BAD_USER_INPUT');
  const twoHeaders = await placeWithHeader(dan.token, [randomUUID(), randomUUID()], {
    lines: [{ productId: tea.id, quantity: 1 }],
    token: 'tok_visa',
  });
  // Two headers arrive joined by a comma and a space: no key holds a space.
  assert.equal(twoHeaders.errors?.[0]?.extensions.code, 'VALIDATION_FAILED');
  const badKey = await gql(url, PLACE, { lines: [{ productId: tea.id, quantity: 1 }], token: 'tok_visa', key: 'has spaces' }, dan.token);
  assert.equal(badKey.errors?.[0]?.extensions.code, 'VALIDATION_FAILED');

  const stored = await rows<{ id: string }>('orders', 'SELECT id FROM orders WHERE customer_id = $1', [dan.id]);
  assert.deepEqual(
    stored.map((row) => row.id),
    [first.placeOrder.id],
  );

  // Without a key, every call is an order of its own.
  const [a, b] = await Promise.all(
    [1, 2].map(() => ok(url, PLACE, { lines: [{ productId: tea.id, quantity: 1 }], token: 'tok_visa' }, dan.token)),
  );
  assert.notEqual(a!.placeOrder.id, b!.placeOrder.id);
});

const ADDRESS_FIELDS = 'id name line1 line2 city postalCode country isDefault';
const ADD_ADDRESS = `mutation Add($input: AddressInput!, $makeDefault: Boolean) {
  addAddress(input: $input, makeDefault: $makeDefault) { ${ADDRESS_FIELDS} }
}`;
const PLACE_TO = `mutation Place($lines: [OrderLineInput!]!, $address: ID) {
  placeOrder(lines: $lines, paymentToken: "tok_visa", shippingAddressId: $address) {
    id shippingAddress { addressId name line1 line2 city postalCode country }
  }
}`;
const home = { name: 'Eve Adams', line1: '1 Main Street', city: 'Berlin', postalCode: '10115', country: 'DE' };
const office = { name: 'Eve Adams', line1: 'Office 4', line2: 'Floor 2', city: 'Paris', postalCode: '75001', country: 'FR' };

test('profile: updateProfile renames, addresses are kept with one default, and only their owner (or an admin) sees them', async () => {
  const eve = await register('Eve');
  const renamed = await ok(url, `mutation { updateProfile(name: "Eve Adams") { id name } }`, {}, eve.token);
  assert.deepEqual(renamed.updateProfile, { id: eve.id, name: 'Eve Adams' });

  const first = (await ok(url, ADD_ADDRESS, { input: home }, eve.token)).addAddress;
  const second = (await ok(url, ADD_ADDRESS, { input: office, makeDefault: true }, eve.token)).addAddress;
  assert.equal(first.isDefault, true);
  assert.equal(second.isDefault, true);
  const me = await ok(url, `{ me { name addresses { id isDefault line2 } } }`, {}, eve.token);
  assert.deepEqual(me.me, {
    name: 'Eve Adams',
    addresses: [
      { id: second.id, isDefault: true, line2: 'Floor 2' },
      { id: first.id, isDefault: false, line2: '' },
    ],
  });

  const moved = await ok(url, `mutation M($id: ID!) { setDefaultAddress(id: $id) { id isDefault } }`, { id: first.id }, eve.token);
  assert.deepEqual(moved.setDefaultAddress, { id: first.id, isDefault: true });
  const left = await ok(url, `mutation R($id: ID!) { removeAddress(id: $id) { id isDefault } }`, { id: first.id }, eve.token);
  assert.deepEqual(left.removeAddress, [{ id: second.id, isDefault: true }]);

  // Someone else's addresses: FORBIDDEN through an order's customer, ADDRESS_NOT_FOUND by id.
  const frank = await register('Frank');
  const order = (await ok(url, PLACE, { lines: [{ productId: tea.id, quantity: 1 }], token: 'tok_visa' }, eve.token)).placeOrder;
  const peek = await gql(url, `query O($id: ID!) { order(id: $id) { customer { addresses { id } } } }`, { id: order.id }, admin);
  assert.equal(peek.errors, undefined, 'an admin sees them');
  const update = `mutation U($id: ID!, $input: AddressInput!) { updateAddress(id: $id, input: $input) { id } }`;
  const refused = await gql(url, update, { id: second.id, input: home }, frank.token);
  assert.equal(refused.errors?.[0]?.extensions.code, 'ADDRESS_NOT_FOUND');
  const foreign = await gql(url, PLACE_TO, { lines: [{ productId: tea.id, quantity: 1 }], address: second.id }, frank.token);
  assert.equal(foreign.errors?.[0]?.extensions.code, 'ADDRESS_NOT_FOUND');
  const badCountry = await gql(url, ADD_ADDRESS, { input: { ...home, country: 'Germany' } }, frank.token);
  assert.equal(badCountry.errors?.[0]?.extensions.code, 'VALIDATION_FAILED');
  const anonymous = await gql(url, ADD_ADDRESS, { input: home });
  assert.equal(anonymous.errors?.[0]?.extensions.code, 'UNAUTHENTICATED');
});

test('placeOrder copies the default (or the named) address into the order; later edits do not rewrite it', async () => {
  const gina = await register('Gina');
  const lines = [{ productId: mug.id, quantity: 1 }];

  // No saved address: the order is placed, with no shipping address.
  const bare = (await ok(url, PLACE_TO, { lines }, gina.token)).placeOrder;
  assert.equal(bare.shippingAddress, null);

  const homeAddress = (await ok(url, ADD_ADDRESS, { input: home }, gina.token)).addAddress;
  const officeAddress = (await ok(url, ADD_ADDRESS, { input: office }, gina.token)).addAddress;
  const toDefault = (await ok(url, PLACE_TO, { lines }, gina.token)).placeOrder;
  assert.deepEqual(toDefault.shippingAddress, { addressId: homeAddress.id, ...home, line2: '' });
  const toOffice = (await ok(url, PLACE_TO, { lines, address: officeAddress.id }, gina.token)).placeOrder;
  assert.deepEqual(toOffice.shippingAddress, { addressId: officeAddress.id, ...office });

  // The saved address changes, then goes: the orders keep what they were placed with.
  await ok(
    url,
    `mutation U($id: ID!, $input: AddressInput!) { updateAddress(id: $id, input: $input) { id } }`,
    { id: homeAddress.id, input: { ...home, line1: '9 New Road' } },
    gina.token,
  );
  await ok(url, `mutation R($id: ID!) { removeAddress(id: $id) { id } }`, { id: officeAddress.id }, gina.token);
  const read = async (id: string) =>
    (await ok(url, `query O($id: ID!) { order(id: $id) { shippingAddress { addressId line1 city } } }`, { id }, gina.token)).order
      .shippingAddress;
  assert.deepEqual(await read(toDefault.id), { addressId: homeAddress.id, line1: '1 Main Street', city: 'Berlin' });
  assert.deepEqual(await read(toOffice.id), { addressId: officeAddress.id, line1: 'Office 4', city: 'Paris' });
  // The next order ships to the address as it is now.
  const later = (await ok(url, PLACE_TO, { lines }, gina.token)).placeOrder;
  assert.equal(later.shippingAddress.line1, '9 New Road');
});

const UPDATE_PRODUCT = `mutation U($id: ID!, $input: UpdateProductInput!) {
  updateProduct(id: $id, input: $input) { id name description price { amount currency } }
}`;
const ARCHIVE_PRODUCT = `mutation A($id: ID!) { archiveProduct(id: $id) { id archivedAt } }`;

async function settledOrder(id: string, token: string) {
  return waitFor(
    async () => {
      const data = await ok(
        url,
        `query O($id: ID!) { order(id: $id) {
          status total { amount } lines { unitPrice { amount } lineTotal { amount } product { price { amount } archivedAt } }
          payment { amount { amount } }
        } }`,
        { id },
        token,
      );
      return data.order.status !== 'PENDING' && data.order.payment && data.order;
    },
    { what: `order ${id} to settle` },
  );
}

test('a price change never alters a placed order: its lines, total and charge keep the price it was placed at', async () => {
  const create = await ok(
    url,
    CREATE,
    { input: { sku: `lamp-${randomUUID().slice(0, 8)}`, name: 'Lamp', price: { amount: 4000, currency: 'EUR' }, initialStock: 10 } },
    admin,
  );
  const lamp = create.createProduct;
  const hana = await register('Hana');
  const placed = (await ok(url, PLACE, { lines: [{ productId: lamp.id, quantity: 2 }], token: 'tok_visa' }, hana.token)).placeOrder;
  assert.equal(placed.total.amount, 8000);

  const updated = await ok(
    url,
    UPDATE_PRODUCT,
    { id: lamp.id, input: { price: { amount: 9999, currency: 'EUR' }, name: 'Desk lamp' } },
    admin,
  );
  assert.deepEqual(updated.updateProduct, { id: lamp.id, name: 'Desk lamp', description: '', price: { amount: 9999, currency: 'EUR' } });

  const order = await settledOrder(placed.id, hana.token);
  assert.equal(order.status, 'CONFIRMED');
  assert.equal(order.total.amount, 8000);
  assert.deepEqual(order.lines, [
    { unitPrice: { amount: 4000 }, lineTotal: { amount: 8000 }, product: { price: { amount: 9999 }, archivedAt: null } },
  ]);
  assert.deepEqual(order.payment, { amount: { amount: 8000 } });

  // The next order pays the new price.
  const next = (await ok(url, PLACE, { lines: [{ productId: lamp.id, quantity: 1 }], token: 'tok_visa' }, hana.token)).placeOrder;
  assert.equal(next.total.amount, 9999);

  const forbidden = await gql(url, UPDATE_PRODUCT, { id: lamp.id, input: { name: 'Mine now' } }, hana.token);
  assert.equal(forbidden.errors?.[0]?.extensions.code, 'FORBIDDEN');
  const empty = await gql(url, UPDATE_PRODUCT, { id: lamp.id, input: {} }, admin);
  assert.equal(empty.errors?.[0]?.extensions.code, 'VALIDATION_FAILED');
});

test('an archived product is not listed and refused at placeOrder with PRODUCT_ARCHIVED; orders placed before are untouched', async () => {
  const sku = `vase-${randomUUID().slice(0, 8)}`;
  const vase = (
    await ok(url, CREATE, { input: { sku, name: `Vase ${sku}`, price: { amount: 2500, currency: 'EUR' }, initialStock: 10 } }, admin)
  ).createProduct;
  const ivan = await register('Ivan');
  const key = randomUUID();
  const variables = { lines: [{ productId: vase.id, quantity: 1 }], token: 'tok_visa', key };
  const before = (await ok(url, PLACE, variables, ivan.token)).placeOrder;

  const forbidden = await gql(url, ARCHIVE_PRODUCT, { id: vase.id }, ivan.token);
  assert.equal(forbidden.errors?.[0]?.extensions.code, 'FORBIDDEN');
  const archived = (await ok(url, ARCHIVE_PRODUCT, { id: vase.id }, admin)).archiveProduct;
  assert.ok(archived.archivedAt);

  const listed = await ok(url, `query S($q: String) { products(search: $q) { edges { node { id } } } }`, { q: sku });
  assert.deepEqual(listed.products.edges, []);
  const one = await ok(url, `query P($id: ID!) { product(id: $id) { id archivedAt } }`, { id: vase.id });
  assert.deepEqual(one.product, archived);

  const refused = await gql(
    url,
    PLACE,
    {
      lines: [
        { productId: vase.id, quantity: 1 },
        { productId: tea.id, quantity: 1 },
      ],
      token: 'tok_visa',
    },
    ivan.token,
  );
  assert.equal(refused.errors?.[0]?.extensions.code, 'PRODUCT_ARCHIVED');
  assert.match(refused.errors![0]!.message, new RegExp(sku));
  // A repeat of the placement made before the archive still answers that order.
  assert.equal((await ok(url, PLACE, variables, ivan.token)).placeOrder.id, before.id);

  const order = await settledOrder(before.id, ivan.token);
  assert.equal(order.status, 'CONFIRMED');
  assert.equal(order.lines[0].product.archivedAt, archived.archivedAt);
  const stored = await rows<{ id: string }>('orders', 'SELECT id FROM orders WHERE customer_id = $1', [ivan.id]);
  assert.deepEqual(
    stored.map((row) => row.id),
    [before.id],
  );
});
