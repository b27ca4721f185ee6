// nats.conf as it is: one user per process, each allowed only the subjects
// its contracts name. A real nats-server runs this very file (passwords from
// the environment), then:
//   1. every user is checked against who sends and receives what, as
//      docs/asyncapi.json reads it from the declarations (the registry, each
//      service's emits, calls and consumers): publishing and subscribing
//      every subject of the shop, the server must refuse exactly what the
//      document does not give that user;
//   2. a service cannot publish another domain's events nor answer another
//      domain's requests, seen from the streams and from real callers;
//   3. the whole order flow still works, every process signed in as its own
//      user: an order confirmed and one cancelled, each with its email, and
//      the BFF ready (its pings and its order feed allowed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, type NatsConnection, type NatsError } from 'nats';
import {
  allEvents,
  allOperations,
  allStates,
  customers,
  notifications,
  orders,
  payments,
  products,
  streams,
  PROCESSES,
  SERVICES,
  registry,
  type ServiceName,
  type Customer,
  type Order,
  type Product,
} from '../subjects/index.ts';
import { createLogger, leaderElectedSubject, loadConfig, RpcClient, type RunningService } from '../services/kit/index.ts';
import { serviceDefinition } from '../services/kit/definitions.ts';
import { startSmtpServer, type TestSmtpServer } from '../services/notification/test/smtp.ts';
import { BffSettings, build, type Bff } from '../bff/app.ts';
import { countBySubject, withCode } from './messaging.ts';
import { ROOT, dropTestDatabases, natsCredentials, startNats, startTestService, waitFor, type NatsUser, type TestNats } from './harness.ts';

// --- What the code says each process does (docs/asyncapi.json, kept current by asyncapi.test.ts) ---

interface Operation {
  action: 'send' | 'receive';
  channel: { $ref: string };
  'x-service': string;
  'x-durable'?: string;
}

const document = JSON.parse(await readFile(join(ROOT, 'docs', 'asyncapi.json'), 'utf8')) as {
  operations: Record<string, Operation>;
};
const operations = Object.values(document.operations).map((operation) => ({
  process: operation['x-service'],
  action: operation.action,
  channel: operation.channel.$ref.split('/').pop()!,
  durable: operation['x-durable'],
}));

const rpcSubjects = allOperations.map((operation) => operation.subject);
const eventSubjects = allEvents.map((event) => event.subject);
const streamOf = new Map(allEvents.map((event) => [event.subject, event.stream]));

/** Every durable consumer of the shop: its owner, stream and filter. */
const durables = operations
  .filter((operation) => operation.durable)
  .map((operation) => ({
    process: operation.process,
    name: operation.durable!,
    filter: operation.channel,
    stream: streamOf.get(operation.channel)!,
  }));

function consumerSubjects(durable: { stream: string; name: string; filter: string }): string[] {
  return [
    `dlq.${durable.stream}.${durable.name}`,
    `$JS.API.CONSUMER.INFO.${durable.stream}.${durable.name}`,
    `$JS.API.CONSUMER.CREATE.${durable.stream}.${durable.name}.${durable.filter}`,
    `$JS.API.CONSUMER.MSG.NEXT.${durable.stream}.${durable.name}`,
    `$JS.ACK.${durable.stream}.${durable.name}.1.1.1.1.0`,
  ];
}

/** The streams a process writes to or reads from (services: plus DLQ). */
function streamsOf(process: string): Set<string> {
  const touched = new Set<string>();
  for (const operation of operations) {
    const stream = streamOf.get(operation.channel);
    if (operation.process === process && stream) touched.add(stream);
  }
  if (process !== 'bff') touched.add(streams.DLQ.name);
  return touched;
}

const domainStreams = Object.values(streams).map((stream) => stream.name);

/** Every subject the check publishes to, and whether `process` may. */
function expectedPublish(process: string): Map<string, boolean> {
  const mine = (action: string) => new Set(operations.filter((o) => o.process === process && o.action === action).map((o) => o.channel));
  const sends = mine('send');
  const expected = new Map<string, boolean>();
  for (const subject of [...rpcSubjects, ...eventSubjects]) expected.set(subject, sends.has(subject));
  for (const durable of durables) {
    for (const subject of consumerSubjects(durable)) expected.set(subject, durable.process === process);
    // Nobody deletes a durable but an operator.
    expected.set(`$JS.API.CONSUMER.DELETE.${durable.stream}.${durable.name}`, false);
  }
  const touched = streamsOf(process);
  for (const stream of domainStreams) {
    expected.set(`$JS.API.STREAM.UPDATE.${stream}`, touched.has(stream));
    expected.set(`$JS.API.STREAM.DELETE.${stream}`, false);
    expected.set(`$JS.API.STREAM.PURGE.${stream}`, false);
  }
  // Live settings: every process reads them, only operators write.
  expected.set('$JS.API.STREAM.INFO.KV_config', true);
  expected.set('$KV.config.orders.deadline_ms', false);
  expected.set('$JS.API.STREAM.PURGE.KV_config', false);
  // State buckets: the owner puts items, the BFF follows; only operators delete.
  for (const state of allStates) {
    const stream = `KV_${state.bucket}`;
    expected.set(`$KV.${state.bucket}.${randomUUID()}`, process === state.owner);
    expected.set(`$JS.API.STREAM.INFO.${stream}`, process === state.owner || process === 'bff');
    // The owner's relay reads a key's last message before a conditional put (kv.get: a direct get when the bucket allows it).
    expected.set(`$JS.API.STREAM.MSG.GET.${stream}`, process === state.owner);
    expected.set(`$JS.API.DIRECT.GET.${stream}.$KV.${state.bucket}.${randomUUID()}`, process === state.owner);
    expected.set(`$JS.API.CONSUMER.MSG.NEXT.${stream}.reader`, process === 'bff');
    expected.set(`$JS.API.STREAM.PURGE.${stream}`, false);
    expected.set(`$JS.API.STREAM.DELETE.${stream}`, false);
  }
  // The BFF's /health/ready pings every service.
  expected.set('$SRV.PING', process === 'bff');
  return expected;
}

/** Every subject the check subscribes to, and whether `process` may. */
function expectedSubscribe(process: string): Map<string, boolean> {
  const receives = new Set(operations.filter((o) => o.process === process && o.action === 'receive').map((o) => o.channel));
  const expected = new Map<string, boolean>();
  for (const subject of rpcSubjects) expected.set(subject, receives.has(subject));
  // Events reach a process through its JetStream consumers, never a plain subscription.
  for (const subject of eventSubjects) expected.set(subject, false);
  for (const name of SERVICES) expected.set(`$SRV.PING.${name}`, name === process);
  // A new leader of a durable consumer: heard by its owner alone.
  for (const durable of durables) expected.set(leaderElectedSubject(durable.stream, durable.name), durable.process === process);
  expected.set('_INBOX.permissions-check', true);
  return expected;
}

// --- The world ---------------------------------------------------------------------------------

let nats: TestNats;
let smtp: TestSmtpServer;
const running = new Map<ServiceName, RunningService>();
const connections: NatsConnection[] = [];
let bffNc: NatsConnection;
let bff: Bff;
let client: RpcClient;

/** Environment of one service beyond the common one. */
const serviceEnv: Partial<Record<ServiceName, () => Record<string, string>>> = {
  notifications: () => ({ SMTP_HOST: '127.0.0.1', SMTP_PORT: String(smtp.port), NOTIFY_RETRY_BASE_MS: '50' }),
};

/** A connection signed in as `user`, recording every permission error the server sends it. */
async function connectAs(user: NatsUser): Promise<{ nc: NatsConnection; refused: { operation: string; subject: string }[] }> {
  const { NATS_USER, NATS_PASSWORD } = natsCredentials(user);
  const nc = await connect({ servers: nats.url, user: NATS_USER, pass: NATS_PASSWORD, noAsyncTraces: true });
  connections.push(nc);
  const refused: { operation: string; subject: string }[] = [];
  void (async () => {
    for await (const status of nc.status()) {
      const context = (status as { permissionContext?: { operation: string; subject: string } }).permissionContext;
      if (context) refused.push({ operation: context.operation, subject: context.subject });
    }
  })();
  return { nc, refused };
}

/** Permission errors the processes of the flow got: none is expected. */
const flowRefusals: string[] = [];
function watchRefusals(process: string, nc: NatsConnection): void {
  void (async () => {
    for await (const status of nc.status()) {
      const context = (status as { permissionContext?: { operation: string; subject: string } }).permissionContext;
      if (context) flowRefusals.push(`${process}: ${context.operation} ${context.subject}`);
    }
  })();
}

before(async () => {
  nats = await startNats({ users: true });
  smtp = await startSmtpServer();
});

after(async () => {
  await bff?.close();
  client?.close();
  for (const nc of connections) await nc.drain().catch(() => {});
  await bffNc?.drain().catch(() => {});
  for (const service of [...running.values()].reverse()) await service.stop();
  await smtp?.close();
  await nats?.cleanup();
  await dropTestDatabases();
});

test('the server runs nats.conf as it is: no credentials, no entry', async () => {
  await assert.rejects(connect({ servers: nats.url, noAsyncTraces: true, reconnect: false }), /authorization/i);
  const { NATS_PASSWORD } = natsCredentials('orders');
  await assert.rejects(
    connect({ servers: nats.url, user: 'orders', pass: `${NATS_PASSWORD}-wrong`, noAsyncTraces: true, reconnect: false }),
    /authorization/i,
  );
});

// Runs before any service starts, so nothing listens and no stream exists: a
// publish that is let through changes nothing.
test('every user may publish and subscribe exactly what its contracts name', async () => {
  assert.ok(durables.length >= 10, 'the document names the durable consumers');
  const problems: string[] = [];
  for (const process of PROCESSES) {
    const { nc, refused } = await connectAs(process);
    const publish = expectedPublish(process);
    const subscribe = expectedSubscribe(process);
    for (const subject of publish.keys()) nc.publish(subject);
    for (const subject of subscribe.keys()) nc.subscribe(subject);
    // The server answers in order: once the refusal of a last, forbidden
    // publish has arrived, every refusal before it has too.
    const sentinel = `permissions-check.${process}`;
    nc.publish(sentinel);
    await waitFor(() => refused.some((r) => r.subject === sentinel), { what: `the refusals for ${process}` });
    const refusedPublish = new Set(refused.filter((r) => r.operation === 'publish').map((r) => r.subject));
    const refusedSubscribe = new Set(refused.filter((r) => r.operation === 'subscription').map((r) => r.subject));
    for (const [subject, allowed] of publish) {
      if (allowed === refusedPublish.has(subject)) problems.push(`${process} ${allowed ? 'cannot' : 'can'} publish ${subject}`);
    }
    for (const [subject, allowed] of subscribe) {
      if (allowed === refusedSubscribe.has(subject)) problems.push(`${process} ${allowed ? 'cannot' : 'can'} subscribe ${subject}`);
    }
  }
  assert.deepEqual(problems, [], `nats.conf disagrees with docs/asyncapi.json:\n  ${problems.join('\n  ')}`);
});

test('the whole order flow works with every process signed in as its own user', async () => {
  for (const name of SERVICES) {
    const service = await startTestService(await serviceDefinition(registry[name]), nats, {
      env: { ...natsCredentials(registry[name].natsUser), RPC_TIMEOUT_MS: '5000', ...serviceEnv[name]?.() },
    });
    running.set(name, service);
    watchRefusals(name, service.context.nc);
  }
  const bffSettings = loadConfig(BffSettings, {
    NATS_URL: nats.url,
    ...natsCredentials('bff'),
    JWT_SECRET: 'permissions-test-secret-0123456789-abcdef',
    BFF_PORT: '0',
    // The BFF's log level follows its live setting, whose start value is LOG_LEVEL: quiet, like the logger.
    LOG_LEVEL: 'silent',
  });
  bffNc = await connect({ servers: nats.url, user: bffSettings.NATS_USER, pass: bffSettings.NATS_PASSWORD, noAsyncTraces: true });
  watchRefusals('bff', bffNc);
  bff = await build({ nc: bffNc, log: createLogger('bff', 'silent'), settings: bffSettings });
  await bff.ready();
  // Ready means: NATS, the order feed (an ORDERS consumer of its own) and a ping answered by every service.
  const ready = await waitFor(
    async () => {
      const response = await bff.inject({ method: 'GET', url: '/health/ready' });
      return response.statusCode === 200 ? response.json<{ status: string }>() : undefined;
    },
    { timeoutMs: 15_000, what: 'the BFF to be ready' },
  );
  assert.equal(ready.status, 'ready');

  client = new RpcClient(bffNc, { timeoutMs: 5000 });
  const customer: Customer = await client.call(customers.register, {
    email: `${randomUUID()}@example.com`,
    name: 'Ada',
    password: 'correct horse battery',
  });
  const product: Product = await client.call(products.create, {
    sku: `PERM-${randomUUID().slice(0, 8)}`,
    name: 'Lamp',
    price: { amount: 2500, currency: 'EUR' },
    initialStock: 5,
  });
  const place = (paymentToken: string): Promise<Order> =>
    client.call(orders.place, {
      idempotencyKey: randomUUID(),
      customerId: customer.id,
      lines: [{ productId: product.id, quantity: 1 }],
      paymentToken,
    });
  const settled = (id: string) =>
    waitFor(
      async () => {
        const order = await client.call(orders.get, { id });
        return order.status === 'PENDING' ? undefined : order;
      },
      { timeoutMs: 20_000, what: `order ${id} to settle` },
    );

  const confirmed = await settled((await place('tok_visa')).id);
  assert.equal(confirmed.status, 'CONFIRMED');
  const declined = await settled((await place('tok_decline')).id);
  assert.equal(declined.status, 'CANCELLED');
  assert.equal((await client.call(payments.getByOrders, { orderIds: [declined.id] })).payments[0]?.status, 'DECLINED');

  // One email per outcome, sent and recorded.
  await waitFor(() => smtp.mailsTo(customer.email).length >= 2 || undefined, { what: 'two emails' });
  const sent = await waitFor(
    async () => {
      const { lists } = await client.call(notifications.listByOrders, {
        orders: [confirmed, declined].map((order) => ({ orderId: order.id, customerId: customer.id })),
      });
      const items = lists.flat();
      return items.length === 2 && items.every((item) => item.status === 'SENT') ? items : undefined;
    },
    { what: 'both notifications recorded as SENT' },
  );
  assert.equal(sent.length, 2);
  // Stock: the confirmed order took one unit, the cancelled one gave its unit back.
  assert.equal((await client.call(products.get, { id: product.id })).available, 4);
  // And nothing any process did on the way was refused (a quiet failure, e.g. an ack or a watch).
  assert.deepEqual(flowRefusals, []);
});

test("a service cannot publish another domain's events", async () => {
  const { nc, refused } = await connectAs('orders');
  const jsm = await nc.jetstreamManager();
  const before = await countBySubject(jsm, streams.PAYMENTS.name);
  const forged = JSON.stringify({ id: randomUUID(), type: 'payments.events.captured', occurredAt: new Date().toISOString(), data: {} });
  // Through JetStream: the server refuses the publish and the request fails.
  await assert.rejects(nc.jetstream().publish(payments.captured.subject, Buffer.from(forged), { timeout: 2000 }), (error: NatsError) =>
    /permission/i.test(error.message),
  );
  // As a plain publish: refused too.
  nc.publish(payments.captured.subject, Buffer.from(forged));
  await waitFor(() => refused.some((r) => r.operation === 'publish' && r.subject === payments.captured.subject), {
    what: 'the plain publish refused',
  });
  // Nothing landed in the payments' stream, while its own events still go through.
  assert.deepEqual(await countBySubject(jsm, streams.PAYMENTS.name), before);
  assert.ok(expectedPublish('orders').get(orders.placed.subject), 'orders may publish its own events');
});

test("a service cannot answer another domain's requests", async () => {
  const { nc, refused } = await connectAs('orders');
  // An impostor micro service "payments" on the orders user: its endpoint subscription is refused.
  let impostorCalls = 0;
  const impostor = await nc.services.add({ name: 'payments', version: '0.0.1', queue: 'payments' });
  impostor.addEndpoint('getByOrders', {
    subject: payments.getByOrders.subject,
    handler: (_error, msg) => {
      impostorCalls++;
      msg.respond(Buffer.from(JSON.stringify({ forged: true })));
    },
  });
  // A plain subscription, outside any queue group, is refused as well.
  const listener = nc.subscribe(customers.get.subject);
  await nc.flush();
  await waitFor(
    () =>
      refused.some((r) => r.operation === 'subscription' && r.subject === payments.getByOrders.subject) &&
      refused.some((r) => r.operation === 'subscription' && r.subject === customers.get.subject),
    { what: 'both subscriptions refused' },
  );
  // Callers keep getting the real services' answers.
  for (let i = 0; i < 20; i++) {
    assert.deepEqual((await client.call(payments.getByOrders, { orderIds: [randomUUID()] })).payments, [null]);
  }
  await assert.rejects(client.call(customers.get, { id: randomUUID() }), withCode('CUSTOMER_NOT_FOUND'));
  assert.equal(impostorCalls, 0);
  assert.equal(listener.getProcessed(), 0);
  await impostor.stop().catch(() => {});
});
