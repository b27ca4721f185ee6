// The customer service in this process against a real nats-server and a
// fresh PostgreSQL database: accounts, authentication, lookups, its event,
// and bad input refused without a trace.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type JetStreamManager, type NatsConnection, type StoredMsg } from 'nats';
import { customers, type Customer, type Envelope } from '../../../subjects/index.ts';
import { RpcClient, ServiceError } from '../../kit/index.ts';
import { CustomerSettings, customerService } from '../app.ts';
import { dropTestDatabases, startNats, startTestService, waitFor, type TestNats } from '../../../test/harness.ts';
import { tableFingerprint } from '../../../test/messaging.ts';

let nats: TestNats;
let nc: NatsConnection;
let jsm: JetStreamManager;
let client: RpcClient;
let running: Awaited<ReturnType<typeof startTestService>>;

const UNKNOWN_ID = '00000000-0000-4000-8000-00000000beef';
// The public view: never the password or its hash; the version orders its states for read models.
const CUSTOMER_KEYS = ['createdAt', 'email', 'id', 'name', 'role', 'version'];

let serial = 0;
function newEmail(prefix = 'user'): string {
  serial++;
  return `${prefix}${serial}.${process.pid}@shop.test`;
}

function register(email: string, name = 'Ann Lee', password = 'correct horse') {
  return client.call(customers.register, { email, name, password });
}

async function rejection(promise: Promise<unknown>): Promise<ServiceError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ServiceError, `a ServiceError, not ${String(error)}`);
    return error;
  }
  assert.fail('expected the call to fail');
}

async function rowsByEmail(email: string): Promise<{ id: string; email: string; role: string; password_hash: string }[]> {
  const { rows } = await running.context.pool.query('SELECT id, email, role, password_hash FROM customers WHERE email = $1', [email]);
  return rows;
}

type Registered = Envelope<{ customerId: string; email: string; name: string }>;

/** Every `customers.events.registered` now in CUSTOMERS, with its stored headers. */
async function registeredEvents(): Promise<{ message: StoredMsg; event: Registered }[]> {
  const { state } = await jsm.streams.info('CUSTOMERS');
  const found: { message: StoredMsg; event: Registered }[] = [];
  if (state.messages === 0) return found;
  for (let seq = state.first_seq; seq <= state.last_seq; seq++) {
    const message = await jsm.streams.getMessage('CUSTOMERS', { seq });
    if (message.subject === customers.registered.subject) found.push({ message, event: message.json<Registered>() });
  }
  return found;
}

/** Waits until the event of `customerId` is on the bus and the outbox holds nothing more. */
async function eventsPublished(...customerIds: string[]): Promise<void> {
  await waitFor(
    async () => {
      if ((await running.outbox.backlog()) > 0) return false;
      const events = await registeredEvents();
      return customerIds.every((id) => events.some((e) => e.event.data.customerId === id));
    },
    { what: 'the registered events' },
  );
}

before(async () => {
  nats = await startNats();
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  jsm = await nc.jetstreamManager();
  client = new RpcClient(nc, { timeoutMs: 5000 });
  running = await startTestService(customerService, nats, {
    settings: CustomerSettings,
    env: { ADMIN_EMAILS: ' Boss@Shop.Test ,ops@shop.test' },
  });
});

after(async () => {
  client?.close();
  await running?.stop();
  await nc?.close();
  await nats?.cleanup();
  await dropTestDatabases();
});

test('register creates a customer and returns it without any password', async () => {
  const email = newEmail();
  const customer = await register(email, '  Ann Lee ');
  assert.deepEqual(Object.keys(customer).sort(), CUSTOMER_KEYS);
  assert.equal(customer.email, email);
  assert.equal(customer.name, 'Ann Lee');
  assert.equal(customer.role, 'customer');
  assert.ok(Date.parse(customer.createdAt) > 0);
  assert.doesNotMatch(JSON.stringify(customer), /correct horse|scrypt/);
});

test('the password is stored as a salted scrypt hash, never as given', async () => {
  const password = 'the same password';
  const [a, b] = [newEmail(), newEmail()];
  await register(a, 'A', password);
  await register(b, 'B', password);
  const [rowA] = await rowsByEmail(a);
  const [rowB] = await rowsByEmail(b);
  assert.ok(rowA && rowB);
  for (const row of [rowA, rowB]) {
    assert.match(row.password_hash, /^scrypt\$16384\$8\$1\$[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]+=*$/);
    assert.ok(!row.password_hash.includes(password));
  }
  // A salt of its own: the same password hashes differently.
  assert.notEqual(rowA.password_hash, rowB.password_hash);
});

test('get and getMany return customers without passwords, in the order asked', async () => {
  const first = await register(newEmail());
  const second = await register(newEmail(), 'Bo');
  const got = await client.call(customers.get, { id: second.id });
  assert.deepEqual(got, second);
  assert.deepEqual(Object.keys(got).sort(), CUSTOMER_KEYS);

  const many = await client.call(customers.getMany, { ids: [second.id, UNKNOWN_ID, first.id] });
  assert.deepEqual(many, { customers: [second, null, first] });
  assert.deepEqual(await client.call(customers.getMany, { ids: [] }), { customers: [] });
});

test('get of an unknown id is CUSTOMER_NOT_FOUND', async () => {
  const error = await rejection(client.call(customers.get, { id: UNKNOWN_ID }));
  assert.equal(error.code, 'CUSTOMER_NOT_FOUND');
  assert.equal(error.status, 404);
});

test('authenticate accepts the right password, in any case of the email', async () => {
  const email = newEmail('Mixed.Case');
  const registered = await register(email, 'Cy', 'open sesame');
  assert.equal(registered.email, email.toLowerCase());
  const authenticated = await client.call(customers.authenticate, { email: email.toUpperCase(), password: 'open sesame' });
  assert.deepEqual(authenticated, registered);
  assert.deepEqual(Object.keys(authenticated).sort(), CUSTOMER_KEYS);
});

test('a wrong password and an unknown email are both INVALID_CREDENTIALS, told apart by nothing', async () => {
  const email = newEmail();
  await register(email, 'Di', 'open sesame');
  const wrong = await rejection(client.call(customers.authenticate, { email, password: 'open sesam' }));
  const unknown = await rejection(client.call(customers.authenticate, { email: newEmail('nobody'), password: 'open sesame' }));
  for (const error of [wrong, unknown]) {
    assert.equal(error.code, 'INVALID_CREDENTIALS');
    assert.equal(error.status, 401);
  }
  assert.equal(wrong.message, unknown.message);
});

test('a taken email, in any case, is EMAIL_TAKEN and writes no row and no event', async () => {
  const email = newEmail('dup');
  const original = await register(email);
  for (const again of [email, email.toUpperCase(), email.replace('dup', 'DUP')]) {
    const error = await rejection(register(again, 'Someone Else', 'another password'));
    assert.equal(error.code, 'EMAIL_TAKEN');
    assert.equal(error.status, 409);
  }
  const rows = await rowsByEmail(email);
  assert.deepEqual(
    rows.map((r) => r.id),
    [original.id],
  );
  // A later registration's event on the bus means any event of the refused ones would be too.
  const marker = await register(newEmail());
  await eventsPublished(original.id, marker.id);
  const forEmail = (await registeredEvents()).filter((e) => e.event.data.email === email);
  assert.equal(forEmail.length, 1);
  assert.equal(forEmail[0]!.event.data.customerId, original.id);
});

test('concurrent registrations of one email: exactly one account', async () => {
  const email = newEmail('race');
  const results = await Promise.allSettled(Array.from({ length: 6 }, (_, i) => register(email, `Racer ${i}`)));
  const won = results.filter((r) => r.status === 'fulfilled');
  const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  assert.equal(won.length, 1);
  for (const r of lost) assert.equal((r.reason as ServiceError).code, 'EMAIL_TAKEN');
  assert.equal((await rowsByEmail(email)).length, 1);
});

test('customers.events.registered reaches CUSTOMERS exactly once per registration', async () => {
  const made: Customer[] = [];
  for (let i = 0; i < 3; i++) made.push(await register(newEmail('event'), `Evan ${i}`));
  await eventsPublished(...made.map((c) => c.id));
  const events = await registeredEvents();
  for (const customer of made) {
    const mine = events.filter((e) => e.event.data.customerId === customer.id);
    assert.equal(mine.length, 1, `one event for ${customer.email}`);
    const { message, event } = mine[0]!;
    assert.equal(event.type, 'customers.events.registered');
    assert.deepEqual(event.data, { customerId: customer.id, email: customer.email, name: customer.name });
    assert.equal(message.header.get('Nats-Msg-Id'), event.id);
    assert.doesNotMatch(message.string(), /scrypt|correct horse/);
  }
  // Every event id on the stream is distinct.
  const ids = events.map((e) => e.event.id);
  assert.equal(new Set(ids).size, ids.length);
});

test('an email listed in ADMIN_EMAILS registers as admin, in any case', async () => {
  const boss = await register('BOSS@shop.test', 'The Boss');
  assert.equal(boss.role, 'admin');
  assert.equal(boss.email, 'boss@shop.test');
  assert.equal((await rowsByEmail('boss@shop.test'))[0]?.role, 'admin');
  assert.equal((await register('ops@shop.test', 'Ops')).role, 'admin');
  assert.equal((await register(newEmail('notboss'), 'Not The Boss')).role, 'customer');
});

test('bad input is VALIDATION_FAILED and changes nothing', async () => {
  const email = newEmail('bad');
  const before = await tableFingerprint(running.context.pool, 'customers');
  // Caught by the client before sending.
  const short = await rejection(register(email, 'Eve', 'short'));
  assert.equal(short.code, 'VALIDATION_FAILED');
  // Sent anyway, past the client: the service refuses it too.
  const raw = await nc.request('customers.register', Buffer.from(JSON.stringify({ email, name: 'Eve', password: 'short' })), {
    timeout: 5000,
  });
  assert.equal(raw.headers?.get('Nats-Service-Error-Code'), '400');
  assert.equal(raw.headers?.get('Shop-Error-Code'), 'VALIDATION_FAILED');
  const blank = await rejection(register(email, '   '));
  assert.equal(blank.code, 'VALIDATION_FAILED');
  const unknownField = await nc.request(
    'customers.register',
    Buffer.from(JSON.stringify({ email, name: 'Eve', password: 'long enough', role: 'admin' })),
    { timeout: 5000 },
  );
  assert.equal(unknownField.headers?.get('Shop-Error-Code'), 'VALIDATION_FAILED');
  assert.deepEqual(await rowsByEmail(email), []);
  assert.equal(await tableFingerprint(running.context.pool, 'customers'), before);
});
