// The stock side of the order saga through JetStream: orders.events.* in,
// inventory.events.* out, with redeliveries, compensation and a cancellation
// that overtakes its order.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect, type JetStreamClient, type JetStreamManager, type NatsConnection } from 'nats';
import { inventory, orders, products } from '../../../subjects/index.ts';
import type { RpcClient } from '../../kit/index.ts';
import { dropTestDatabases, startNats, startTestService, waitFor, type TestNats } from '../../../test/harness.ts';
import { productService } from '../app.ts';
import {
  cancelledData,
  consumedUpTo,
  countBySubject,
  eventsOf,
  placedData,
  publishEvent,
  readEvents,
  stockOf,
  typedClient,
} from './helpers.ts';

let nats: TestNats;
let service: Awaited<ReturnType<typeof startTestService>>;
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
let client: RpcClient;

const RESERVE = 'products-reserve-stock';
const RELEASE = 'products-release-stock';
const COMMIT = 'products-commit-stock';

before(async () => {
  nats = await startNats();
  service = await startTestService(productService, nats);
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  js = nc.jetstream();
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

const db = () => service.context.pool;

async function newProduct(stock: number): Promise<string> {
  const product = await client.call(products.create, {
    sku: `EV-${randomUUID().slice(0, 8)}`,
    name: 'Event test product',
    price: { amount: 999, currency: 'EUR' },
    initialStock: stock,
  });
  return product.id;
}

/** Waits until the order has `count` events of `type` in INVENTORY, and returns them. */
async function outcomeOf(orderId: string, type: string, count = 1) {
  return waitFor(
    async () => {
      const found = eventsOf(await readEvents(jsm, 'INVENTORY'), orderId, type);
      return found.length >= count && found;
    },
    { what: `${count} ${type} for order ${orderId}` },
  );
}

/** Waits until the durable consumer has acknowledged the message at `seq`. */
function consumed(durable: string, seq: number) {
  return waitFor(() => consumedUpTo(jsm, 'ORDERS', durable, seq), { what: `${durable} to pass ${seq}` });
}

test('100 placed orders against a stock of 10: 10 reserved and 90 rejected events', async () => {
  const productId = await newProduct(10);
  const placed = Array.from({ length: 100 }, () => placedData([{ productId, quantity: 1 }]));
  const before = await countBySubject(jsm, 'INVENTORY');
  await Promise.all(placed.map((data) => publishEvent(js, orders.placed, data)));

  const counts = await waitFor(
    async () => {
      const now = await countBySubject(jsm, 'INVENTORY');
      const reserved = (now[inventory.reserved.subject] ?? 0) - (before[inventory.reserved.subject] ?? 0);
      const rejected = (now[inventory.rejected.subject] ?? 0) - (before[inventory.rejected.subject] ?? 0);
      return reserved + rejected >= 100 && { reserved, rejected };
    },
    { timeoutMs: 30_000, what: '100 inventory outcomes' },
  );
  assert.deepEqual(counts, { reserved: 10, rejected: 90 });
  assert.deepEqual(await stockOf(db(), productId), { onHand: 10, reserved: 10, available: 0 });

  const events = await readEvents(jsm, 'INVENTORY');
  const ours = new Set(placed.map((data) => data.orderId));
  const outcomes = events.filter((event) => ours.has(event.data.orderId as string));
  assert.equal(outcomes.length, 100, 'exactly one outcome per order');
  assert.equal(new Set(outcomes.map((event) => event.data.orderId)).size, 100);
  for (const event of outcomes) {
    const order = placed.find((data) => data.orderId === event.data.orderId)!;
    if (event.type === inventory.reserved.subject) {
      assert.ok(inventory.reserved.data.check(event.data));
      // The payment request rides through to the payment step.
      assert.deepEqual(event.data, {
        orderId: order.orderId,
        customerId: order.customerId,
        lines: [{ productId, quantity: 1 }],
        payment: order.payment,
      });
    } else {
      assert.ok(inventory.rejected.data.check(event.data));
      assert.deepEqual(event.data.shortages, [{ productId, requested: 1, available: 0 }]);
      assert.match(event.data.reason as string, /not enough stock/);
    }
  }
});

test('an order naming an unknown product is rejected and holds nothing', async () => {
  const productId = await newProduct(5);
  const unknown = randomUUID();
  const data = placedData([
    { productId, quantity: 1 },
    { productId: unknown, quantity: 2 },
  ]);
  await publishEvent(js, orders.placed, data);
  const [rejected] = await outcomeOf(data.orderId, inventory.rejected.subject);
  assert.deepEqual(rejected!.data.shortages, [{ productId: unknown, requested: 2, available: 0 }]);
  assert.match(rejected!.data.reason as string, /does not exist/);
  assert.deepEqual(await stockOf(db(), productId), { onHand: 5, reserved: 0, available: 5 });
});

test('a redelivered placed event reserves once, under the same or a new event id', async () => {
  const productId = await newProduct(10);
  const data = placedData([{ productId, quantity: 3 }]);
  const first = await publishEvent(js, orders.placed, data);
  await outcomeOf(data.orderId, inventory.reserved.subject);

  // The same envelope and message id: JetStream itself drops it.
  const sameId = await publishEvent(js, orders.placed, data, { id: first.envelope.id });
  assert.equal(sameId.duplicate, true);
  // The same envelope stored again (as after the duplicate window): the inbox skips it.
  const again = await publishEvent(js, orders.placed, data, { id: first.envelope.id, msgId: randomUUID() });
  assert.equal(again.duplicate, false);
  // The same order under a new event id: the reservation is keyed by order id.
  const newId = await publishEvent(js, orders.placed, data);
  await consumed(RESERVE, Math.max(again.seq, newId.seq));

  assert.deepEqual(await stockOf(db(), productId), { onHand: 10, reserved: 3, available: 7 });
  const events = eventsOf(await readEvents(jsm, 'INVENTORY'), data.orderId);
  assert.deepEqual(
    events.map((event) => event.type),
    [inventory.reserved.subject],
  );
  const { rows } = await db().query('SELECT event_id FROM inbox WHERE consumer = $1 AND event_id = ANY($2)', [
    RESERVE,
    [first.envelope.id, newId.envelope.id],
  ]);
  assert.equal(rows.length, 2, 'both event ids were handled');
});

test('a cancelled order releases its reservation and available is restored', async () => {
  const productId = await newProduct(8);
  const data = placedData([{ productId, quantity: 5 }]);
  await publishEvent(js, orders.placed, data);
  await outcomeOf(data.orderId, inventory.reserved.subject);
  assert.equal((await client.call(products.get, { id: productId })).available, 3);

  await publishEvent(js, orders.cancelled, cancelledData(data));
  const [released] = await outcomeOf(data.orderId, inventory.released.subject);
  assert.deepEqual(released!.data, {
    orderId: data.orderId,
    customerId: data.customerId,
    lines: [{ productId, quantity: 5 }],
  });
  assert.equal((await client.call(products.get, { id: productId })).available, 8);
  assert.deepEqual(await stockOf(db(), productId), { onHand: 8, reserved: 0, available: 8 });

  // A second cancellation (new event id) has nothing left to release and says nothing.
  const repeat = await publishEvent(js, orders.cancelled, cancelledData(data));
  await consumed(RELEASE, repeat.seq);
  assert.equal(eventsOf(await readEvents(jsm, 'INVENTORY'), data.orderId, inventory.released.subject).length, 1);
  assert.deepEqual(await stockOf(db(), productId), { onHand: 8, reserved: 0, available: 8 });
});

test('a cancelled order that was rejected releases nothing and emits nothing', async () => {
  const productId = await newProduct(1);
  const data = placedData([{ productId, quantity: 2 }]);
  await publishEvent(js, orders.placed, data);
  await outcomeOf(data.orderId, inventory.rejected.subject);
  const cancelled = await publishEvent(js, orders.cancelled, cancelledData(data));
  await consumed(RELEASE, cancelled.seq);
  assert.equal(eventsOf(await readEvents(jsm, 'INVENTORY'), data.orderId, inventory.released.subject).length, 0);
  assert.deepEqual(await stockOf(db(), productId), { onHand: 1, reserved: 0, available: 1 });
});

test('a confirmed order commits its stock; cancelled afterwards, its units come back', async () => {
  const productId = await newProduct(10);
  const data = placedData([{ productId, quantity: 4 }]);
  await publishEvent(js, orders.placed, data);
  await outcomeOf(data.orderId, inventory.reserved.subject);
  assert.deepEqual(await stockOf(db(), productId), { onHand: 10, reserved: 4, available: 6 });

  const confirmed = { orderId: data.orderId, customerId: data.customerId, total: { amount: 3996, currency: 'EUR' } };
  await publishEvent(js, orders.confirmed, confirmed);
  const committed = await waitFor(
    async () => {
      const stock = await stockOf(db(), productId);
      return stock.reserved === 0 && stock;
    },
    { what: 'the reservation to be committed' },
  );
  assert.deepEqual(committed, { onHand: 6, reserved: 0, available: 6 });
  // A repeated confirmation (new event id) takes nothing more.
  const repeat = await publishEvent(js, orders.confirmed, confirmed);
  await consumed(COMMIT, repeat.seq);
  assert.deepEqual(await stockOf(db(), productId), { onHand: 6, reserved: 0, available: 6 });

  await publishEvent(js, orders.cancelled, cancelledData(data, 'CONFIRMED'));
  const [released] = await outcomeOf(data.orderId, inventory.released.subject);
  assert.deepEqual(released!.data.lines, [{ productId, quantity: 4 }]);
  assert.deepEqual(await stockOf(db(), productId), { onHand: 10, reserved: 0, available: 10 });
});

test('a cancellation that arrives before its placed event leaves a tombstone; the late order is rejected', async () => {
  const productId = await newProduct(5);
  const data = placedData([{ productId, quantity: 2 }]);

  const cancelled = await publishEvent(js, orders.cancelled, cancelledData(data));
  await consumed(RELEASE, cancelled.seq);
  const { rows } = await db().query('SELECT status FROM stock_orders WHERE order_id = $1', [data.orderId]);
  assert.deepEqual(rows, [{ status: 'TOMBSTONE' }]);
  assert.equal(eventsOf(await readEvents(jsm, 'INVENTORY'), data.orderId).length, 0, 'nothing to release, nothing said');

  await publishEvent(js, orders.placed, data);
  const [rejected] = await outcomeOf(data.orderId, inventory.rejected.subject);
  assert.deepEqual(rejected!.data.shortages, []);
  assert.match(rejected!.data.reason as string, /cancelled before/);
  assert.deepEqual(await stockOf(db(), productId), { onHand: 5, reserved: 0, available: 5 });
  const held = await db().query('SELECT 1 FROM reservations WHERE order_id = $1', [data.orderId]);
  assert.equal(held.rows.length, 0);
  assert.equal(eventsOf(await readEvents(jsm, 'INVENTORY'), data.orderId, inventory.reserved.subject).length, 0);
});
