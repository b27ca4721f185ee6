// The BFF's rate limit follows the `config` bucket while it runs: lowered,
// the next client is cut off sooner (429); an invalid value is refused and
// the limit stays; raised again, requests pass. A real nats-server; the BFF
// answers `{ __typename }` without any service behind it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type KV, type NatsConnection } from 'nats';
import { settings, type SettingContract } from '../subjects/index.ts';
import { createLogger, loadConfig, openConfigBucket } from '../services/kit/index.ts';
import { BffSettings, build, type Bff } from '../bff/app.ts';
import { startNats, waitFor, type TestNats } from './harness.ts';

let nats: TestNats;
let nc: NatsConnection;
let admin: NatsConnection;
let kv: KV;
let bff: Bff;

before(async () => {
  nats = await startNats();
  const config = loadConfig(BffSettings, {
    NATS_URL: nats.url,
    JWT_SECRET: 'test-secret-test-secret-test-secret-0123',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    RATE_LIMIT_MAX: '100',
    RATE_LIMIT_WINDOW_MS: '600000',
  });
  nc = await connect({ servers: nats.url, name: 'bff', noAsyncTraces: true });
  bff = await build({ nc, log: createLogger('bff', config.LOG_LEVEL), settings: config });
  await bff.ready();
  admin = await connect({ servers: nats.url, noAsyncTraces: true });
  kv = await openConfigBucket(admin);
});

after(async () => {
  await bff?.close();
  await nc?.drain().catch(() => {});
  await admin?.close();
  await nats?.cleanup();
});

/** One GraphQL request from `ip` (the limit is counted per IP without a token). */
const ask = (ip: string) => bff.inject({ method: 'POST', url: '/graphql', remoteAddress: ip, payload: { query: '{ __typename }' } });

/** Waits until the BFF has taken in `revision` of `contract`'s key (applied or refused). */
const seen = (contract: SettingContract, revision: number) =>
  waitFor(() => (bff.liveSettings.state(contract).revision ?? 0) >= revision, { what: `${contract.key} revision ${revision}` });

test('lowering bff.rate_limit_max live gives 429 sooner; an invalid value is refused; raising it lets requests pass', async () => {
  const max = settings.bff.rateLimitMax;
  for (let i = 0; i < 5; i++) {
    const reply = await ask('10.0.0.1');
    assert.equal(reply.statusCode, 200, reply.body);
    assert.equal(reply.headers['x-ratelimit-limit'], '100');
  }

  await seen(max, await kv.put(max.key, '3'));
  assert.equal((await ask('10.0.0.1')).statusCode, 429, 'a client past the new limit is cut off at once');
  const fresh = [];
  for (let i = 0; i < 4; i++) fresh.push((await ask('10.0.0.2')).statusCode);
  assert.deepEqual(fresh, [200, 200, 200, 429], 'a new client gets three requests');

  // `nats kv put config bff.rate_limit_max 0` gets past the CLI's check; the BFF refuses it.
  const bad = await kv.put(max.key, '0');
  const marker = await kv.put(settings.logLevel.bff.key, 'silent');
  await seen(settings.logLevel.bff, marker);
  assert.ok(bad < marker);
  assert.equal(bff.liveSettings.get(max), 3);
  const stillLimited = await ask('10.0.0.3');
  assert.equal(stillLimited.headers['x-ratelimit-limit'], '3');

  await seen(max, await kv.put(max.key, '1000'));
  const again = await ask('10.0.0.2');
  assert.equal(again.statusCode, 200);
  assert.equal(again.headers['x-ratelimit-limit'], '1000');
});

test('the BFF follows bff.log_level and the kit settings of its RPC client', async () => {
  await seen(settings.logLevel.bff, await kv.put(settings.logLevel.bff.key, 'warn'));
  assert.equal(bff.log.level, 'warn');
  await seen(settings.kit.rpcTimeoutMs, await kv.put(settings.kit.rpcTimeoutMs.key, '1234'));
  assert.equal(bff.liveSettings.get(settings.kit.rpcTimeoutMs), 1234);
});
