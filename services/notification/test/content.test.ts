// The email content and the retry arithmetic, without servers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatMoney, orderCancelledEmail, orderConfirmedEmail, paymentRefundedEmail } from '../events.ts';
import { isPermanentFailure, messageId, retryDelayMs } from '../mailer.ts';

const ORDER = '0b7e2f4c-1d2a-4c3b-9e8f-123456789abc';

test('money is formatted from minor units with the currency', () => {
  assert.equal(formatMoney({ amount: 123_450, currency: 'EUR' }), 'EUR 1,234.50');
  assert.equal(formatMoney({ amount: 5, currency: 'EUR' }), 'EUR 0.05');
  assert.equal(formatMoney({ amount: 0, currency: 'USD' }), 'USD 0.00');
  assert.equal(formatMoney({ amount: 1200, currency: 'JPY' }), 'JPY 1,200'); // no minor unit
  assert.equal(formatMoney({ amount: 1234, currency: 'BHD' }), 'BHD 1.234'); // three digits
  assert.equal(formatMoney({ amount: 100_000_000_00, currency: 'EUR' }), 'EUR 100,000,000.00');
});

test('each event type has its subject and body', () => {
  const confirmedEmail = orderConfirmedEmail({ orderId: ORDER, total: { amount: 999, currency: 'EUR' } }, 'Ann');
  assert.equal(confirmedEmail.subject, 'Your order #0B7E2F4C is confirmed');
  assert.match(confirmedEmail.body, /^Hello Ann,\n/);
  assert.match(confirmedEmail.body, new RegExp(`\nOrder: ${ORDER}\nTotal: EUR 9\\.99\n`));

  const cancelled = (reasonCode: string) =>
    orderCancelledEmail({ orderId: ORDER, reasonCode, reason: 'you asked us to', total: { amount: 999, currency: 'EUR' } }, null);
  assert.equal(cancelled('CUSTOMER_CANCELLED').subject, 'Your order #0B7E2F4C was cancelled');
  assert.match(cancelled('CUSTOMER_CANCELLED').body, /^Hello,\n/);
  assert.match(cancelled('CUSTOMER_CANCELLED').body, /\nReason: you asked us to\n/);
  // Only a cancellation that can follow a charge mentions the refund.
  assert.match(cancelled('CUSTOMER_CANCELLED').body, /refunded/);
  assert.match(cancelled('DEADLINE_EXCEEDED').body, /refunded/);
  assert.doesNotMatch(cancelled('OUT_OF_STOCK').body, /refunded/);

  const refunded = paymentRefundedEmail({ orderId: ORDER, amount: { amount: 2500, currency: 'GBP' } }, 'Ann');
  assert.equal(refunded.subject, 'Refund for your order #0B7E2F4C');
  assert.match(refunded.body, /\nRefunded: GBP 25\.00\n/);
});

test('retries back off exponentially up to a bound; 5xx replies are final', () => {
  assert.deepEqual(
    [1, 2, 3, 4, 5].map((attempt) => retryDelayMs(attempt, 100, 1000)),
    [100, 200, 400, 800, 1000],
  );
  assert.equal(isPermanentFailure(Object.assign(new Error('no such mailbox'), { responseCode: 550 })), true);
  assert.equal(isPermanentFailure(Object.assign(new Error('try later'), { responseCode: 451 })), false);
  assert.equal(isPermanentFailure(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ESOCKET' })), false);
  assert.equal(messageId(ORDER), `<${ORDER}@shop>`);
});
