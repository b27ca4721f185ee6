// The deadline: nobody answers for these orders (no payment service runs), so
// the sweepers of two order instances cancel every one of them exactly once.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { orders, payments, type Customer, type Product } from '../../../subjects/index.ts';
import { waitFor } from '../../../test/harness.ts';
import {
  createProduct,
  envelopeOf,
  placeOrder,
  publishAndSettle,
  registerCustomer,
  startWorld,
  streamEvents,
  type World,
} from './fixtures.ts';

let world: World;
let ada: Customer;
let pen: Product;

before(async () => {
  world = await startWorld({ orderEnv: { ORDER_DEADLINE_MS: '300', ORDER_DEADLINE_SWEEP_MS: '50' }, orderInstances: 2 });
  ada = await registerCustomer(world.client);
  pen = await createProduct(world.client, { amount: 700, currency: 'EUR' });
});

after(async () => {
  await world?.stop();
});

test('pending orders past their deadline are cancelled once, by one of the sweeping instances', async () => {
  const placed = await Promise.all(Array.from({ length: 20 }, () => placeOrder(world, ada.id, [pen.id])));
  const ids = new Set(placed.map((order) => order.id));

  const cancelled = await waitFor(
    async () => {
      const page = await world.client.call(orders.listByCustomer, { customerId: ada.id, first: 100 });
      const mine = page.items.filter((order) => ids.has(order.id));
      return mine.length === ids.size && mine.every((order) => order.status === 'CANCELLED') ? mine : undefined;
    },
    { what: 'every order to be cancelled by its deadline' },
  );
  for (const order of cancelled) {
    assert.equal(order.cancelReason, 'DEADLINE_EXCEEDED');
    assert.deepEqual(
      order.history.map((entry) => entry.status),
      ['PENDING', 'CANCELLED'],
    );
    assert.ok(Date.parse(order.history[1]!.at) >= Date.parse(order.deadlineAt), 'cancelled only after the deadline');
  }

  // Two instances swept at once: still exactly one cancellation event per order.
  const events = await waitFor(async () => {
    const found = await streamEvents(world, orders.cancelled, (data) => ids.has(data.orderId));
    return found.length >= ids.size ? found : undefined;
  });
  assert.equal(events.length, ids.size);
  assert.equal(new Set(events.map((event) => event.data.orderId)).size, ids.size);
  for (const event of events) {
    assert.equal(event.data.reasonCode, 'DEADLINE_EXCEEDED');
    assert.equal(event.data.previousStatus, 'PENDING');
  }
});

test('a capture arriving after the deadline cancelled the order leaves it cancelled', async () => {
  const order = await placeOrder(world, ada.id, [pen.id]);
  const cancelled = await waitFor(async () => {
    const found = await world.client.call(orders.get, { id: order.id });
    return found.status === 'CANCELLED' ? found : undefined;
  });
  await publishAndSettle(
    world,
    payments.captured,
    envelopeOf(payments.captured, { paymentId: randomUUID(), orderId: order.id, customerId: ada.id, amount: order.total }),
    'orders-payments-captured',
  );
  assert.deepEqual(await world.client.call(orders.get, { id: order.id }), cancelled);
  assert.deepEqual(await streamEvents(world, orders.confirmed, (data) => data.orderId === order.id), []);
});
