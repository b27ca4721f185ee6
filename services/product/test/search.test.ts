// Catalog search and paging on a catalog of some thousands of products
// (test/catalog-seed.ts), through the product service over a real NATS server
// and PostgreSQL: what a search finds (LIKE's wildcards included), that it
// goes through the trigram index, and that keyset pages stay whole while
// products are added between them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect, type NatsConnection } from 'nats';
import pg from 'pg';
import { products, type Product } from '../../../subjects/index.ts';
import type { RpcClient } from '../../kit/index.ts';
import { dropTestDatabases, startNats, startTestService, type TestNats } from '../../../test/harness.ts';
import { BROAD_WORD, seedProducts, seededModel, seededSku } from '../../../test/catalog-seed.ts';
import { productService } from '../app.ts';
import { catalogQuery } from '../store.ts';
import { typedClient } from './helpers.ts';

const SEEDED = 20_000;

let nats: TestNats;
let service: Awaited<ReturnType<typeof startTestService>>;
let nc: NatsConnection;
let client: RpcClient;
const db = () => service.context.pool;

before(async () => {
  nats = await startNats();
  service = await startTestService(productService, nats);
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  client = typedClient(nc);
  await seedProducts(db(), 0, SEEDED);
  // Names, skus and descriptions with LIKE's special characters.
  for (const [sku, name, description] of [
    ['SPECIAL-1', 'Sale 50% off mug', 'half price'],
    ['SPECIAL-2', 'Sale 50 off mug', 'no percent sign'],
    ['SPECIAL-3', 'Cup a_b', 'underscore'],
    ['SPECIAL-4', 'Cup axb', 'an x where the underscore was'],
    ['SPECIAL-5', 'Path C:\\tmp', 'a backslash'],
    ['SPECIAL_6', 'Plain', '100%_pure'],
  ] as const) {
    await client.call(products.create, { sku, name, description, price: { amount: 100, currency: 'EUR' } });
  }
  // As autovacuum leaves a table: statistics, and the GIN indexes' pending entries merged in.
  await db().query('VACUUM ANALYZE products');
});

after(async () => {
  client?.close();
  await nc?.drain();
  await service?.stop();
  await nats?.cleanup();
  await dropTestDatabases();
});

/** Every page of a listing, followed by its cursors. */
async function listAll(search: string | undefined, first = 100): Promise<Product[]> {
  const seen: Product[] = [];
  let after: string | undefined;
  do {
    const page = await client.call(products.list, { first, ...(search === undefined ? {} : { search }), ...(after ? { after } : {}) });
    seen.push(...page.items);
    after = page.nextCursor ?? undefined;
  } while (after);
  return seen;
}

/** What a search must find, worked out in JavaScript over the whole table, in the table's name-then-id order. */
async function expectedMatches(search: string): Promise<string[]> {
  const { rows } = await db().query<{ id: string; sku: string; name: string; description: string }>(
    'SELECT id, sku, name, description FROM products ORDER BY name, id',
  );
  const needle = search.trim().toLowerCase();
  return rows
    .filter((row) => [row.name, row.sku, row.description].some((text) => text.toLowerCase().includes(needle)))
    .map((row) => row.id);
}

test('search finds exactly the products holding the text anywhere, LIKE wildcards taken literally', async () => {
  const model = seededModel(12_345);
  const cases = [
    model, // one seeded product's model code, in its description
    seededSku(4321).toLowerCase(), // a sku, any case
    'SC-000123', // a sku prefix: ten products
    '50%', // only the product with a percent sign
    'a_b', // not "axb"
    '\\tmp', // a backslash
    '%_', // both wildcards, literally
  ];
  const { rows } = await db().query<{ name: string }>('SELECT name FROM products WHERE sku = $1', [seededSku(1999)]);
  cases.push(` ${rows[0]!.name} `); // a whole name, trimmed
  for (const search of cases) {
    const expected = await expectedMatches(search);
    assert.ok(expected.length > 0, `the case "${search}" finds something`);
    assert.deepEqual(
      (await listAll(search, 7)).map((product) => product.id),
      expected,
      `search "${search}"`,
    );
  }
  assert.deepEqual(await listAll('%%'), []);
  assert.deepEqual(await listAll('no such thing anywhere'), []);
});

/**
 * The plan PostgreSQL makes for the statement listProducts sends with these
 * values. A search is sent unnamed (handlers.ts), so it is planned for its
 * values each time, as here.
 */
async function planOf(options: Parameters<typeof catalogQuery>[0], client: pg.PoolClient | pg.Pool = db()): Promise<string> {
  const { text, values } = catalogQuery(options);
  const parameters = values.map((value) => pg.escapeLiteral(String(value)));
  // EXPLAIN takes no parameters: the values go in as literals.
  const literal = text.replace(/\$(\d+)/g, (_, n: string) => parameters[Number(n) - 1]!);
  const { rows } = await client.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) ${literal}`);
  return JSON.stringify(rows[0]!['QUERY PLAN']);
}

test("a search goes through the trigram index, at the planner's own choice, also on a later page", async () => {
  // The planner's default costs: no enable_seqscan = off.
  for (const options of [
    { search: seededModel(777), limit: 21 },
    { search: 'SC-00012', limit: 21, after: { name: 'M', id: randomUUID() } },
  ]) {
    const plan = await planOf(options);
    assert.match(plan, /"Index Name":"products_search_(name|sku|description)"/, JSON.stringify(options));
    assert.doesNotMatch(plan, /Seq Scan/, JSON.stringify(options));
  }

  // Without the index the same statement reads the whole table: the check above can fail.
  const client = await db().connect();
  try {
    await client.query('BEGIN');
    await client.query('DROP INDEX products_search_name, products_search_sku, products_search_description');
    assert.match(await planOf({ search: seededModel(777), limit: 21 }, client), /Seq Scan/);
  } finally {
    await client.query('ROLLBACK');
    client.release();
  }
});

test('a broad search is answered from its matches, not by walking the catalog in name order', async () => {
  assert.doesNotMatch(await planOf({ search: BROAD_WORD, limit: 21 }), /"Index Name":"products_name_id"/);
});

test('keyset pages stay whole and in order while products are added before, at and after the position', async () => {
  for (const search of [undefined, 'Teal']) {
    const { rows } = await db().query<{ id: string }>(
      `SELECT id FROM products ${search ? 'WHERE name ILIKE $1' : ''} ORDER BY name, id`,
      search ? [`%${search}%`] : [],
    );
    const before = rows.map((row) => row.id);
    const seen: Product[] = [];
    const addedAhead: string[] = [];
    let after: string | undefined;
    for (let pageNumber = 0; ; pageNumber++) {
      const page = await client.call(products.list, { first: 97, ...(search ? { search } : {}), ...(after ? { after } : {}) });
      seen.push(...page.items);
      if (!page.nextCursor) break;
      after = page.nextCursor;
      // Between two pages: one product sorting before this page's end, one just after it, one at the very end.
      const last = page.items.at(-1)!;
      // Numbered so that each page's "Zzz" sorts after the previous ones.
      const tag = `${search ?? ''} ${String(pageNumber).padStart(4, '0')} ${randomUUID().slice(0, 8)}`;
      for (const [name, ahead] of [
        [`Aaa ${tag}`, false],
        [`${last.name} ${tag}`, true],
        [`Zzz ${tag}`, true],
      ] as const) {
        const created = await client.call(products.create, {
          sku: `KS-${randomUUID().slice(0, 12)}`,
          name,
          price: { amount: 1, currency: 'EUR' },
        });
        if (ahead && (!search || name.toLowerCase().includes(search.toLowerCase()))) addedAhead.push(created.id);
      }
    }
    const ids = seen.map((product) => product.id);
    assert.equal(new Set(ids).size, ids.length, 'no product twice');
    const { rows: ordered } = await db().query<{ id: string }>('SELECT id FROM products WHERE id = ANY($1::uuid[]) ORDER BY name, id', [
      ids,
    ]);
    assert.deepEqual(
      ids,
      ordered.map((row) => row.id),
      'in name-then-id order',
    );
    const seenIds = new Set(ids);
    assert.deepEqual(
      before.filter((id) => !seenIds.has(id)),
      [],
      'every product there at the start is on a page',
    );
    const missed = addedAhead.filter((id) => !seenIds.has(id));
    assert.deepEqual(missed, [], 'products added ahead of the position are met later');
  }
});
