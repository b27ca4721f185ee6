// A charge the provider captured but the service never recorded: the payment
// process died after the provider's answer and before its own transaction
// committed. The state that crash leaves is built here directly: the provider
// (the simulator, on the service's database) holds a capture under the order's
// key, the service holds nothing, and the reservation is still to be
// (re)delivered. Whatever arrives next, the money goes back exactly once.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect, type JetStreamClient, type JetStreamManager, type NatsConnection } from 'nats';
import { inventory, orders, payments, type Payment } from '../../../subjects/index.ts';
import type { RpcClient } from '../../kit/index.ts';
import { dropTestDatabases, startNats, startTestService, waitFor, type TestNats } from '../../../test/harness.ts';
import { consumedUpTo, eventsOf, publishEvent, readEvents, typedClient, withCode } from '../../../test/messaging.ts';
import { PaymentSettings, paymentService } from '../app.ts';
import { PaymentSimulator } from '../simulator.ts';
import { CHARGE_CONSUMER, REFUND_CONSUMER, SimulatorBooks, cancelledData, reservedData } from './helpers.ts';

let nats: TestNats;
let service: Awaited<ReturnType<typeof startTestService>>;
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
let client: RpcClient;
let books: SimulatorBooks;
/** The provider as the crashed process reached it: same books as the service's own adapter. */
let provider: PaymentSimulator;

before(async () => {
  nats = await startNats();
  service = await startTestService(paymentService, nats, { settings: PaymentSettings });
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  js = nc.jetstream();
  jsm = await nc.jetstreamManager();
  client = typedClient(nc);
  books = new SimulatorBooks(service.databaseUrl);
  provider = PaymentSimulator.open(service.databaseUrl, {
    PAYMENT_AMOUNT_LIMIT: 100_000_000,
    PAYMENT_DELAY_MS: 0,
    PAYMENT_FAILURE_RATE: 0,
    PAYMENT_FAIL_FIRST_ATTEMPTS: 0,
  });
});

after(async () => {
  client?.close();
  await nc?.close();
  await provider?.close();
  await books?.close();
  await service?.stop();
  await nats?.cleanup();
  await dropTestDatabases();
});

/** What the crashed attempt did: the provider charged under the order's key; nothing of ours committed. */
async function orphanedCharge(orderId: string, token: string, amount: number): Promise<string | undefined> {
  const outcome = await provider.charge({ idempotencyKey: orderId, token, amount: { amount, currency: 'EUR' } });
  return outcome.status === 'captured' ? outcome.reference : undefined;
}

async function settled(stream: string, durable: string, seq: number): Promise<void> {
  await waitFor(() => consumedUpTo(jsm, stream, durable, seq), { what: `${durable} past ${stream} #${seq}` });
}

async function outboxDrained(): Promise<void> {
  await waitFor(async () => (await service.outbox.backlog()) === 0, { what: 'outbox to drain' });
}

async function paymentEvents(orderId: string) {
  return eventsOf(await readEvents(jsm, 'PAYMENTS'), orderId);
}

/** Captured charges of the order that no refund gives back. */
async function capturedNotRefunded(orderId: string): Promise<number> {
  const ledger = await books.forOrder(orderId);
  const refunded = new Set(ledger.filter((entry) => entry.operation === 'refund').map((entry) => entry.charge_reference));
  return ledger.filter((entry) => entry.outcome === 'captured' && !refunded.has(entry.reference)).length;
}

async function isTombstoned(orderId: string): Promise<boolean> {
  const { rowCount } = await books.pool.query('SELECT 1 FROM cancelled_orders WHERE order_id = $1', [orderId]);
  return (rowCount ?? 0) > 0;
}

/** One refund of `reference`, the payment REFUNDED, one refunded event, nothing left captured. */
async function assertRefundedOnce(orderId: string, customerId: string, reference: string, amount: number): Promise<void> {
  const ledger = await books.forOrder(orderId);
  assert.deepEqual(
    ledger.map((entry) => [entry.idempotency_key, entry.operation, entry.outcome, entry.amount]),
    [
      [orderId, 'charge', 'captured', amount],
      [`refund:${orderId}`, 'refund', 'refunded', amount],
    ],
  );
  assert.equal(ledger[1]!.charge_reference, reference, 'the refund gives back the orphaned charge');
  assert.equal(await books.calls(`refund:${orderId}`), 1, 'the provider was asked to refund once');
  assert.equal(await books.calls(orderId), 1, 'never charged again: only the crashed attempt');
  assert.equal(await capturedNotRefunded(orderId), 0, 'nothing left captured');

  const payment: Payment = await client.call(payments.getByOrder, { orderId });
  assert.equal(payment.status, 'REFUNDED');
  assert.equal(payment.customerId, customerId);
  assert.deepEqual(payment.amount, { amount, currency: 'EUR' });
  assert.equal(payment.providerReference, reference);
  const { rows } = await books.pool.query<{ refund_reference: string }>('SELECT refund_reference FROM payments WHERE order_id = $1', [
    orderId,
  ]);
  assert.equal(rows[0]!.refund_reference, ledger[1]!.reference, 'the refund is on record');

  const events = await paymentEvents(orderId);
  assert.deepEqual(
    events.map((event) => event.type),
    [payments.refunded.subject],
    'one refunded event, nothing else',
  );
  assert.ok(payments.refunded.data.check(events[0]!.data));
  assert.deepEqual(events[0]!.data, { paymentId: payment.id, orderId, customerId, amount: payment.amount });
}

test('crash after capture, then cancelled, then the reservation again: refunded once, never charged again', async () => {
  const orderId = randomUUID();
  const customerId = randomUUID();
  const reference = await orphanedCharge(orderId, 'tok_visa', 4_321);
  assert.ok(reference, 'the crashed attempt was captured');

  const cancel = cancelledData(orderId, customerId, 'PENDING');
  const cancelled = await publishEvent(js, orders.cancelled, cancel);
  await settled('ORDERS', REFUND_CONSUMER, cancelled.seq);
  // The cancellation settled it: no tombstone that would hide the money from a later delivery.
  assert.equal(await isTombstoned(orderId), false);

  // The reservation the crashed process never acknowledged comes back.
  const reserved = await publishEvent(js, inventory.reserved, reservedData(orderId, 'tok_visa', 4_321, customerId));
  // And the cancellation once more, as after another crash before its ack.
  const again = await publishEvent(js, orders.cancelled, cancel, { id: cancelled.envelope.id, msgId: `${cancelled.envelope.id}:again` });
  await settled('INVENTORY', CHARGE_CONSUMER, reserved.seq);
  await settled('ORDERS', REFUND_CONSUMER, again.seq);
  await outboxDrained();

  await assertRefundedOnce(orderId, customerId, reference, 4_321);
});

test('a tombstone already written, then the capture shows up: the redelivered reservation refunds it', async () => {
  const orderId = randomUUID();
  const customerId = randomUUID();
  // Cancelled while the provider held nothing yet (e.g. the crashed charge request was still in flight).
  const cancelled = await publishEvent(js, orders.cancelled, cancelledData(orderId, customerId, 'PENDING'));
  await settled('ORDERS', REFUND_CONSUMER, cancelled.seq);
  assert.equal(await isTombstoned(orderId), true);
  await assert.rejects(client.call(payments.getByOrder, { orderId }), withCode('PAYMENT_NOT_FOUND'));

  const reference = await orphanedCharge(orderId, 'tok_visa', 999);
  assert.ok(reference);
  const reserved = await publishEvent(js, inventory.reserved, reservedData(orderId, 'tok_visa', 999, customerId));
  await settled('INVENTORY', CHARGE_CONSUMER, reserved.seq);
  // A second redelivery finds the payment settled and does nothing more.
  const twice = await publishEvent(js, inventory.reserved, reservedData(orderId, 'tok_visa', 999, customerId));
  await settled('INVENTORY', CHARGE_CONSUMER, twice.seq);
  await outboxDrained();

  await assertRefundedOnce(orderId, customerId, reference, 999);
});

test('a crashed attempt that was declined: cancelled as before, nothing refunded, nothing charged', async () => {
  const orderId = randomUUID();
  assert.equal(await orphanedCharge(orderId, 'tok_decline', 500), undefined);

  const cancelled = await publishEvent(js, orders.cancelled, cancelledData(orderId, undefined, 'PENDING'));
  await settled('ORDERS', REFUND_CONSUMER, cancelled.seq);
  const reserved = await publishEvent(js, inventory.reserved, reservedData(orderId, 'tok_visa', 500));
  await settled('INVENTORY', CHARGE_CONSUMER, reserved.seq);
  await outboxDrained();

  assert.equal(await isTombstoned(orderId), true);
  await assert.rejects(client.call(payments.getByOrder, { orderId }), withCode('PAYMENT_NOT_FOUND'));
  assert.deepEqual(
    (await books.forOrder(orderId)).map((entry) => entry.outcome),
    ['declined'],
  );
  assert.equal(await books.calls(orderId), 1, 'the reservation did not charge the cancelled order');
  assert.equal(await books.calls(`refund:${orderId}`), 0);
  assert.deepEqual(await paymentEvents(orderId), []);
});
