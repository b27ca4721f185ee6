// A process declares the requests it makes (`calls` of its ServiceDefinition,
// or of its registry entry for the BFF), and its client refuses any other:
// the declaration that docs/asyncapi.json and nats.conf's test read cannot
// drift from what the code does.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect, type NatsConnection } from 'nats';
import { PROCESSES, allOperations, customers, payments, registry } from '../subjects/index.ts';
import { createLogger, LiveRpcClient, LiveSettings, UndeclaredCallError, type RunningService } from '../services/kit/index.ts';
import { serviceDefinition } from '../services/kit/definitions.ts';
import { dropTestDatabases, startNats, startTestService, type TestNats } from './harness.ts';

let nats: TestNats;
let nc: NatsConnection;
const running: RunningService[] = [];

before(async () => {
  nats = await startNats();
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
});

after(async () => {
  for (const service of running.reverse()) await service.stop();
  await nc?.drain().catch(() => {});
  await nats?.cleanup();
  await dropTestDatabases();
});

test('every process declares its calls, each a contract of another service', async () => {
  const known = new Set(allOperations);
  for (const name of PROCESSES) {
    const entry = registry[name];
    const calls = entry.isService ? (await serviceDefinition(entry)).calls : entry.calls;
    assert.ok(Array.isArray(calls), `${name} declares its calls`);
    for (const contract of calls!) {
      assert.ok(known.has(contract), `${name} calls ${contract.subject}, a contract of subjects/`);
      assert.notEqual(contract.service, name, `${name} does not call itself (${contract.subject})`);
    }
  }
  // The order service prices its lines, checks its customer and where it ships, and holds a shipment before it cancels: the declaration says so.
  const orders = await serviceDefinition(registry.orders);
  assert.deepEqual(orders.calls?.map((contract) => contract.subject).sort(), [
    'customers.shippingAddress',
    'products.getMany',
    'shipments.hold',
  ]);
});

test("a service's client refuses a call it did not declare, and sends nothing", async () => {
  // The customer service answers customers.shippingAddress; the order service declares that call, not payments.getByOrder.
  running.push(await startTestService(await serviceDefinition(registry.customers), nats));
  const order = await startTestService(await serviceDefinition(registry.orders), nats);
  running.push(order);
  const watcher = nc.subscribe(payments.getByOrder.subject);
  await nc.flush();

  const refused = await order.context.client.call(payments.getByOrder, { orderId: randomUUID() }).then(
    () => assert.fail('an undeclared call went through'),
    (error: unknown) => error,
  );
  assert.ok(refused instanceof UndeclaredCallError, `got ${String(refused)}`);
  assert.equal(refused.process, 'orders');
  assert.equal(refused.subject, 'payments.getByOrder');
  assert.match(refused.message, /add it to the calls of orders/);

  // A declared call goes out and comes back (a typed answer of the customer service).
  await assert.rejects(order.context.client.call(customers.shippingAddress, { customerId: randomUUID() }), { code: 'CUSTOMER_NOT_FOUND' });
  await nc.flush();
  assert.equal(watcher.getProcessed(), 0, 'the refused request never reached the bus');
  watcher.unsubscribe();
});

test('a client given no declaration calls anything (tools and tests); one given an empty list calls nothing', async () => {
  const log = createLogger('calls-test', 'silent');
  const live = LiveSettings.fixed('customers', { log });
  const none = new LiveRpcClient(nc, live, {}, []);
  await assert.rejects(none.call(customers.get, { id: randomUUID() }), UndeclaredCallError);
  none.close();
  const any = new LiveRpcClient(nc, live, { timeoutMs: 200, retries: 0 });
  await assert.rejects(
    any.call(payments.getByOrder, { orderId: randomUUID() }),
    (error: unknown) => !(error instanceof UndeclaredCallError),
  );
  any.close();
});
