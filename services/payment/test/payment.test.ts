// The payment service against a real nats-server and PostgreSQL: the
// simulator's rules through events, exactly-once charging and refunding,
// cancellation before reservation, the lookup, and bad input.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect, type JetStreamClient, type JetStreamManager, type NatsConnection } from 'nats';
import { inventory, orders, payments, type Payment } from '../../../subjects/index.ts';
import { RpcClient, ServiceError, DeadLetterHeaders } from '../../kit/index.ts';
import { dropTestDatabases, startNats, startTestService, waitFor, type TestNats } from '../../../test/harness.ts';
import { PaymentSettings, paymentService } from '../app.ts';
import {
  CHARGE_CONSUMER,
  REFUND_CONSUMER,
  SimulatorBooks,
  cancelledData,
  paymentEventsFor,
  publishEvent,
  publishRaw,
  readStream,
  reservedData,
  waitSettled,
} from './helpers.ts';

const LIMIT = 50_000;

let nats: TestNats;
let service: Awaited<ReturnType<typeof startTestService>>;
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
let client: RpcClient;
let books: SimulatorBooks;

before(async () => {
  nats = await startNats();
  service = await startTestService(paymentService, nats, {
    settings: PaymentSettings,
    env: { PAYMENT_AMOUNT_LIMIT: String(LIMIT) },
  });
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  js = nc.jetstream();
  jsm = await nc.jetstreamManager();
  client = new RpcClient(nc, { timeoutMs: 2000 });
  books = new SimulatorBooks(service.databaseUrl);
});

after(async () => {
  client?.close();
  await nc?.close();
  await books?.close();
  await service?.stop();
  await nats?.cleanup();
  await dropTestDatabases();
});

async function getPayment(orderId: string): Promise<Payment | undefined> {
  try {
    return await client.call(payments.getByOrder, { orderId });
  } catch (error) {
    if (error instanceof ServiceError && error.code === 'PAYMENT_NOT_FOUND') return undefined;
    throw error;
  }
}

function paymentIn(orderId: string, status: Payment['status']): Promise<Payment> {
  return waitFor(
    async () => {
      const payment = await getPayment(orderId);
      return payment?.status === status ? payment : undefined;
    },
    { what: `payment of ${orderId} to be ${status}` },
  );
}

/** Waits until the outbox has published everything committed so far. */
function outboxDrained(): Promise<true> {
  return waitFor(async () => (await service.outbox.backlog()) === 0, { what: 'outbox to drain' });
}

test('a reservation is charged: CAPTURED, with a captured event and one ledger entry', async () => {
  const orderId = randomUUID();
  const customerId = randomUUID();
  await publishEvent(js, inventory.reserved, reservedData(orderId, 'tok_visa', 12_345, customerId));

  const payment = await paymentIn(orderId, 'CAPTURED');
  assert.equal(payment.customerId, customerId);
  assert.deepEqual(payment.amount, { amount: 12_345, currency: 'EUR' });
  assert.equal(payment.declineReason, null);
  assert.match(payment.providerReference ?? '', /^sim_ch_/);

  await outboxDrained();
  const events = await waitFor(async () => {
    const found = await paymentEventsFor(jsm, orderId);
    return found.length > 0 ? found : undefined;
  });
  assert.equal(events.length, 1);
  const [captured] = events;
  assert.equal(captured!.subject, payments.captured.subject);
  assert.equal(captured!.envelope.type, payments.captured.subject);
  assert.equal(captured!.headers['Nats-Msg-Id'], captured!.envelope.id, 'the envelope id is the Nats-Msg-Id');
  assert.ok(payments.captured.data.check(captured!.envelope.data));
  assert.deepEqual(captured!.envelope.data, { paymentId: payment.id, orderId, customerId, amount: payment.amount });

  const ledger = await books.entries(orderId);
  assert.equal(ledger.length, 1);
  assert.equal(ledger[0]!.outcome, 'captured');
  assert.equal(ledger[0]!.reference, payment.providerReference);
});

for (const [token, reason] of [
  ['tok_decline', 'card declined'],
  ['tok_insufficient_funds', 'insufficient funds'],
] as const) {
  test(`token ${token} is declined with "${reason}"`, async () => {
    const orderId = randomUUID();
    await publishEvent(js, inventory.reserved, reservedData(orderId, token, 1_000));

    const payment = await paymentIn(orderId, 'DECLINED');
    assert.equal(payment.declineReason, reason);
    assert.equal(payment.providerReference, null);

    await outboxDrained();
    const events = await paymentEventsFor(jsm, orderId);
    assert.deepEqual(
      events.map((event) => event.subject),
      [payments.declined.subject],
    );
    assert.equal(events[0]!.envelope.data.reason, reason);
    assert.equal(events[0]!.envelope.data.paymentId, payment.id);
  });
}

test('an amount above PAYMENT_AMOUNT_LIMIT is declined; the limit itself is not', async () => {
  const over = randomUUID();
  const at = randomUUID();
  await publishEvent(js, inventory.reserved, reservedData(over, 'tok_visa', LIMIT + 1));
  await publishEvent(js, inventory.reserved, reservedData(at, 'tok_visa', LIMIT));

  const declined = await paymentIn(over, 'DECLINED');
  assert.equal(declined.declineReason, 'amount over limit');
  await paymentIn(at, 'CAPTURED');

  await outboxDrained();
  const events = await paymentEventsFor(jsm, over);
  assert.deepEqual(
    events.map((event) => [event.subject, event.envelope.data.reason]),
    [[payments.declined.subject, 'amount over limit']],
  );
});

test('a redelivered reservation and a second one for the same order charge once', async () => {
  const orderId = randomUUID();
  const data = reservedData(orderId, 'tok_visa', 2_500);
  const first = await publishEvent(js, inventory.reserved, data);
  // The same Nats-Msg-Id again: JetStream itself drops it.
  const repeat = await publishEvent(js, inventory.reserved, data, { envelopeId: first.envelope.id });
  assert.equal(repeat.ack.duplicate, true);
  // The same envelope past the duplicate window (a relay republishing after a crash): the inbox skips it.
  const republished = await publishEvent(js, inventory.reserved, data, {
    envelopeId: first.envelope.id,
    msgId: `${first.envelope.id}:again`,
  });
  assert.equal(republished.ack.duplicate, false);
  // Another reservation event for the same order (new id): the payment row stops it.
  const second = await publishEvent(js, inventory.reserved, data);
  assert.equal(second.ack.duplicate, false);

  await waitSettled(jsm, 'INVENTORY', CHARGE_CONSUMER, second.ack.seq);
  await outboxDrained();

  const payment = await paymentIn(orderId, 'CAPTURED');
  const ledger = await books.entries(orderId);
  assert.equal(ledger.length, 1, 'one ledger entry');
  assert.equal(ledger[0]!.reference, payment.providerReference);
  assert.equal(await books.calls(orderId), 1, 'the provider was asked once');
  const events = await paymentEventsFor(jsm, orderId);
  assert.deepEqual(
    events.map((event) => event.subject),
    [payments.captured.subject],
    'one captured event',
  );
});

test('reservations arriving together are each charged once, declines and cancelled orders as when alone', async () => {
  const captured = Array.from({ length: 10 }, () => randomUUID());
  const declined = [randomUUID(), randomUUID()];
  const twice = randomUUID();
  const cancelled = randomUUID();
  const cancellation = await publishEvent(js, orders.cancelled, cancelledData(cancelled, randomUUID(), 'PENDING'));
  await waitSettled(jsm, 'ORDERS', REFUND_CONSUMER, cancellation.ack.seq);

  // Published without waiting between them, so the consumer takes them in batches.
  const acks = await Promise.all([
    ...captured.map((orderId) => publishEvent(js, inventory.reserved, reservedData(orderId, 'tok_visa', 1_000))),
    ...declined.map((orderId) => publishEvent(js, inventory.reserved, reservedData(orderId, 'tok_decline', 1_000))),
    // Two reservation events for one order (different event ids).
    publishEvent(js, inventory.reserved, reservedData(twice, 'tok_visa', 1_000)),
    publishEvent(js, inventory.reserved, reservedData(twice, 'tok_visa', 1_000)),
    publishEvent(js, inventory.reserved, reservedData(cancelled, 'tok_visa', 1_000)),
  ]);
  await waitSettled(jsm, 'INVENTORY', CHARGE_CONSUMER, Math.max(...acks.map(({ ack }) => ack.seq)));
  await outboxDrained();

  for (const orderId of [...captured, twice]) {
    assert.equal((await getPayment(orderId))?.status, 'CAPTURED');
    assert.equal((await books.entries(orderId)).length, 1, 'one ledger entry');
    assert.deepEqual(
      (await paymentEventsFor(jsm, orderId)).map((event) => event.subject),
      [payments.captured.subject],
    );
  }
  assert.equal(await books.calls(twice), 1, 'the provider was asked once for the order reserved twice');
  for (const orderId of declined) {
    assert.equal((await getPayment(orderId))?.status, 'DECLINED');
    assert.deepEqual(
      (await paymentEventsFor(jsm, orderId)).map((event) => event.subject),
      [payments.declined.subject],
    );
  }
  assert.equal(await getPayment(cancelled), undefined);
  assert.equal(await books.calls(cancelled), 0, 'a cancelled order is never charged');
});

test('a cancellation after capture refunds once, even when it comes twice', async () => {
  const orderId = randomUUID();
  const customerId = randomUUID();
  await publishEvent(js, inventory.reserved, reservedData(orderId, 'tok_visa', 7_700, customerId));
  const captured = await paymentIn(orderId, 'CAPTURED');

  const cancel = cancelledData(orderId, customerId);
  const first = await publishEvent(js, orders.cancelled, cancel);
  await publishEvent(js, orders.cancelled, cancel, { envelopeId: first.envelope.id, msgId: `${first.envelope.id}:again` });
  const last = await publishEvent(js, orders.cancelled, cancel);
  await waitSettled(jsm, 'ORDERS', REFUND_CONSUMER, last.ack.seq);
  await outboxDrained();

  const refunded = await paymentIn(orderId, 'REFUNDED');
  assert.equal(refunded.id, captured.id);
  assert.equal(refunded.providerReference, captured.providerReference);

  const ledger = await books.forOrder(orderId);
  assert.deepEqual(
    ledger.map((entry) => [entry.operation, entry.outcome]),
    [
      ['charge', 'captured'],
      ['refund', 'refunded'],
    ],
  );
  assert.equal(ledger[1]!.charge_reference, captured.providerReference);
  assert.equal(ledger[1]!.amount, 7_700);
  assert.equal(await books.calls(`refund:${orderId}`), 1, 'the provider was asked to refund once');

  const events = await paymentEventsFor(jsm, orderId);
  assert.deepEqual(
    events.map((event) => event.subject),
    [payments.captured.subject, payments.refunded.subject],
  );
  assert.deepEqual(events[1]!.envelope.data, { paymentId: captured.id, orderId, customerId, amount: captured.amount });
});

test('a cancellation before the reservation: the order is never charged', async () => {
  const orderId = randomUUID();
  const customerId = randomUUID();
  const cancelled = await publishEvent(js, orders.cancelled, cancelledData(orderId, customerId, 'PENDING'));
  await waitSettled(jsm, 'ORDERS', REFUND_CONSUMER, cancelled.ack.seq);
  const reserved = await publishEvent(js, inventory.reserved, reservedData(orderId, 'tok_visa', 900, customerId));
  await waitSettled(jsm, 'INVENTORY', CHARGE_CONSUMER, reserved.ack.seq);
  await outboxDrained();

  assert.equal(await getPayment(orderId), undefined);
  assert.deepEqual(await books.forOrder(orderId), []);
  assert.equal(await books.calls(orderId), 0, 'the provider was never asked');
  assert.deepEqual(await paymentEventsFor(jsm, orderId), []);
});

test('a cancellation after a decline refunds nothing', async () => {
  const orderId = randomUUID();
  await publishEvent(js, inventory.reserved, reservedData(orderId, 'tok_decline', 500));
  await paymentIn(orderId, 'DECLINED');
  const cancelled = await publishEvent(js, orders.cancelled, {
    ...cancelledData(orderId, undefined, 'PENDING'),
    reasonCode: 'PAYMENT_DECLINED',
  });
  await waitSettled(jsm, 'ORDERS', REFUND_CONSUMER, cancelled.ack.seq);
  await outboxDrained();

  assert.equal((await getPayment(orderId))?.status, 'DECLINED');
  assert.equal(await books.calls(`refund:${orderId}`), 0);
  assert.deepEqual(
    (await paymentEventsFor(jsm, orderId)).map((event) => event.subject),
    [payments.declined.subject],
  );
});

test('payments.getByOrder: the payment, PAYMENT_NOT_FOUND when none, VALIDATION_FAILED for bad input', async () => {
  const orderId = randomUUID();
  await publishEvent(js, inventory.reserved, reservedData(orderId, 'tok_visa', 4_200));
  const payment = await paymentIn(orderId, 'CAPTURED');
  assert.ok(payments.getByOrder.reply.check(payment));
  assert.equal(payment.orderId, orderId);

  await assert.rejects(client.call(payments.getByOrder, { orderId: randomUUID() }), (error: unknown) => {
    assert.ok(error instanceof ServiceError);
    assert.equal(error.code, 'PAYMENT_NOT_FOUND');
    assert.equal(error.status, 404);
    return true;
  });

  // Past the typed client, as a foreign caller would send it.
  for (const body of ['{"orderId":"not-a-uuid"}', `{"orderId":"${orderId}","extra":1}`, '{}', 'not json']) {
    const reply = await nc.request(payments.getByOrder.subject, body, { timeout: 2000 });
    assert.equal(reply.headers?.get('Nats-Service-Error-Code'), '400', body);
    assert.equal(reply.headers?.get('Shop-Error-Code'), 'VALIDATION_FAILED', body);
  }
});

test('a reservation outside its contract goes to the DLQ and charges nothing', async () => {
  const orderId = randomUUID();
  const bad = reservedData(orderId, 'tok_visa', 100);
  const seq = await publishRaw(js, inventory.reserved.subject, {
    id: randomUUID(),
    type: inventory.reserved.subject,
    occurredAt: new Date().toISOString(),
    data: { ...bad, payment: { token: 'tok_visa', amount: { amount: -5, currency: 'EUR' } } },
  });
  await waitSettled(jsm, 'INVENTORY', CHARGE_CONSUMER, seq.seq);

  const letters = await waitFor(async () => {
    const found = (await readStream(jsm, 'DLQ')).filter((letter) => letter.envelope.data?.orderId === orderId);
    return found.length > 0 ? found : undefined;
  });
  assert.equal(letters.length, 1);
  assert.equal(letters[0]!.headers[DeadLetterHeaders.consumer], CHARGE_CONSUMER);
  assert.match(letters[0]!.headers[DeadLetterHeaders.error] ?? '', /^poison: .*contract/);
  assert.equal(await getPayment(orderId), undefined);
  assert.equal(await books.calls(orderId), 0);

  // The consumer keeps going.
  const next = randomUUID();
  await publishEvent(js, inventory.reserved, reservedData(next, 'tok_visa', 100));
  await paymentIn(next, 'CAPTURED');
});
