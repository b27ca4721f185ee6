// The storefront in a real headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core): register, order, and watch the order become
// CONFIRMED live. Leaves a screenshot at .tmp/storefront.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ROOT } from '../../test/harness.ts';
import { ADMIN_EMAIL, ok, startStack, type Stack } from './stack.ts';

const CHROMIUM = '/usr/bin/chromium';
const skip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is absent (apt-get install chromium)`;

let stack: Stack;
let browser: Browser;
let page: Page;

before(async () => {
  if (skip) return;
  stack = await startStack();
  const admin = await ok(stack.url, `mutation { register(email: "${ADMIN_EMAIL}", name: "Admin", password: "correct horse") { token } }`);
  for (const [sku, name, amount, description] of [
    ['kettle', 'Copper kettle', 5900, 'Boils a litre in three minutes.'],
    ['teapot', 'Stoneware teapot', 3450, 'Keeps four cups warm.'],
    ['sencha', 'Sencha, 100 g', 1200, 'Grassy Japanese green tea.'],
  ] as const) {
    await ok(
      stack.url,
      `mutation($input: CreateProductInput!) { createProduct(input: $input) { id } }`,
      { input: { sku, name, description, price: { amount, currency: 'EUR' }, initialStock: 25 } },
      admin.register.token,
    );
  }
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
});

after(async () => {
  await browser?.close();
  await stack?.close();
});

test('a shopper registers, orders, and sees the order CONFIRMED live', { skip }, async () => {
  await page.goto(stack.url);
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
