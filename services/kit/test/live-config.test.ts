// Live settings against a real nats-server: where a value comes from (default,
// environment, bucket), changes applied while running, invalid values refused
// with the old one kept, deletes falling back, keys written the way the
// `nats kv` CLI writes them, the log level, and the RPC client following the
// kit.* settings.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type KV, type NatsConnection } from 'nats';
import { pino } from 'pino';
import { customers, settings } from '../../../subjects/index.ts';
import {
  ConfigError,
  LiveRpcClient,
  LiveSettings,
  ServiceError,
  followLogLevel,
  openConfigBucket,
  putSetting,
  type Logger,
} from '../index.ts';
import { startNats, waitFor, type TestNats } from '../../../test/harness.ts';

let nats: TestNats;
let nc: NatsConnection;
let kv: KV;
const opened: LiveSettings[] = [];

/** A logger whose lines the test can read. */
function capturingLogger(level = 'info'): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  return { log, lines };
}

async function open(process: string, environment: Record<string, unknown> = {}, log?: Logger): Promise<LiveSettings> {
  const live = await LiveSettings.open(nc, process, { log: log ?? capturingLogger().log, environment });
  opened.push(live);
  return live;
}

/** Resolves once `live` has taken in bucket revision `revision` of `contract`'s key (applied or not). */
function seen(live: LiveSettings, contract: (typeof settings.payments)[keyof typeof settings.payments], revision: number) {
  return waitFor(() => (live.state(contract).revision ?? 0) >= revision, { what: `${contract.key} at revision ${revision}` });
}

before(async () => {
  nats = await startNats();
  nc = await connect({ servers: nats.url, noAsyncTraces: true, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
  kv = await openConfigBucket(nc);
});

after(async () => {
  for (const live of opened) await live.stop();
  await nc?.close();
  await nats?.cleanup();
});

test('a value is the default, else the environment, else the bucket; deleting the key falls back', async () => {
  const limit = settings.payments.amountLimit;
  const fresh = await open('payments');
  assert.equal(fresh.get(limit), 100_000_000);
  assert.equal(fresh.state(limit).source, 'default');

  // The environment as text (process.env) or typed (a service's loaded settings).
  const fromText = await open('payments', { PAYMENT_AMOUNT_LIMIT: '5000' });
  const fromTyped = await open('payments', { PAYMENT_AMOUNT_LIMIT: 6000 });
  assert.equal(fromText.get(limit), 5000);
  assert.equal(fromTyped.get(limit), 6000);
  assert.equal(fromText.state(limit).source, 'environment');

  const revision = await kv.put(limit.key, '7000');
  await seen(fromText, limit, revision);
  assert.equal(fromText.get(limit), 7000);
  assert.deepEqual(fromText.state(limit), { value: 7000, source: 'bucket', revision });

  // A process that starts now reads the bucket's value at once.
  const late = await open('payments', { PAYMENT_AMOUNT_LIMIT: '5000' });
  assert.equal(late.get(limit), 7000);

  const changes: [number, number][] = [];
  fromText.onChange(limit, (value, previous) => changes.push([value, previous]));
  await kv.delete(limit.key);
  const afterDelete = (await kv.get(limit.key))!.revision;
  await seen(fromText, limit, afterDelete);
  await seen(fresh, limit, afterDelete);
  assert.equal(fromText.get(limit), 5000, 'back to the environment');
  assert.equal(fresh.get(limit), 100_000_000, 'back to the default');
  assert.deepEqual(changes, [[5000, 7000]]);
});

test('an invalid value is refused with the reason logged, and the old value stays', async () => {
  const { log, lines } = capturingLogger();
  const limit = settings.payments.amountLimit;
  const live = await open('payments', {}, log);
  const good = await kv.put(limit.key, '2500');
  await seen(live, limit, good);
  let calls = 0;
  live.onChange(limit, () => calls++);

  for (const bad of ['-1', 'lots', '12.5', '{"amount": 3}', '']) await kv.put(limit.key, bad);
  // Something valid after them: once it is applied, every refusal before it was seen.
  const marker = await kv.put(settings.payments.delayMs.key, '0');
  await seen(live, settings.payments.delayMs, marker);

  assert.equal(live.get(limit), 2500);
  assert.equal(live.state(limit).revision, good);
  assert.equal(calls, 0, 'no listener ran for a refused value');
  const refusals = lines.filter((line) => line.msg === 'setting refused: invalid value; the current one stays');
  assert.equal(refusals.length, 5);
  assert.ok(refusals.every((line) => line.key === limit.key && line.kept === 2500 && line.level === 40));
  assert.match(String(refusals[0]!.reason), /payments\.amount_limit: .*greater or equal to 0.*"-1"/);
  assert.match(String(refusals[1]!.reason), /Expected integer.*"lots"/);
});

test('keys as the nats CLI writes them: bare words for strings, JSON for the rest; unknown keys are ignored with a warning', async () => {
  const { log, lines } = capturingLogger('info');
  const live = await open('payments', {}, log);
  followLogLevel(live, log);
  const child = log.child({ component: 'made before the change' });
  assert.equal(child.isLevelEnabled('debug'), false);

  // `nats kv put config payments.log_level debug` stores the bytes "debug".
  const level = await kv.put('payments.log_level', 'debug');
  const tokens = await kv.put('payments.decline_tokens', '{"tok_stolen":"stolen card"}');
  await kv.put('payments.no_such_setting', '1');
  const marker = await kv.put(settings.payments.delayMs.key, '1');
  await seen(live, settings.payments.delayMs, marker);

  assert.equal(live.get(settings.logLevel.payments), 'debug');
  assert.equal(live.state(settings.logLevel.payments).revision, level);
  assert.equal(log.level, 'debug');
  assert.equal(child.isLevelEnabled('debug'), true, 'a child logger follows its parent');
  assert.deepEqual(live.get(settings.payments.declineTokens), { tok_stolen: 'stolen card' });
  assert.equal(live.state(settings.payments.declineTokens).revision, tokens);
  assert.ok(lines.some((line) => line.key === 'payments.no_such_setting' && line.level === 40));

  // JSON-quoted strings work too; an unknown level is refused.
  await kv.put('payments.log_level', '"warn"');
  await kv.put('payments.log_level', 'loud');
  const last = await kv.put(settings.payments.delayMs.key, '2');
  await seen(live, settings.payments.delayMs, last);
  assert.equal(log.level, 'warn');
  await kv.delete('payments.log_level');
});

test("a setting another process reads is not this one's; a bad environment value stops the start", async () => {
  const live = await open('payments');
  assert.throws(() => live.get(settings.bff.rateLimitMax), /payments does not read the setting bff\.rate_limit_max/);
  await assert.rejects(
    open('payments', { PAYMENT_FAILURE_RATE: '2', PAYMENT_DECLINE_TOKENS: '["tok_decline"]' }),
    (error) =>
      error instanceof ConfigError &&
      /PAYMENT_FAILURE_RATE \("2"\): payments\.failure_rate: .*less or equal to 1/.test(error.message) &&
      /PAYMENT_DECLINE_TOKENS/.test(error.message),
  );
});

test('putSetting checks before it writes', async () => {
  const before = (await kv.status()).values;
  await assert.rejects(putSetting(kv, settings.payments.failureRate, 1.5), ConfigError);
  await assert.rejects(putSetting(kv, settings.bff.rateLimitMax, '10'), ConfigError);
  assert.equal((await kv.status()).values, before, 'nothing was written');
  const revision = await putSetting(kv, settings.payments.failureRate, 0.5);
  assert.equal((await kv.get(settings.payments.failureRate.key))!.string(), '0.5');
  assert.ok(revision > 0);
  await kv.delete(settings.payments.failureRate.key);
});

test('the RPC client follows kit.rpc_timeout_ms and kit.rpc_retries while it runs', async () => {
  const live = await open('orders', { RPC_TIMEOUT_MS: 5000 });
  const client = new LiveRpcClient(nc, live);
  // A subscriber that counts requests and never answers: every attempt times out.
  let attempts = 0;
  const sub = nc.subscribe(customers.get.subject, { callback: () => attempts++ });
  const id = '00000000-0000-4000-8000-0000000000aa';
  try {
    assert.equal(client.options.timeoutMs, 5000);
    const timeout = await kv.put(settings.kit.rpcTimeoutMs.key, '50');
    const retries = await kv.put(settings.kit.rpcRetries.key, '1');
    await waitFor(
      () => live.state(settings.kit.rpcRetries).revision === retries && live.state(settings.kit.rpcTimeoutMs).revision === timeout,
    );

    await assert.rejects(client.call(customers.get, { id }), (error) => {
      assert.ok(error instanceof ServiceError);
      assert.equal(error.code, 'TIMEOUT');
      assert.match(error.message, /within 50 ms/);
      return true;
    });
    assert.equal(attempts, 2, 'one retry');

    const none = await kv.put(settings.kit.rpcRetries.key, '0');
    await waitFor(() => live.state(settings.kit.rpcRetries).revision === none);
    attempts = 0;
    await assert.rejects(client.call(customers.get, { id }), (error) => error instanceof ServiceError && error.code === 'TIMEOUT');
    assert.equal(attempts, 1, 'no retry');
    // A per-call timeout still wins.
    await assert.rejects(client.call(customers.get, { id }, { timeoutMs: 30 }), /within 30 ms/);
  } finally {
    sub.unsubscribe();
    client.close();
    await kv.delete(settings.kit.rpcTimeoutMs.key);
    await kv.delete(settings.kit.rpcRetries.key);
  }
});

test('the watch outlives a restart of nats-server', { timeout: 50_000 }, async () => {
  const live = await open('payments');
  const { port, storeDir } = nats;
  await nats.stop();
  nats = await startNats({ port, storeDir });
  // The test's own connection reconnects too; write once it is back.
  const revision = await waitFor(
    async () => {
      try {
        return await kv.put(settings.payments.amountLimit.key, '77');
      } catch {
        return undefined;
      }
    },
    { timeoutMs: 20_000, what: 'a write after the restart' },
  );
  // The watch's ordered consumer notices the restart by its missed heartbeats (about 5 s) and resumes.
  await waitFor(() => live.state(settings.payments.amountLimit).revision === revision, {
    timeoutMs: 30_000,
    what: 'the change after the restart',
  });
  assert.equal(live.get(settings.payments.amountLimit), 77);
});
