// Live configuration while the shop runs: the customer, product, order and
// payment services on one real nats-server and PostgreSQL, orders going
// through the saga, and settings changed through the `config` bucket — with
// `npm run config` as a real child process, and with raw writes as the
// `nats kv` CLI makes them. The payment simulator's decline rule and amount
// limit, the order deadline and the ordering feature flag apply to the next
// order; an invalid value is refused and the old one keeps applying.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connect, type KV, type NatsConnection } from 'nats';
import {
  allSettings,
  customers,
  orders,
  payments,
  products,
  settings,
  settingByKey,
  settingsOf,
  PROCESSES,
  SERVICES,
  registry,
  SETTING_KEYWORD,
  type Order,
  type Payment,
  type SettingContract,
} from '../subjects/index.ts';
import { Type } from '@sinclair/typebox';
import {
  RpcClient,
  ServiceSettings,
  loadConfig,
  openConfigBucket,
  serviceSettingsSchema,
  type RunningService,
} from '../services/kit/index.ts';
import { serviceDefinition } from '../services/kit/definitions.ts';
import { CustomerSettings, customerService } from '../services/customer/app.ts';
import { ProductSettings, productService } from '../services/product/app.ts';
import { OrderSettings, orderService } from '../services/order/app.ts';
import { PaymentSettings, paymentService } from '../services/payment/app.ts';
import { BffSettings } from '../bff/app.ts';
import { ROOT, dropTestDatabases, startNats, startTestService, waitFor, type TestNats } from './harness.ts';
import { withCode } from './messaging.ts';

const ENV_LIMIT = 50_000;
const UNIT_PRICE = 1000;

let nats: TestNats;
const services: RunningService[] = [];
let payment: RunningService;
let order: RunningService;
let nc: NatsConnection;
let kv: KV;
let client: RpcClient;
let customerId: string;
let productId: string;

before(async () => {
  nats = await startNats();
  services.push(await startTestService(customerService, nats, { settings: CustomerSettings }));
  services.push(await startTestService(productService, nats, { settings: ProductSettings }));
  order = await startTestService(orderService, nats, { settings: OrderSettings });
  services.push(order);
  payment = await startTestService(paymentService, nats, {
    settings: PaymentSettings,
    env: { PAYMENT_AMOUNT_LIMIT: String(ENV_LIMIT) },
  });
  services.push(payment);
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  kv = await openConfigBucket(nc);
  client = new RpcClient(nc, { timeoutMs: 5000 });
  customerId = (await client.call(customers.register, { email: `${randomUUID()}@example.com`, name: 'Ada', password: 'correct horse' })).id;
  const sku = `SKU-${randomUUID().slice(0, 8)}`;
  productId = (
    await client.call(products.create, { sku, name: 'Thing', price: { amount: UNIT_PRICE, currency: 'EUR' }, initialStock: 1000 })
  ).id;
});

after(async () => {
  client?.close();
  await nc?.close();
  for (const service of services.reverse()) await service.stop();
  await nats?.cleanup();
  await dropTestDatabases();
});

const run = promisify(execFile);

/** `npm run config -- <args>` as a child process against the test's nats-server. */
async function config(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [join(ROOT, 'scripts', 'config.ts'), ...args], {
      env: { ...process.env, NATS_URL: nats.url },
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

/** Waits until `service` has taken in `revision` of the key of `contract` (applied or refused). */
function applied(service: RunningService, contract: SettingContract, revision: number): Promise<true> {
  return waitFor(() => (service.context.settings.state(contract).revision ?? 0) >= revision, {
    what: `${contract.key} revision ${revision} in ${service.context.name}`,
  });
}

/** Places an order of `quantity` units and follows the saga to its end: the order and its payment. */
async function placeOrder(token: string, quantity = 1): Promise<{ order: Order; payment: Payment }> {
  const placed = await client.call(orders.place, {
    idempotencyKey: randomUUID(),
    customerId,
    lines: [{ productId, quantity }],
    paymentToken: token,
  });
  const settled = await waitFor(
    async () => {
      const current = await client.call(orders.get, { id: placed.id });
      return current.status === 'PENDING' ? undefined : current;
    },
    { what: `order ${placed.id} to leave PENDING` },
  );
  return { order: settled, payment: await client.call(payments.getByOrder, { orderId: placed.id }) };
}

const revisionIn = (output: string) => Number(/revision (\d+)/.exec(output)?.[1]);

test('a decline rule changed through the bucket applies to the next order; an invalid one is refused and the old rule stays', async () => {
  const tokens = settings.payments.declineTokens;
  assert.equal((await placeOrder('tok_stolen')).order.status, 'CONFIRMED', 'not a declining token yet');
  assert.equal((await placeOrder('tok_decline')).payment.declineReason, 'card declined', 'the default rule');

  const set = await config('set', tokens.key, '{"tok_decline":"card declined","tok_stolen":"stolen card"}');
  assert.equal(set.code, 0, set.stderr);
  await applied(payment, tokens, revisionIn(set.stdout));

  const declined = await placeOrder('tok_stolen');
  assert.equal(declined.order.status, 'CANCELLED');
  assert.equal(declined.order.cancelReason, 'PAYMENT_DECLINED');
  assert.equal(declined.payment.status, 'DECLINED');
  assert.equal(declined.payment.declineReason, 'stolen card');
  assert.equal((await placeOrder('tok_visa')).order.status, 'CONFIRMED');

  // The CLI refuses a value outside the schema and writes nothing.
  const before = (await kv.get(tokens.key))!.revision;
  const refused = await config('set', tokens.key, '["tok_visa"]');
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /refused, nothing written: payments\.decline_tokens: /);
  assert.match(refused.stderr, /accepts a JSON object/);
  assert.equal((await kv.get(tokens.key))!.revision, before);

  // Written past the CLI (as `nats kv put config payments.decline_tokens tok_visa` would): the service refuses it.
  const bad = await kv.put(tokens.key, 'tok_visa');
  // Something valid after it: once that is applied, the bad revision has been seen (and refused).
  const marker = await kv.put(settings.payments.delayMs.key, '0');
  await applied(payment, settings.payments.delayMs, marker);
  assert.ok(bad < marker);
  assert.equal(payment.context.settings.state(tokens).revision, before, 'still the value of the last valid revision');
  const again = await placeOrder('tok_stolen');
  assert.equal(again.payment.declineReason, 'stolen card', 'the old rule still applies');
  assert.equal((await placeOrder('tok_visa')).order.status, 'CONFIRMED');

  // History comes from the bucket's revisions, the refused one marked.
  const history = await config('history', tokens.key, '--json');
  assert.equal(history.code, 0, history.stderr);
  const revisions = JSON.parse(history.stdout) as { revision: number; operation: string; value?: string; refused?: string }[];
  assert.deepEqual(
    revisions.map((entry) => [entry.revision, entry.value, entry.refused === undefined]),
    [
      [before, '{"tok_decline":"card declined","tok_stolen":"stolen card"}', true],
      [bad, 'tok_visa', false],
    ],
  );
  const readable = await config('history', tokens.key);
  assert.match(readable.stdout, /tok_visa {2}<- refused by the processes: payments\.decline_tokens: /);
});

test('the amount limit: set through the CLI, applied at once, and unset back to the environment value', async () => {
  const limit = settings.payments.amountLimit;
  const quantity = 6; // 6 000 minor units: under the environment's limit
  assert.equal(payment.context.settings.get(limit), ENV_LIMIT);
  assert.equal((await placeOrder('tok_visa', quantity)).order.status, 'CONFIRMED');

  const set = await config('set', limit.key, '5000');
  assert.equal(set.code, 0, set.stderr);
  assert.match(set.stdout, /payments\.amount_limit = 5000 \(revision \d+; was not set\)/);
  await applied(payment, limit, revisionIn(set.stdout));
  const over = await placeOrder('tok_visa', quantity);
  assert.equal(over.order.status, 'CANCELLED');
  assert.equal(over.payment.declineReason, 'amount over limit');

  const get = JSON.parse((await config('get', limit.key, '--json')).stdout) as { value: unknown; env: string; default: unknown };
  assert.deepEqual(
    { value: get.value, env: get.env, default: get.default },
    { value: 5000, env: 'PAYMENT_AMOUNT_LIMIT', default: 100_000_000 },
  );

  const unset = await config('unset', limit.key);
  assert.equal(unset.code, 0, unset.stderr);
  await applied(payment, limit, await lastRevision(limit.key));
  assert.equal(payment.context.settings.get(limit), ENV_LIMIT);
  assert.equal(payment.context.settings.state(limit).source, 'environment');
  assert.equal((await placeOrder('tok_visa', quantity)).order.status, 'CONFIRMED');
});

test('the order deadline applies to orders placed after the change; an invalid one is refused', async () => {
  const deadline = settings.orders.deadlineMs;
  const span = (placed: Order) => Date.parse(placed.deadlineAt) - Date.parse(placed.createdAt);
  const place = () =>
    client.call(orders.place, { idempotencyKey: randomUUID(), customerId, lines: [{ productId, quantity: 1 }], paymentToken: 'tok_visa' });
  assert.equal(span(await place()), 30_000, 'the default');

  const revision = await kv.put(deadline.key, '45000');
  await applied(order, deadline, revision);
  assert.equal(span(await place()), 45_000);

  const bad = await kv.put(deadline.key, '50'); // under the minimum of 100 ms
  const marker = await kv.put(settings.logLevel.orders.key, 'silent');
  await applied(order, settings.logLevel.orders, marker);
  assert.ok(bad < marker);
  assert.equal(order.context.settings.get(deadline), 45_000);
  assert.equal(span(await place()), 45_000, 'the old deadline still applies');
  await kv.delete(deadline.key);
});

test('a feature flag: features.orders_accepting=false pauses ordering, and only that', async () => {
  const flag = settings.features.ordersAccepting;
  const before = (await client.call(orders.listByCustomer, { customerId, first: 100 })).items.length;
  const off = await config('set', flag.key, 'false');
  assert.equal(off.code, 0, off.stderr);
  await applied(order, flag, revisionIn(off.stdout));
  await assert.rejects(
    client.call(orders.place, { idempotencyKey: randomUUID(), customerId, lines: [{ productId, quantity: 1 }], paymentToken: 'tok_visa' }),
    withCode('SERVICE_UNAVAILABLE'),
  );
  assert.equal((await client.call(orders.listByCustomer, { customerId, first: 100 })).items.length, before, 'nothing was stored');

  const on = await config('set', flag.key, 'true');
  await applied(order, flag, revisionIn(on.stdout));
  assert.equal((await placeOrder('tok_visa')).order.status, 'CONFIRMED');
});

async function lastRevision(key: string): Promise<number> {
  let last = 0;
  for await (const entry of await kv.history({ key })) last = entry.revision;
  return last;
}

test('the config CLI: ls lists every key, and mistakes get a message saying what to do', async () => {
  const ls = await config('ls', '--json');
  assert.equal(ls.code, 0, ls.stderr);
  const rows = JSON.parse(ls.stdout) as { key: string; default: unknown; readers: string[] }[];
  assert.deepEqual(
    rows.map((row) => row.key),
    allSettings.map((contract) => contract.key),
  );
  const table = await config('ls');
  // The first test left a value the processes refuse in the bucket: ls says so.
  assert.match(table.stdout, /^payments\.decline_tokens +tok_visa \(INVALID, ignored\) /m);
  assert.match(table.stdout, /^kit\.rpc_timeout_ms +- +2000 +RPC_TIMEOUT_MS +every process$/m);

  const [unknown, noValue, badLevel, noCommand] = await Promise.all([
    config('set', 'payments.amount_limt', '5'),
    config('set', 'bff.rate_limit_max'),
    config('set', 'payments.log_level', 'loud'),
    config('frobnicate'),
  ]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown key "payments\.amount_limt"\. Keys of payments: .*payments\.amount_limit/);
  assert.equal(noValue.code, 2);
  assert.match(noValue.stderr, /set needs a value: npm run config -- set bff\.rate_limit_max <value>/);
  assert.equal(badLevel.code, 1);
  assert.match(badLevel.stderr, /accepts one of fatal, error, warn, info, debug, trace, silent/);
  assert.equal(noCommand.code, 2);
  assert.match(noCommand.stderr, /unknown command "frobnicate"/);
  assert.equal(await kv.get('payments.amount_limt'), null, 'nothing was written');
});

/** Variables of `schema` that a live setting names, declared there by hand instead of taken from the setting. */
function declaredAgain(schema: Record<string, object>): string[] {
  return Object.entries(schema)
    .filter(([name]) => allSettings.some((contract) => contract.env === name))
    .filter(([name, variable]) => {
      const key = (variable as Record<string, unknown>)[SETTING_KEYWORD];
      return typeof key !== 'string' || settingByKey(key)?.env !== name;
    })
    .map(([name]) => name);
}

test('each variable of a live setting is declared once, by the setting; environment schemas take it from there', async () => {
  // A process reads each variable through one setting only.
  for (const process of PROCESSES) {
    const variables = settingsOf(process).flatMap((contract) => (contract.env ? [contract.env] : []));
    assert.deepEqual(variables, [...new Set(variables)], `${process} reads each variable once`);
  }
  const schemas: Record<string, Record<string, object>> = { ServiceSettings };
  for (const name of SERVICES) {
    const definition = await serviceDefinition(registry[name]);
    schemas[`${name} (app.ts)`] = definition.settings ?? {};
    schemas[`${name} (at start)`] = serviceSettingsSchema(definition);
  }
  const problems = Object.entries(schemas).flatMap(([owner, schema]) => declaredAgain(schema).map((name) => `${owner}: ${name}`));
  assert.deepEqual(problems, []);
  // At start a service reads every variable of its settings, so a bad one stops it there.
  assert.ok('ORDER_DEADLINE_MS' in serviceSettingsSchema(await serviceDefinition(registry.orders)));
  assert.ok('PAYMENT_DECLINE_TOKENS' in serviceSettingsSchema(await serviceDefinition(registry.payments)));
  // The check has teeth: a copy of RPC_TIMEOUT_MS declared by hand is found.
  assert.deepEqual(declaredAgain({ RPC_TIMEOUT_MS: Type.Integer({ default: 2000 }), SMTP_PORT: Type.Integer() }), ['RPC_TIMEOUT_MS']);
});

test("the BFF's environment schema takes its settings' variables from them too", () => {
  assert.deepEqual(declaredAgain(BffSettings), []);
});

test('a variable of a live setting reads at start as the setting reads the bucket', () => {
  const schema = serviceSettingsSchema({ name: 'payments' });
  const loaded = loadConfig(schema, { PAYMENT_DECLINE_TOKENS: '{"tok_x":"no"}', LOG_LEVEL: 'debug', ORDER_DEADLINE_MS: 'x' });
  assert.deepEqual(loaded.PAYMENT_DECLINE_TOKENS, { tok_x: 'no' });
  assert.equal(loaded.LOG_LEVEL, 'debug');
  assert.equal(loaded.PAYMENT_AMOUNT_LIMIT, settings.payments.amountLimit.default);
  assert.throws(
    () => loadConfig(schema, { PAYMENT_DECLINE_TOKENS: '[1]' }),
    /PAYMENT_DECLINE_TOKENS \("\[1\]"\): payments\.decline_tokens/,
  );
  assert.throws(() => loadConfig(schema, { RPC_TIMEOUT_MS: '5' }), /RPC_TIMEOUT_MS \("5"\): kit\.rpc_timeout_ms/);
});
