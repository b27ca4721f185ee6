// The BFF's settings: a missing or weak JWT_SECRET stops the process at start
// with a message naming it, JWT_TTL reads as a duration, and the log level
// decides whether each request is logged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { connect } from 'nats';
import { pino } from 'pino';
import { ConfigError, loadConfig } from '../../services/kit/index.ts';
import { ROOT, startNats, waitFor } from '../../test/harness.ts';
import { BffSettings, build } from '../app.ts';
import { ttlSeconds } from '../plugins/auth.ts';
import { JWT_SECRET } from './stack.ts';

test('JWT_SECRET is required and at least 32 characters; the rest has defaults', () => {
  assert.throws(
    () => loadConfig(BffSettings, {}),
    (error: Error) => error instanceof ConfigError && /JWT_SECRET \(unset\)/.test(error.message),
  );
  assert.throws(() => loadConfig(BffSettings, { JWT_SECRET: 'short' }), /JWT_SECRET \("short"\)/);
  const settings = loadConfig(BffSettings, { JWT_SECRET });
  assert.equal(settings.BFF_PORT, 4000);
  assert.equal(settings.JWT_TTL, '1h');
  assert.equal(settings.GRAPHQL_DEV, false);
  assert.equal(settings.GRAPHQL_DEPTH_LIMIT, 8);
  assert.equal(settings.RATE_LIMIT_MAX, 300);
  assert.ok(!('DATABASE_URL' in BffSettings), 'the BFF has no database');
  assert.throws(() => loadConfig(BffSettings, { JWT_SECRET, JWT_TTL: '1 week' }), /JWT_TTL/);
  assert.throws(() => loadConfig(BffSettings, { JWT_SECRET, RATE_LIMIT_MAX: '0' }), /RATE_LIMIT_MAX/);
});

test('JWT_TTL is seconds or a number with s, m, h or d', () => {
  assert.equal(ttlSeconds('90'), 90);
  assert.equal(ttlSeconds('45s'), 45);
  assert.equal(ttlSeconds('15m'), 900);
  assert.equal(ttlSeconds('1h'), 3600);
  assert.equal(ttlSeconds('7d'), 604_800);
});

test('bff/main.ts without JWT_SECRET exits with EX_CONFIG (78) and says why', async () => {
  const env: NodeJS.ProcessEnv = { ...process.env, NATS_URL: 'nats://127.0.0.1:1' };
  delete env.JWT_SECRET;
  const child = spawn(process.execPath, [join(ROOT, 'bff', 'main.ts')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  assert.equal(code, 78);
  assert.match(stderr, /JWT_SECRET/);
});

test('bff/main.ts serves, then stops gracefully on SIGTERM', async () => {
  const nats = await startNats();
  const child = spawn(process.execPath, [join(ROOT, 'bff', 'main.ts')], {
    env: { ...process.env, NATS_URL: nats.url, JWT_SECRET, BFF_PORT: '0', BFF_HOST: '127.0.0.1', LOG_LEVEL: 'info', LOG_FORMAT: 'json' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  child.stdout.on('data', (chunk: Buffer) => lines.push(...chunk.toString().split('\n').filter(Boolean)));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  try {
    const entries = () => lines.map((line) => JSON.parse(line) as { msg: string });
    await waitFor(() => entries().some((entry) => entry.msg === 'service started'), { what: 'the BFF to start', timeoutMs: 20_000 });
    // fastify's own line says where it listens (BFF_PORT=0 picks a free port).
    const address = entries()
      .map((entry) => /^Server listening at (http:\/\/\S+)$/.exec(entry.msg)?.[1])
      .find(Boolean)!;
    const live = await fetch(`${address}/health/live`);
    assert.equal(live.status, 200);
    const page = await fetch(`${address}/`);
    assert.match(await page.text(), /The Shop/);
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
    assert.ok(lines.some((line) => line.includes('"service stopped"')));
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    await nats.cleanup();
  }
});

test("fastify's line per request and per answer are written at debug, not at info", async () => {
  const nats = await startNats();
  const nc = await connect({ servers: nats.url, noAsyncTraces: true });
  const messages: string[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => messages.push((JSON.parse(line) as { msg: string }).msg) });
  const app = await build({ nc, log, settings: loadConfig(BffSettings, { JWT_SECRET, NATS_URL: nats.url }) });
  try {
    const perRequest = () => messages.filter((msg) => msg === 'incoming request' || msg === 'request completed');
    assert.equal((await app.inject({ url: '/health/live' })).statusCode, 200);
    assert.deepEqual(perRequest(), []);
    // What followLogLevel does when bff.log_level changes in the config bucket.
    log.level = 'debug';
    assert.equal((await app.inject({ url: '/health/live' })).statusCode, 200);
    assert.deepEqual(perRequest(), ['incoming request', 'request completed']);
  } finally {
    await app.close();
    await nc.drain();
    await nats.cleanup();
  }
});
