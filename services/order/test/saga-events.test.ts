// The saga's outcomes, published straight into JetStream as the product and
// payment services would: each moves a PENDING order once; duplicates and late
// events after a final state change nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { inventory, orders, payments, type Customer, type Order, type Product } from '../../../subjects/index.ts';
import { headers as natsHeaders } from 'nats';
import { withCode } from '../../../test/messaging.ts';
import { waitFor } from '../../../test/harness.ts';
import { startTracing, stopTracing } from '../../kit/index.ts';
import {
  createProduct,
  envelopeOf,
  placeOrder,
  publishAndSettle,
  registerCustomer,
  startWorld,
  streamEvents,
  waitForStatus,
  type World,
} from './fixtures.ts';

const CAPTURED = 'orders-payments-captured';
const DECLINED = 'orders-payments-declined';
const REJECTED = 'orders-inventory-rejected';

let world: World;
let ada: Customer;
let pen: Product;

before(async () => {
  // Trace context is carried (not exported), as in a service's process.
  startTracing('orders-test');
  world = await startWorld();
  ada = await registerCustomer(world.client);
  pen = await createProduct(world.client, { amount: 1250, currency: 'EUR' }, 1_000_000);
});

after(async () => {
  await world?.stop();
  await stopTracing();
});

function paymentOf(order: Order) {
  return { paymentId: randomUUID(), orderId: order.id, customerId: order.customerId, amount: order.total };
}

async function eventsOf(orderId: string) {
  const [confirmed, cancelled] = await Promise.all([
    streamEvents(world, orders.confirmed, (data) => data.orderId === orderId),
    streamEvents(world, orders.cancelled, (data) => data.orderId === orderId),
  ]);
  return { confirmed, cancelled };
}

test('payments.events.captured confirms a pending order and emits orders.events.confirmed', async () => {
  const order = await placeOrder(world, ada.id, [pen.id]);
  await publishAndSettle(world, payments.captured, envelopeOf(payments.captured, paymentOf(order)), CAPTURED);

  const confirmed = await waitForStatus(world, order.id, 'CONFIRMED');
  assert.deepEqual(
    confirmed.history.map((entry) => entry.status),
    ['PENDING', 'CONFIRMED'],
  );
  assert.ok(Date.parse(confirmed.history[1]!.at) >= Date.parse(confirmed.history[0]!.at));
  const { confirmed: events } = await eventsOf(order.id);
  assert.equal(events.length, 1);
  assert.deepEqual(events[0]!.data, { orderId: order.id, customerId: ada.id, total: order.total });
});

test('a duplicate capture, under the same or another event id, changes nothing', async () => {
  const order = await placeOrder(world, ada.id, [pen.id]);
  const capture = envelopeOf(payments.captured, paymentOf(order));
  await publishAndSettle(world, payments.captured, capture, CAPTURED);
  const first = await waitForStatus(world, order.id, 'CONFIRMED');

  // The same envelope again (a new Nats-Msg-Id gets it past JetStream's duplicate window): the inbox skips it.
  await publishAndSettle(world, payments.captured, capture, CAPTURED, randomUUID());
  // A different event for the same capture: the status guard skips it.
  await publishAndSettle(world, payments.captured, envelopeOf(payments.captured, paymentOf(order)), CAPTURED);

  assert.deepEqual(await world.client.call(orders.get, { id: order.id }), first);
  assert.equal((await eventsOf(order.id)).confirmed.length, 1);
});

test('payments.events.declined cancels with PAYMENT_DECLINED; a late capture leaves it cancelled', async () => {
  const order = await placeOrder(world, ada.id, [pen.id]);
  await publishAndSettle(
    world,
    payments.declined,
    envelopeOf(payments.declined, { ...paymentOf(order), reason: 'card declined' }),
    DECLINED,
  );
  const cancelled = await waitForStatus(world, order.id, 'CANCELLED');
  assert.equal(cancelled.cancelReason, 'PAYMENT_DECLINED');
  assert.deepEqual(cancelled.history.at(-1)?.reason, 'card declined');

  await publishAndSettle(world, payments.captured, envelopeOf(payments.captured, paymentOf(order)), CAPTURED);
  assert.deepEqual(await world.client.call(orders.get, { id: order.id }), cancelled);

  // The saga cancelled it, so its customer cannot cancel it (again).
  await assert.rejects(world.client.call(orders.cancel, { id: order.id, customerId: ada.id }), withCode('ORDER_NOT_CANCELLABLE'));

  const events = await eventsOf(order.id);
  assert.equal(events.confirmed.length, 0);
  assert.equal(events.cancelled.length, 1);
  assert.deepEqual(events.cancelled[0]!.data, {
    orderId: order.id,
    customerId: ada.id,
    reasonCode: 'PAYMENT_DECLINED',
    reason: 'card declined',
    previousStatus: 'PENDING',
    total: order.total,
  });
});

test('inventory.events.rejected cancels with OUT_OF_STOCK and the reason of the event, once', async () => {
  const order = await placeOrder(world, ada.id, [pen.id]);
  const rejected = envelopeOf(inventory.rejected, {
    orderId: order.id,
    customerId: ada.id,
    reason: `only 0 of ${pen.sku} left`,
    shortages: [{ productId: pen.id, requested: 1, available: 0 }],
  });
  await publishAndSettle(world, inventory.rejected, rejected, REJECTED);
  const cancelled = await waitForStatus(world, order.id, 'CANCELLED');
  assert.equal(cancelled.cancelReason, 'OUT_OF_STOCK');
  assert.equal(cancelled.history.at(-1)?.reason, `only 0 of ${pen.sku} left`);

  // Delivered again, and a decline arriving late: still one cancellation.
  await publishAndSettle(world, inventory.rejected, rejected, REJECTED, randomUUID());
  await publishAndSettle(
    world,
    payments.declined,
    envelopeOf(payments.declined, { ...paymentOf(order), reason: 'card declined' }),
    DECLINED,
  );
  assert.deepEqual(await world.client.call(orders.get, { id: order.id }), cancelled);
  assert.equal((await eventsOf(order.id)).cancelled.length, 1);
});

test('a confirmed order ignores a late decline, and its customer can still cancel it (previousStatus CONFIRMED)', async () => {
  const order = await placeOrder(world, ada.id, [pen.id]);
  await publishAndSettle(world, payments.captured, envelopeOf(payments.captured, paymentOf(order)), CAPTURED);
  await waitForStatus(world, order.id, 'CONFIRMED');

  await publishAndSettle(world, payments.declined, envelopeOf(payments.declined, { ...paymentOf(order), reason: 'late' }), DECLINED);
  assert.equal((await world.client.call(orders.get, { id: order.id })).status, 'CONFIRMED');

  const cancelled = await world.client.call(orders.cancel, { id: order.id, customerId: ada.id });
  assert.equal(cancelled.status, 'CANCELLED');
  assert.deepEqual(
    cancelled.history.map((entry) => entry.status),
    ['PENDING', 'CONFIRMED', 'CANCELLED'],
  );
  const events = await eventsOf(order.id);
  assert.equal(events.cancelled.length, 1);
  assert.equal(events.cancelled[0]!.data.previousStatus, 'CONFIRMED');
  assert.equal(events.cancelled[0]!.data.reasonCode, 'CUSTOMER_CANCELLED');
});

test('an event for an order this service never stored is acknowledged and changes nothing', async () => {
  const ghost = randomUUID();
  await publishAndSettle(
    world,
    payments.captured,
    envelopeOf(payments.captured, { paymentId: randomUUID(), orderId: ghost, customerId: ada.id, amount: { amount: 1, currency: 'EUR' } }),
    CAPTURED,
  );
  assert.deepEqual(await eventsOf(ghost), { confirmed: [], cancelled: [] });
  // The consumer is still working.
  const order = await placeOrder(world, ada.id, [pen.id]);
  await publishAndSettle(world, payments.captured, envelopeOf(payments.captured, paymentOf(order)), CAPTURED);
  await waitForStatus(world, order.id, 'CONFIRMED');
});

test('captures arriving together confirm each order once, each confirmation in the trace of its capture', async () => {
  const placed = await Promise.all(Array.from({ length: 12 }, () => placeOrder(world, ada.id, [pen.id])));
  const cancelled = await placeOrder(world, ada.id, [pen.id]);
  await publishAndSettle(
    world,
    inventory.rejected,
    envelopeOf(inventory.rejected, {
      orderId: cancelled.id,
      customerId: ada.id,
      reason: 'test',
      shortages: [],
    }),
    REJECTED,
  );
  // Published without waiting between them, so the consumer takes them in batches.
  const traceIds = new Map<string, string[]>();
  const acks = await Promise.all(
    [...placed, placed[0]!, cancelled].map((order) => {
      const traceId = randomUUID().replaceAll('-', '');
      traceIds.set(order.id, [...(traceIds.get(order.id) ?? []), traceId]);
      const headers = natsHeaders();
      headers.set('traceparent', `00-${traceId}-${'ab'.repeat(8)}-01`);
      const envelope = envelopeOf(payments.captured, paymentOf(order));
      return world.js.publish(payments.captured.subject, JSON.stringify(envelope), { msgID: envelope.id, headers });
    }),
  );
  const last = Math.max(...acks.map((ack) => ack.seq));
  await waitFor(async () => (await world.jsm.consumers.info('PAYMENTS', CAPTURED)).ack_floor.stream_seq >= last, {
    what: 'the captures to be handled',
  });

  for (const order of placed) assert.equal((await world.client.call(orders.get, { id: order.id })).status, 'CONFIRMED');
  assert.equal((await world.client.call(orders.get, { id: cancelled.id })).status, 'CANCELLED');
  const ids = new Set(placed.map((order) => order.id));
  const confirmations = await streamEvents(world, orders.confirmed, (data) => ids.has(data.orderId));
  assert.equal(confirmations.length, placed.length);
  assert.equal((await eventsOf(cancelled.id)).confirmed.length, 0);

  // Each confirmation carries the trace of the capture that confirmed it.
  const info = await world.jsm.streams.info('ORDERS');
  let checked = 0;
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const message = await world.jsm.streams.getMessage('ORDERS', { seq });
    if (message.subject !== orders.confirmed.subject) continue;
    const { orderId } = message.json<{ data: { orderId: string } }>().data;
    if (!ids.has(orderId)) continue;
    const traceId = message.header.get('traceparent').split('-')[1];
    assert.ok(traceIds.get(orderId)!.includes(traceId!), `confirmation of ${orderId} in trace ${traceId}`);
    checked++;
  }
  assert.equal(checked, placed.length);
});
