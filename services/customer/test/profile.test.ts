// A customer's name and shipping addresses, against a real nats-server and
// PostgreSQL: renaming emits one event per change, addresses keep exactly one
// default whenever any exists (under concurrency too), another customer's
// address is never reachable, and bad input changes nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect, type JetStreamManager, type NatsConnection } from 'nats';
import { MAX_ADDRESSES, customers, type AddressInput, type Customer } from '../../../subjects/index.ts';
import { RpcClient } from '../../kit/index.ts';
import { CustomerSettings, customerService } from '../app.ts';
import { dropTestDatabases, startNats, startTestService, waitFor, type TestNats } from '../../../test/harness.ts';
import { rawRequest, readEvents, tableFingerprint, withCode } from '../../../test/messaging.ts';

let nats: TestNats;
let nc: NatsConnection;
let jsm: JetStreamManager;
let client: RpcClient;
let running: Awaited<ReturnType<typeof startTestService>>;

const home: AddressInput = { name: 'Ann Lee', line1: '1 Main Street', city: 'Berlin', postalCode: '10115', country: 'DE' };
const work: AddressInput = { name: 'Ann Lee', line1: 'Office 4', line2: 'Floor 2', city: 'Paris', postalCode: '75001', country: 'FR' };

function register(name = 'Ann Lee'): Promise<Customer> {
  return client.call(customers.register, { email: `${randomUUID()}@shop.test`, name, password: 'correct horse' });
}

const addresses = async (customerId: string) => (await client.call(customers.listAddresses, { customerId })).items;
const defaults = async (customerId: string) => (await addresses(customerId)).filter((address) => address.isDefault).map((a) => a.id);

before(async () => {
  nats = await startNats();
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  jsm = await nc.jetstreamManager();
  client = new RpcClient(nc, { timeoutMs: 5000 });
  running = await startTestService(customerService, nats, { settings: CustomerSettings });
});

after(async () => {
  client?.close();
  await running?.stop();
  await nc?.close();
  await nats?.cleanup();
  await dropTestDatabases();
});

test('rename changes the name (trimmed) and emits customers.events.renamed once per change', async () => {
  const ann = await register();
  const renamed = await client.call(customers.rename, { id: ann.id, name: '  Ann Smith ' });
  assert.equal(renamed.name, 'Ann Smith');
  assert.deepEqual(await client.call(customers.get, { id: ann.id }), renamed);
  // The same name again is no change: no second event.
  await client.call(customers.rename, { id: ann.id, name: 'Ann Smith' });

  await waitFor(async () => (await running.outbox.backlog()) === 0, { what: 'the outbox to be published' });
  const events = (await readEvents(jsm, 'CUSTOMERS')).filter(
    (event) => event.type === customers.renamed.subject && event.data.customerId === ann.id,
  );
  assert.deepEqual(
    events.map((event) => event.data),
    [{ customerId: ann.id, name: 'Ann Smith' }],
  );

  await assert.rejects(client.call(customers.rename, { id: randomUUID(), name: 'Nobody' }), withCode('CUSTOMER_NOT_FOUND'));
  const before = await tableFingerprint(running.context.pool, 'customers');
  for (const name of ['', '   ', 'x'.repeat(201)]) {
    const reply = await rawRequest(nc, customers.rename.subject, JSON.stringify({ id: ann.id, name }));
    assert.equal(reply.code, 'VALIDATION_FAILED', JSON.stringify(name));
  }
  assert.equal(await tableFingerprint(running.context.pool, 'customers'), before);
});

test('the first address is the default; makeDefault and setDefaultAddress move it; update keeps it', async () => {
  const ann = await register();
  assert.deepEqual(await addresses(ann.id), []);
  assert.deepEqual(await client.call(customers.shippingAddress, { customerId: ann.id }), { address: null });

  const first = await client.call(customers.addAddress, { customerId: ann.id, address: { ...home, city: '  Berlin ' } });
  assert.equal(first.isDefault, true);
  assert.equal(first.city, 'Berlin');
  assert.equal(first.line2, '');
  const second = await client.call(customers.addAddress, { customerId: ann.id, address: work });
  assert.equal(second.isDefault, false);
  assert.deepEqual(await defaults(ann.id), [first.id]);
  assert.equal((await client.call(customers.shippingAddress, { customerId: ann.id })).address?.id, first.id);
  assert.equal((await client.call(customers.shippingAddress, { customerId: ann.id, addressId: second.id })).address?.id, second.id);

  const third = await client.call(customers.addAddress, { customerId: ann.id, address: home, makeDefault: true });
  assert.equal(third.isDefault, true);
  assert.deepEqual(await defaults(ann.id), [third.id]);

  const moved = await client.call(customers.setDefaultAddress, { customerId: ann.id, addressId: second.id });
  assert.equal(moved.isDefault, true);
  // Asked again, nothing changes.
  assert.deepEqual(await client.call(customers.setDefaultAddress, { customerId: ann.id, addressId: second.id }), moved);
  assert.deepEqual(
    (await addresses(ann.id)).map((address) => address.id),
    [second.id, first.id, third.id],
  );

  const updated = await client.call(customers.updateAddress, {
    customerId: ann.id,
    addressId: second.id,
    address: { ...work, line1: 'Office 5', line2: undefined },
  });
  assert.equal(updated.line1, 'Office 5');
  assert.equal(updated.line2, '');
  assert.equal(updated.isDefault, true);
});

test('removing the default hands it to the oldest address left; removing the last leaves none', async () => {
  const ann = await register();
  const a = await client.call(customers.addAddress, { customerId: ann.id, address: home });
  const b = await client.call(customers.addAddress, { customerId: ann.id, address: work });
  const c = await client.call(customers.addAddress, { customerId: ann.id, address: work, makeDefault: true });

  const left = (await client.call(customers.removeAddress, { customerId: ann.id, addressId: c.id })).items;
  assert.deepEqual(
    left.map((address) => [address.id, address.isDefault]),
    [
      [a.id, true],
      [b.id, false],
    ],
  );
  await assert.rejects(client.call(customers.removeAddress, { customerId: ann.id, addressId: c.id }), withCode('ADDRESS_NOT_FOUND'));
  await client.call(customers.removeAddress, { customerId: ann.id, addressId: b.id });
  assert.deepEqual((await client.call(customers.removeAddress, { customerId: ann.id, addressId: a.id })).items, []);
  assert.deepEqual(await client.call(customers.shippingAddress, { customerId: ann.id }), { address: null });
});

test("another customer's address is ADDRESS_NOT_FOUND everywhere, and nothing changes", async () => {
  const [ann, bob] = await Promise.all([register('Ann'), register('Bob')]);
  const bobs = await client.call(customers.addAddress, { customerId: bob.id, address: home });
  await client.call(customers.addAddress, { customerId: ann.id, address: work });
  const before = await tableFingerprint(running.context.pool, 'addresses');
  const ref = { customerId: ann.id, addressId: bobs.id };
  await assert.rejects(client.call(customers.updateAddress, { ...ref, address: work }), withCode('ADDRESS_NOT_FOUND'));
  await assert.rejects(client.call(customers.setDefaultAddress, ref), withCode('ADDRESS_NOT_FOUND'));
  await assert.rejects(client.call(customers.removeAddress, ref), withCode('ADDRESS_NOT_FOUND'));
  await assert.rejects(client.call(customers.shippingAddress, ref), withCode('ADDRESS_NOT_FOUND'));
  assert.equal(await tableFingerprint(running.context.pool, 'addresses'), before);

  const nobody = randomUUID();
  await assert.rejects(client.call(customers.listAddresses, { customerId: nobody }), withCode('CUSTOMER_NOT_FOUND'));
  await assert.rejects(client.call(customers.addAddress, { customerId: nobody, address: home }), withCode('CUSTOMER_NOT_FOUND'));
  await assert.rejects(client.call(customers.shippingAddress, { customerId: nobody }), withCode('CUSTOMER_NOT_FOUND'));
});

test('bad addresses are VALIDATION_FAILED and store nothing; a customer keeps at most the limit', async () => {
  const ann = await register();
  const before = await tableFingerprint(running.context.pool, 'addresses');
  const bad = [
    { ...home, country: 'de' },
    { ...home, country: 'DEU' },
    { ...home, name: '   ' },
    { ...home, postalCode: '' },
    { ...home, postalCode: '1'.repeat(21) },
    { ...home, extra: 1 },
  ];
  for (const address of bad) {
    const reply = await rawRequest(nc, customers.addAddress.subject, JSON.stringify({ customerId: ann.id, address }));
    assert.equal(reply.code, 'VALIDATION_FAILED', JSON.stringify(address));
  }
  assert.equal(await tableFingerprint(running.context.pool, 'addresses'), before);

  for (let i = 0; i < MAX_ADDRESSES; i++) await client.call(customers.addAddress, { customerId: ann.id, address: home });
  await assert.rejects(client.call(customers.addAddress, { customerId: ann.id, address: home }), withCode('VALIDATION_FAILED'));
  assert.equal((await addresses(ann.id)).length, MAX_ADDRESSES);
});

test('concurrent changes keep exactly one default', async () => {
  const ann = await register();
  const added = await Promise.all(
    Array.from({ length: 8 }, () => client.call(customers.addAddress, { customerId: ann.id, address: home })),
  );
  assert.equal(added.filter((address) => address.isDefault).length, 1);
  const outcomes = await Promise.allSettled([
    ...added.map((address) => client.call(customers.setDefaultAddress, { customerId: ann.id, addressId: address.id })),
    client.call(customers.removeAddress, { customerId: ann.id, addressId: added[0]!.id }),
  ]);
  // Only making the removed address the default after it went may fail.
  for (const outcome of outcomes) if (outcome.status === 'rejected') assert.ok(withCode('ADDRESS_NOT_FOUND')(outcome.reason));
  assert.equal((await defaults(ann.id)).length, 1);
  assert.equal((await addresses(ann.id)).length, 7);
});
