// "No email sent twice", at the one moment the chaos run once found it broken:
// the SMTP server has accepted an email, and the notification service's
// database connection is lost before the email is recorded as SENT. The
// sender claims each email with a lease, sends it outside any transaction and
// records the outcome with retries on fresh connections (services/notification/
// mailer.ts), so the lost connection must not send it again. Here the SMTP
// server itself cuts the connections (pg_terminate_backend) just before it
// answers 250, so the moment is hit every time instead of once in a few runs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { customers, orders, products } from '../../subjects/index.ts';
import { waitFor } from '../harness.ts';
import { Shop, email } from './shop.ts';

let shop: Shop;

before(async () => {
  shop = await Shop.start();
});

after(async () => {
  await shop?.close();
});

test('an email accepted just before the database connection is lost is sent once', async () => {
  const customer = await shop.client.call(customers.register, { email: email('once'), name: 'Once', password: 'correct horse' });
  const product = await shop.client.call(products.create, {
    sku: `ONCE-${randomUUID().slice(0, 8)}`,
    name: 'Once',
    price: { amount: 500, currency: 'EUR' },
    initialStock: 10,
  });
  let cut = 0;
  shop.smtp.beforeAccept = async () => {
    if (cut++ === 0) await shop.dropConnections();
  };
  const order = await shop.client.call(orders.place, {
    idempotencyKey: randomUUID(),
    customerId: customer.id,
    lines: [{ productId: product.id, quantity: 1 }],
    paymentToken: 'tok_visa',
  });
  await waitFor(async () => (await shop.client.call(orders.get, { id: order.id })).status === 'CONFIRMED', {
    what: 'the order to be confirmed',
  });
  await shop.quiescent();
  assert.equal(cut, shop.smtp.mails.length, 'the fault was injected at the first delivery');
  const [row] = await shop.query<{ id: string; status: string }>(
    'notification',
    'SELECT id::text, status FROM notifications WHERE order_id = $1',
    [order.id],
  );
  assert.equal(row?.status, 'SENT');
  const copies = shop.smtp.mails.filter((mail) => mail.messageId === `<${row!.id}@shop>`);
  assert.equal(copies.length, 1, `the email went out ${copies.length} times`);
});
