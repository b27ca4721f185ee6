// The storefront in a real headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core): register, order, and watch the order become
// CONFIRMED live, then shipped and delivered; the cart keeps lines the catalog no longer shows; a status
// event leaves the pages loaded with "More" in place; the live status comes
// back after its connection drops. The browser reaches the BFF through a TCP
// proxy of the test's, which can cut every connection as a network or a BFF
// restart would. Leaves a screenshot at .tmp/storefront.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { createServer, connect as connectTcp, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ROOT } from '../../test/harness.ts';
import { ADMIN_EMAIL, ok, startStack, waitFor, type Stack } from './stack.ts';

const CHROMIUM = '/usr/bin/chromium';
const skip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is absent (apt-get install chromium)`;

let stack: Stack;
let proxy: Proxy;
let adminToken: string;
let browser: Browser;
let page: Page;
/** WebSockets the page opened, in order. */
let sockets = 0;

interface Proxy {
  url: string;
  /** Cuts every connection through the proxy, both ways. */
  drop(): void;
  close(): Promise<void>;
}

/** A TCP proxy to `target`: what the browser sees as the shop. */
async function startProxy(target: string): Promise<Proxy> {
  const { hostname, port } = new URL(target);
  const open = new Set<Socket>();
  const track = (socket: Socket) => {
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    socket.on('error', () => {}); // a cut connection errors on the other side; nothing to report
  };
  const server = createServer((browserSide) => {
    const shopSide = connectTcp(Number(port), hostname);
    track(browserSide);
    track(shopSide);
    browserSide.pipe(shopSide).pipe(browserSide);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const drop = () => {
    for (const socket of open) socket.destroy();
  };
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    drop,
    close: () => {
      drop();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function createProduct(sku: string, name: string, amount: number, description: string) {
  return ok(
    stack.url,
    `mutation($input: CreateProductInput!) { createProduct(input: $input) { id } }`,
    { input: { sku, name, description, price: { amount, currency: 'EUR' }, initialStock: 25 } },
    adminToken,
  );
}

/** The number the card of `name` shows in stock. */
async function inStock(name: string): Promise<number> {
  const text = (await page.locator('.product', { hasText: name }).locator('.stock').textContent()) ?? '';
  return Number(/(\d+) in stock/.exec(text)?.[1]);
}

/** Places the cart's order and waits until the live panel shows that order CONFIRMED (not the one shown before). */
async function placeOrderConfirmed(): Promise<void> {
  const previous = await page.locator('#live-status').getAttribute('data-order-id');
  await page.click('#place-order');
  const status = page.locator('#live-status');
  await waitFor(
    async () => {
      const shown = await status.getAttribute('data-order-id');
      return shown !== null && shown !== previous && (await status.textContent()) === 'CONFIRMED';
    },
    { what: 'the order just placed to show CONFIRMED', timeoutMs: 15_000 },
  );
}

before(async () => {
  if (skip) return;
  stack = await startStack();
  proxy = await startProxy(stack.url);
  const admin = await ok(stack.url, `mutation { register(email: "${ADMIN_EMAIL}", name: "Admin", password: "correct horse") { token } }`);
  adminToken = admin.register.token;
  await createProduct('kettle', 'Copper kettle', 5900, 'Boils a litre in three minutes.');
  await createProduct('teapot', 'Stoneware teapot', 3450, 'Keeps four cups warm.');
  await createProduct('sencha', 'Sencha, 100 g', 1200, 'Grassy Japanese green tea.');
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('websocket', () => sockets++);
});

after(async () => {
  await browser?.close();
  await proxy?.close();
  await stack?.close();
});

test('a shopper registers, orders, and sees the order CONFIRMED live', { skip }, async () => {
  await page.goto(proxy.url);
  await page.locator('body[data-ready="true"]').waitFor();
  assert.equal(await page.locator('.product').count(), 3);

  // Search narrows the catalog.
  await page.fill('#search', 'tea');
  await page.click('#search-form button');
  await page.locator('.product', { hasText: 'Copper kettle' }).waitFor({ state: 'detached' });
  assert.deepEqual((await page.locator('.product h3').allTextContents()).sort(), ['Sencha, 100 g', 'Stoneware teapot']);
  await page.fill('#search', '');
  await page.click('#search-form button');
  await page.locator('.product', { hasText: 'Copper kettle' }).waitFor();

  await page.click('#tab-register');
  await page.fill('#register-name', 'Fiona');
  await page.fill('#register-email', 'fiona@shop.test');
  await page.fill('#register-password', 'correct horse');
  await page.click('#register-form button[type=submit]');
  await page.locator('#whoami', { hasText: 'Fiona' }).waitFor();

  const kettle = page.locator('.product', { hasText: 'Copper kettle' });
  await kettle.locator('.qty').fill('2');
  await kettle.locator('button.add').click();
  await page.locator('.product', { hasText: 'Sencha' }).locator('button.add').click();
  assert.equal(await page.locator('#cart-lines li').count(), 2);
  assert.match((await page.locator('#cart-total').textContent()) ?? '', /130[.,]00/);
  assert.match((await page.locator('#checkout-form').textContent()) ?? '', /tok_decline/, 'the payment hint is shown');

  await page.click('#place-order');
  await page.locator('#live-status', { hasText: 'CONFIRMED' }).waitFor({ timeout: 15_000 });
  const history = await page.locator('#live-history li').allTextContents();
  assert.match(history[0] ?? '', /PENDING/);
  assert.match(history[1] ?? '', /CONFIRMED/);
  await page.locator('#order-list li .status', { hasText: 'CONFIRMED' }).waitFor();
  await page.locator('.product', { hasText: 'Copper kettle' }).locator('.stock', { hasText: '23 in stock' }).waitFor();

  await mkdir(join(ROOT, '.tmp'), { recursive: true });
  await page.screenshot({ path: join(ROOT, '.tmp', 'storefront.png'), fullPage: true });
});

test('a declined card shows the order CANCELLED, and past orders stay listed', { skip }, async () => {
  await page.locator('.product', { hasText: 'Stoneware teapot' }).locator('button.add').click();
  await page.fill('#payment-token', 'tok_decline');
  await page.click('#place-order');
  await page.locator('#live-status', { hasText: 'CANCELLED' }).waitFor({ timeout: 15_000 });
  assert.match((await page.locator('#live-history').textContent()) ?? '', /declined/i);
  await page.locator('#order-list li', { hasText: 'CANCELLED' }).waitFor();
  assert.equal(await page.locator('#order-list li').count(), 2);

  // A fresh visit with the stored token shows the same account and orders.
  await page.reload();
  await page.locator('#whoami', { hasText: 'Fiona' }).waitFor();
  await page.locator('#order-list li').nth(1).waitFor();
  assert.equal(await page.locator('#order-list li').count(), 2);
});

test('cart lines whose product the catalog no longer shows stay in the cart, its total and the order', { skip }, async () => {
  await page.locator('.product', { hasText: 'Copper kettle' }).locator('button.add').click();
  // A search shows other products: the kettle leaves the page, not the cart.
  await page.fill('#search', 'tea');
  await page.click('#search-form button');
  await page.locator('.product', { hasText: 'Copper kettle' }).waitFor({ state: 'detached' });
  assert.deepEqual(await page.locator('#cart-lines li > span:first-child').allTextContents(), ['1 × Copper kettle']);
  assert.match((await page.locator('#cart-total').textContent()) ?? '', /59[.,]00/);

  await page.locator('.product', { hasText: 'Stoneware teapot' }).locator('button.add').click();
  assert.equal(await page.locator('#cart-lines li').count(), 2);
  assert.match((await page.locator('#cart-total').textContent()) ?? '', /93[.,]50/, 'both lines counted');

  // What was shown is what is ordered.
  await page.fill('#payment-token', 'tok_visa');
  await placeOrderConfirmed();
  const orderId = await page.locator('#live-status').getAttribute('data-order-id');
  const row = page.locator(`#order-list li[data-order-id="${orderId}"]`);
  await row.waitFor();
  assert.match((await row.textContent()) ?? '', /1 × Copper kettle, 1 × Stoneware teapot/);
  assert.match((await row.textContent()) ?? '', /93[.,]50/);
});

test('a status event updates the catalog in place, keeping the pages loaded with More', { skip }, async () => {
  // A dozen products sorted before the others fill the first page; the kettle moves to the second.
  for (let i = 1; i <= 12; i++) {
    const n = String(i).padStart(2, '0');
    await createProduct(`apron-${n}`, `Apron ${n}`, 1500, 'Linen, with a pocket.');
  }
  await page.fill('#search', '');
  await page.click('#search-form button');
  await page.locator('.product', { hasText: 'Apron 12' }).waitFor();
  assert.equal(await page.locator('.product').count(), 12);
  await page.click('#more-products');
  await page.locator('.product', { hasText: 'Copper kettle' }).waitFor();
  assert.equal(await page.locator('.product').count(), 15);

  const before = await inStock('Copper kettle');
  await page.locator('.product', { hasText: 'Copper kettle' }).locator('button.add').click();
  await placeOrderConfirmed();
  // The kettle's card shows its new stock where it stands, on the second page, which stays.
  await page
    .locator('.product', { hasText: 'Copper kettle' })
    .locator('.stock', { hasText: `${before - 1} in stock` })
    .waitFor();
  assert.equal(await page.locator('.product').count(), 15);
  assert.equal(await page.locator('#more-products').isHidden(), true, 'every page is still loaded');
});

test('the live status reconnects after its connection drops, and updates still arrive', { skip }, async () => {
  await page.locator('.product', { hasText: 'Sencha' }).locator('button.add').click();
  await placeOrderConfirmed();
  await page.locator('#live-connection', { hasText: '(live)' }).waitFor();
  const opened = sockets;

  // The connection drops (the network, a BFF restart): the page opens another and subscribes again.
  proxy.drop();
  await page.locator('#live-connection', { hasText: '(reconnecting' }).waitFor();
  await page.locator('#live-connection', { hasText: '(live)' }).waitFor({ timeout: 10_000 });
  assert.equal(sockets, opened + 1, 'one new WebSocket');

  // Cancelling changes the status, and the change comes through the new connection.
  await page.click('#cancel-order');
  await page.locator('#live-status', { hasText: 'CANCELLED' }).waitFor({ timeout: 15_000 });
  assert.match((await page.locator('#live-history').textContent()) ?? '', /cancelled in the storefront/);
});

test('a confirmed order ships: the live panel shows its tracking number, then DELIVERED, and no cancel', { skip }, async () => {
  await page.locator('.product', { hasText: 'Sencha' }).locator('button.add').click();
  await placeOrderConfirmed();
  await page.locator('#shipment-status', { hasText: 'LABEL_CREATED' }).waitFor({ timeout: 15_000 });
  assert.equal(await page.locator('#cancel-order').isVisible(), true, 'not shipped yet: it can be cancelled');

  // The carrier picks it up, then delivers it; each step reaches the page live (orderUpdated).
  await page.locator('#shipment-status', { hasText: 'SHIPPED' }).waitFor({ timeout: 20_000 });
  assert.match((await page.locator('#shipment-tracking').textContent()) ?? '', /tracking SP[0-9A-F]{16}/);
  assert.equal(await page.locator('#cancel-order').isVisible(), false, 'a shipped order offers no cancel');
  await page.locator('#shipment-status', { hasText: 'DELIVERED' }).waitFor({ timeout: 20_000 });
  assert.deepEqual(
    (await page.locator('#shipment-history li .status').allTextContents()).map((text) => text.trim()),
    ['LABEL_CREATED', 'SHIPPED', 'DELIVERED'],
  );
  assert.match((await page.locator('#shipment-carrier').textContent()) ?? '', /SimPost/);
  await page.locator('#order-list li .status.shipment', { hasText: 'DELIVERED' }).waitFor({ timeout: 10_000 });
});
