// Product management against a real NATS server and a fresh database:
// products.update and products.archive, each with its event in PRODUCTS,
// repeats that change nothing, and bad input refused without a trace.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect, type JetStreamManager, type NatsConnection } from 'nats';
import { products } from '../../../subjects/index.ts';
import type { RpcClient } from '../../kit/index.ts';
import { dropTestDatabases, startNats, startTestService, waitFor, type TestNats } from '../../../test/harness.ts';
import { productService } from '../app.ts';
import { rawRequest, readEvents, tableFingerprint, typedClient, withCode } from './helpers.ts';

let nats: TestNats;
let service: Awaited<ReturnType<typeof startTestService>>;
let nc: NatsConnection;
let jsm: JetStreamManager;
let client: RpcClient;

before(async () => {
  nats = await startNats();
  service = await startTestService(productService, nats);
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  jsm = await nc.jetstreamManager();
  client = typedClient(nc);
});

after(async () => {
  client?.close();
  await nc?.drain();
  await service?.stop();
  await nats?.cleanup();
  await dropTestDatabases();
});

const tag = () => randomUUID().slice(0, 8);
const create = (name = `Thing ${tag()}`) =>
  client.call(products.create, { sku: `SKU-${tag()}`, name, price: { amount: 1250, currency: 'EUR' }, initialStock: 5 });

/** The events of one product in PRODUCTS, once the outbox has published everything. */
async function eventsOf(productId: string) {
  await waitFor(async () => (await service.outbox.backlog()) === 0, { what: 'the outbox to be published' });
  return (await readEvents(jsm, 'PRODUCTS')).filter((event) => event.data.productId === productId);
}

test('update changes name, description and price, and emits products.events.updated once per change', async () => {
  const mug = await create('Blue mug');
  const renamed = await client.call(products.update, { id: mug.id, name: '  Big blue mug ', description: 'Holds more.' });
  assert.equal(renamed.name, 'Big blue mug');
  assert.equal(renamed.description, 'Holds more.');
  assert.deepEqual(renamed.price, mug.price);
  assert.equal(renamed.available, 5);
  const repriced = await client.call(products.update, { id: mug.id, price: { amount: 1500, currency: 'EUR' } });
  assert.deepEqual(repriced.price, { amount: 1500, currency: 'EUR' });
  assert.equal(repriced.name, 'Big blue mug');
  // The same values again: no change, no event.
  assert.deepEqual(
    await client.call(products.update, { id: mug.id, name: 'Big blue mug', price: { amount: 1500, currency: 'EUR' } }),
    repriced,
  );
  assert.deepEqual(await client.call(products.get, { id: mug.id }), repriced);

  const events = await eventsOf(mug.id);
  assert.deepEqual(
    events.map((event) => [event.type, event.data]),
    [
      [
        products.updated.subject,
        {
          productId: mug.id,
          sku: mug.sku,
          name: 'Big blue mug',
          description: 'Holds more.',
          price: { amount: 1250, currency: 'EUR' },
          previousPrice: { amount: 1250, currency: 'EUR' },
        },
      ],
      [
        products.updated.subject,
        {
          productId: mug.id,
          sku: mug.sku,
          name: 'Big blue mug',
          description: 'Holds more.',
          price: { amount: 1500, currency: 'EUR' },
          previousPrice: { amount: 1250, currency: 'EUR' },
        },
      ],
    ],
  );
});

test('archive takes a product off the list, keeps it for get and getMany, and emits products.events.archived once', async () => {
  const name = `Archived ${tag()}`;
  const lamp = await create(name);
  const listed = async () => (await client.call(products.list, { search: name })).items.map((item) => item.id);
  assert.deepEqual(await listed(), [lamp.id]);

  const archived = await client.call(products.archive, { id: lamp.id });
  assert.ok(archived.archivedAt && Date.parse(archived.archivedAt) > 0);
  assert.deepEqual(await client.call(products.archive, { id: lamp.id }), archived, 'archiving again changes nothing');
  assert.deepEqual(await listed(), []);
  assert.deepEqual(await client.call(products.get, { id: lamp.id }), archived);
  assert.deepEqual((await client.call(products.getMany, { ids: [lamp.id] })).products, [archived]);
  // A product for sale carries no archivedAt at all.
  assert.equal('archivedAt' in (await create()), false);

  await assert.rejects(client.call(products.update, { id: lamp.id, name: 'Lamp' }), withCode('PRODUCT_ARCHIVED'));
  const events = await eventsOf(lamp.id);
  assert.deepEqual(
    events.map((event) => [event.type, event.data]),
    [[products.archived.subject, { productId: lamp.id, sku: lamp.sku, archivedAt: archived.archivedAt }]],
  );
});

test('unknown products are PRODUCT_NOT_FOUND; bad or empty updates are VALIDATION_FAILED and change nothing', async () => {
  await assert.rejects(client.call(products.update, { id: randomUUID(), name: 'Nothing' }), withCode('PRODUCT_NOT_FOUND'));
  await assert.rejects(client.call(products.archive, { id: randomUUID() }), withCode('PRODUCT_NOT_FOUND'));

  const pen = await create();
  const before = await tableFingerprint(service.context.pool, 'products');
  for (const request of [
    { id: pen.id },
    { id: pen.id, name: '   ' },
    { id: pen.id, name: 'x'.repeat(201) },
    { id: pen.id, price: { amount: -1, currency: 'EUR' } },
    { id: pen.id, price: { amount: 100, currency: 'euro' } },
    { id: pen.id, sku: 'NEW-SKU' },
  ]) {
    const reply = await rawRequest(nc, products.update.subject, JSON.stringify(request));
    assert.equal(reply.code, 'VALIDATION_FAILED', JSON.stringify(request));
  }
  assert.equal(await tableFingerprint(service.context.pool, 'products'), before);
  assert.deepEqual(await eventsOf(pen.id), []);
});
