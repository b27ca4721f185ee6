// The product service's request-reply endpoints, over a real NATS server and
// a fresh database: happy paths, typed errors, bad input that changes nothing,
// and paging through a searched catalog.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect, type NatsConnection } from 'nats';
import { products, type Product } from '../../../subjects/index.ts';
import type { RpcClient } from '../../kit/index.ts';
import { dropTestDatabases, startNats, startTestService, type TestNats } from '../../../test/harness.ts';
import { productService } from '../app.ts';
import { rawRequest, tableFingerprint, typedClient, withCode } from './helpers.ts';

let nats: TestNats;
let service: Awaited<ReturnType<typeof startTestService>>;
let nc: NatsConnection;
let client: RpcClient;

before(async () => {
  nats = await startNats();
  service = await startTestService(productService, nats);
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  client = typedClient(nc);
});

after(async () => {
  client?.close();
  await nc?.drain();
  await service?.stop();
  await nats?.cleanup();
  await dropTestDatabases();
});

const db = () => service.context.pool;
const tag = () => randomUUID().slice(0, 8);

function create(overrides: Partial<{ sku: string; name: string; description: string; initialStock: number }> = {}) {
  return client.call(products.create, {
    sku: `SKU-${tag()}`,
    name: `Thing ${tag()}`,
    price: { amount: 1250, currency: 'EUR' },
    ...overrides,
  });
}

test('create, get, getMany and restock', async () => {
  const created = await create({ name: '  Blue Mug  ', description: 'A mug, blue.', initialStock: 7 });
  assert.equal(created.name, 'Blue Mug');
  assert.equal(created.description, 'A mug, blue.');
  assert.deepEqual(created.price, { amount: 1250, currency: 'EUR' });
  assert.equal(created.available, 7);

  assert.deepEqual(await client.call(products.get, { id: created.id }), created);

  const bare = await create();
  assert.equal(bare.available, 0);
  assert.equal(bare.description, '');

  const unknown = randomUUID();
  const many = await client.call(products.getMany, { ids: [bare.id, unknown, created.id, bare.id] });
  assert.deepEqual(many.products, [bare, null, created, bare]);
  assert.deepEqual(await client.call(products.getMany, { ids: [] }), { products: [] });

  const restocked = await client.call(products.restock, { productId: created.id, quantity: 5 });
  assert.equal(restocked.available, 12);
  assert.equal((await client.call(products.get, { id: created.id })).available, 12);
  const { rows } = await db().query('SELECT on_hand, reserved FROM products WHERE id = $1', [created.id]);
  assert.deepEqual(rows, [{ on_hand: 12, reserved: 0 }]);
});

test('unknown products answer PRODUCT_NOT_FOUND', async () => {
  const before = await tableFingerprint(db(), 'products');
  await assert.rejects(client.call(products.get, { id: randomUUID() }), withCode('PRODUCT_NOT_FOUND'));
  await assert.rejects(client.call(products.restock, { productId: randomUUID(), quantity: 1 }), withCode('PRODUCT_NOT_FOUND'));
  assert.equal(await tableFingerprint(db(), 'products'), before);
});

test('a duplicate sku answers SKU_TAKEN, whatever its case, and adds nothing', async () => {
  const sku = `Dup-${tag()}`;
  const first = await create({ sku });
  const before = await tableFingerprint(db(), 'products');
  await assert.rejects(create({ sku }), withCode('SKU_TAKEN'));
  await assert.rejects(create({ sku: sku.toUpperCase() }), withCode('SKU_TAKEN'));
  assert.equal(await tableFingerprint(db(), 'products'), before);
  assert.equal((await client.call(products.get, { id: first.id })).sku, sku);
});

test('malformed JSON gets VALIDATION_FAILED on every endpoint and changes nothing', async () => {
  await create({ initialStock: 3 });
  const before = await tableFingerprint(db(), 'products');
  for (const subject of ['products.create', 'products.get', 'products.getMany', 'products.list', 'products.restock']) {
    for (const payload of ['{"sku":', 'not json', '']) {
      const reply = await rawRequest(nc, subject, payload);
      assert.equal(reply.code, 'VALIDATION_FAILED', `${subject} with ${JSON.stringify(payload)}`);
      assert.equal(reply.status, '400');
    }
  }
  assert.equal(await tableFingerprint(db(), 'products'), before);
});

test('wrong-typed payloads get VALIDATION_FAILED and change nothing', async () => {
  const existing = await create({ initialStock: 3 });
  const valid = { sku: `OK-${tag()}`, name: 'Fine', price: { amount: 100, currency: 'EUR' } };
  const cases: [string, unknown][] = [
    ['products.create', { ...valid, price: { amount: '100', currency: 'EUR' } }],
    ['products.create', { ...valid, price: { amount: 1.5, currency: 'EUR' } }],
    ['products.create', { ...valid, price: { amount: -1, currency: 'EUR' } }],
    ['products.create', { ...valid, price: { amount: 100, currency: 'euro' } }],
    ['products.create', { ...valid, sku: 'has space' }],
    ['products.create', { ...valid, name: '' }],
    ['products.create', { ...valid, name: '   ' }],
    ['products.create', { ...valid, initialStock: -3 }],
    ['products.create', { ...valid, colour: 'red' }],
    ['products.create', [valid]],
    ['products.get', { id: 'not-a-uuid' }],
    ['products.get', { id: 42 }],
    ['products.getMany', { ids: 'x' }],
    ['products.getMany', { ids: [existing.id, 'nope'] }],
    ['products.list', { first: 0 }],
    ['products.list', { first: '5' }],
    ['products.list', { search: 5 }],
    ['products.list', { after: 'bm90IGEgY3Vyc29y' }],
    ['products.restock', { productId: existing.id, quantity: '5' }],
    ['products.restock', { productId: existing.id, quantity: 0 }],
    ['products.restock', { productId: existing.id, quantity: -5 }],
    ['products.restock', { productId: existing.id }],
    ['products.restock', null],
  ];
  const before = await tableFingerprint(db(), 'products');
  for (const [subject, payload] of cases) {
    const reply = await rawRequest(nc, subject, JSON.stringify(payload));
    assert.equal(reply.code, 'VALIDATION_FAILED', `${subject} with ${JSON.stringify(payload)}`);
  }
  assert.equal(await tableFingerprint(db(), 'products'), before);
  assert.equal((await client.call(products.get, { id: existing.id })).available, 3);
  // The valid request the cases were made from does go through.
  assert.equal((await rawRequest(nc, 'products.create', JSON.stringify(valid))).code, undefined);
});

test('list pages through a search by name then id, with an opaque cursor', async () => {
  const word = `zq${tag()}`;
  // Matches by name (any case), by sku and by description; two share a name, to order by id.
  const matching = await Promise.all([
    create({ name: `Alpha ${word.toUpperCase()}` }),
    create({ name: `Bravo ${word}` }),
    create({ name: `Bravo ${word}` }),
    create({ name: 'Charlie', sku: `${word}-SKU` }),
    create({ name: 'Delta', description: `made of ${word} steel` }),
  ]);
  await create({ name: `Echo ${word.slice(0, -1)}` }); // almost, but not a match

  const pages: Product[][] = [];
  let after: string | undefined;
  for (;;) {
    const page = await client.call(products.list, { search: ` ${word} `, first: 2, ...(after ? { after } : {}) });
    pages.push(page.items);
    if (page.nextCursor === null) break;
    assert.doesNotMatch(page.nextCursor, /[+/=]/, 'cursor is base64url');
    after = page.nextCursor;
    assert.ok(pages.length < 10, 'paging ends');
  }
  assert.deepEqual(
    pages.map((page) => page.length),
    [2, 2, 1],
  );
  const expected = [...matching].sort((a, b) => (a.name === b.name ? (a.id < b.id ? -1 : 1) : a.name < b.name ? -1 : 1));
  assert.deepEqual(
    pages.flat().map((p) => p.id),
    expected.map((p) => p.id),
  );

  // A page of exactly the remaining rows says there is no next one.
  const all = await client.call(products.list, { search: word, first: 5 });
  assert.equal(all.items.length, 5);
  assert.equal(all.nextCursor, null);
});

test('search treats LIKE wildcards as plain characters', async () => {
  const word = `w${tag()}`;
  const percent = await create({ name: `${word} 50% off` });
  const underscore = await create({ name: `${word} a_b` });
  await create({ name: `${word} 50 off` });
  await create({ name: `${word} axb` });

  const byPercent = await client.call(products.list, { search: `${word} 50%` });
  assert.deepEqual(
    byPercent.items.map((p) => p.id),
    [percent.id],
  );
  const byUnderscore = await client.call(products.list, { search: 'a_b' });
  assert.deepEqual(
    byUnderscore.items.filter((p) => p.name.startsWith(word)).map((p) => p.id),
    [underscore.id],
  );
  const byBackslash = await client.call(products.list, { search: `${word}\\` });
  assert.deepEqual(byBackslash.items, []);
});

test('list without search returns the whole catalog in name order', async () => {
  const { rows } = await db().query<{ count: number }>('SELECT count(*) AS count FROM products');
  const seen: Product[] = [];
  let after: string | undefined;
  do {
    const page = await client.call(products.list, { first: 7, ...(after ? { after } : {}) });
    seen.push(...page.items);
    after = page.nextCursor ?? undefined;
  } while (after);
  assert.equal(seen.length, rows[0]!.count);
  assert.equal(new Set(seen.map((p) => p.id)).size, seen.length);
  const { rows: ordered } = await db().query<{ id: string }>('SELECT id FROM products ORDER BY name, id');
  assert.deepEqual(
    seen.map((p) => p.id),
    ordered.map((row) => row.id),
  );
});
