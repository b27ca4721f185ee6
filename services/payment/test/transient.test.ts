// Provider outages and service downtime: a transient provider error is
// retried (never declined) and the charge lands once the provider is back; a
// reservation and a cancellation that both waited out a downtime never leave
// money taken.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect } from 'nats';
import { inventory, orders, payments } from '../../../subjects/index.ts';
import { dropTestDatabases, startNats, startTestService, testDatabaseUrl, waitFor, type TestNats } from '../../../test/harness.ts';
import { PaymentSettings, paymentService } from '../app.ts';
import {
  CHARGE_CONSUMER,
  REFUND_CONSUMER,
  SimulatorBooks,
  cancelledData,
  paymentEventsFor,
  publishEvent,
  reservedData,
  waitSettled,
} from './helpers.ts';

after(() => dropTestDatabases());

// Enough deliveries that no message reaches the DLQ while a test holds the provider down.
const PATIENT = { consumer: { maxDeliver: 1000 } };

async function setup(t: { after(fn: () => Promise<void>): void }) {
  const nats: TestNats = await startNats();
  const nc = await connect({ servers: nats.url, noAsyncTraces: true });
  const databaseUrl = testDatabaseUrl('payments');
  const books = new SimulatorBooks(databaseUrl);
  const running: { stop(): Promise<void> }[] = [];
  t.after(async () => {
    for (const service of running) await service.stop();
    await books.close();
    await nc.close();
    await nats.cleanup();
  });
  const start = async (env: Record<string, string>) => {
    const service = await startTestService(paymentService, nats, { ...PATIENT, settings: PaymentSettings, env, databaseUrl });
    running.push(service);
    return service;
  };
  return { nats, nc, js: nc.jetstream(), jsm: await nc.jetstreamManager(), books, databaseUrl, start };
}

async function paymentRow(books: SimulatorBooks, orderId: string): Promise<{ status: string } | undefined> {
  const { rows } = await books.pool.query<{ status: string }>('SELECT status FROM payments WHERE order_id = $1', [orderId]);
  return rows[0];
}

test('PAYMENT_FAILURE_RATE=1 keeps redelivering without a decline; after a restart with 0 the charge lands once', async (t) => {
  const { js, jsm, books, start } = await setup(t);
  const failing = await start({ PAYMENT_FAILURE_RATE: '1' });
  const orderId = randomUUID();
  await publishEvent(js, inventory.reserved, reservedData(orderId, 'tok_visa', 3_000));

  // Asked again and again: each failure was a nak and a redelivery.
  await waitFor(async () => (await books.calls(orderId)) >= 3, { what: 'three provider calls' });
  const info = await jsm.consumers.info('INVENTORY', CHARGE_CONSUMER);
  assert.ok(info.delivered.consumer_seq >= 3, 'one event, delivered again and again');
  assert.equal(await paymentRow(books, orderId), undefined, 'no payment stored');
  assert.deepEqual(await books.forOrder(orderId), [], 'nothing charged');
  await failing.stop();
  assert.deepEqual(await paymentEventsFor(jsm, orderId), [], 'no declined (or any) event');
  const callsWhileDown = await books.calls(orderId);

  const healthy = await start({ PAYMENT_FAILURE_RATE: '0' });
  await waitFor(async () => (await paymentRow(books, orderId))?.status === 'CAPTURED', { what: 'capture after restart' });
  await waitFor(async () => (await healthy.outbox.backlog()) === 0);

  assert.equal(await books.calls(orderId), callsWhileDown + 1, 'one more call, the successful one');
  const ledger = await books.entries(orderId);
  assert.deepEqual(
    ledger.map((entry) => entry.outcome),
    ['captured'],
  );
  const events = await waitFor(async () => {
    const found = await paymentEventsFor(jsm, orderId);
    return found.length > 0 ? found : undefined;
  });
  assert.deepEqual(
    events.map((event) => event.subject),
    [payments.captured.subject],
  );
});

test('PAYMENT_FAIL_FIRST_ATTEMPTS=2: two transient failures, then one capture on the third delivery', async (t) => {
  const { js, jsm, books, start } = await setup(t);
  const service = await start({ PAYMENT_FAIL_FIRST_ATTEMPTS: '2' });
  const orderId = randomUUID();
  const { ack } = await publishEvent(js, inventory.reserved, reservedData(orderId, 'tok_visa', 6_100));

  await waitSettled(jsm, 'INVENTORY', CHARGE_CONSUMER, ack.seq);
  await waitFor(async () => (await service.outbox.backlog()) === 0);
  assert.equal((await paymentRow(books, orderId))?.status, 'CAPTURED');
  assert.equal(await books.calls(orderId), 3);
  assert.equal((await books.entries(orderId)).length, 1);
  const info = await jsm.consumers.info('INVENTORY', CHARGE_CONSUMER);
  assert.equal(info.delivered.consumer_seq, 3, 'the one event was delivered three times');
  const events = await waitFor(async () => {
    const found = await paymentEventsFor(jsm, orderId);
    return found.length > 0 ? found : undefined;
  });
  assert.deepEqual(
    events.map((event) => event.subject),
    [payments.captured.subject],
  );

  // The refund gets the same treatment: two failures, then exactly one refund.
  const cancelled = await publishEvent(js, orders.cancelled, cancelledData(orderId));
  await waitSettled(jsm, 'ORDERS', REFUND_CONSUMER, cancelled.ack.seq);
  assert.equal((await paymentRow(books, orderId))?.status, 'REFUNDED');
  assert.equal(await books.calls(`refund:${orderId}`), 3);
  assert.deepEqual(
    (await books.forOrder(orderId)).map((entry) => entry.outcome),
    ['captured', 'refunded'],
  );
});

test('reservations and cancellations that waited out a downtime, in either order, never leave money taken', async (t) => {
  const { js, jsm, books, start } = await setup(t);
  // Creates the durable consumers, then goes away.
  await (await start({})).stop();

  const orderIds = Array.from({ length: 20 }, () => randomUUID());
  let lastReserved = 0;
  let lastCancelled = 0;
  for (const [index, orderId] of orderIds.entries()) {
    const customerId = randomUUID();
    const reserve = () => publishEvent(js, inventory.reserved, reservedData(orderId, 'tok_visa', 1_000 + index, customerId));
    const cancel = () => publishEvent(js, orders.cancelled, cancelledData(orderId, customerId, 'PENDING'));
    // Half reserved-then-cancelled, half the other way round; each consumer reads its own stream anyway.
    const [a, b] = index % 2 === 0 ? [reserve, cancel] : [cancel, reserve];
    for (const publish of [a, b]) {
      const { ack } = await publish();
      if (ack.stream === 'INVENTORY') lastReserved = ack.seq;
      else lastCancelled = ack.seq;
    }
  }

  const service = await start({ PAYMENT_DELAY_MS: '5' });
  await waitSettled(jsm, 'INVENTORY', CHARGE_CONSUMER, lastReserved);
  await waitSettled(jsm, 'ORDERS', REFUND_CONSUMER, lastCancelled);
  await waitFor(async () => (await service.outbox.backlog()) === 0);

  for (const orderId of orderIds) {
    const ledger = await books.forOrder(orderId);
    const row = await paymentRow(books, orderId);
    const subjects = (await paymentEventsFor(jsm, orderId)).map((event) => event.subject);
    if (row === undefined) {
      // The cancellation came first: never charged.
      assert.deepEqual(ledger, [], orderId);
      assert.deepEqual(subjects, [], orderId);
    } else {
      // The charge came first: given back, once.
      assert.equal(row.status, 'REFUNDED', orderId);
      assert.deepEqual(
        ledger.map((entry) => entry.outcome),
        ['captured', 'refunded'],
        orderId,
      );
      assert.deepEqual(subjects, [payments.captured.subject, payments.refunded.subject], orderId);
    }
  }
});
