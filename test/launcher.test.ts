// The launcher (scripts/lib/launcher.ts) that npm start, the benchmarks and the
// chaos tests start processes with: lines reach the caller, stop() escalates
// from SIGTERM to SIGKILL past its grace, a process that exits on its own is
// started again (not one that exits 78, a configuration error), and a
// registry process gets the environment the registry gives it.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { registry } from '../subjects/index.ts';
import { launch, processEnvironment, type Exit } from '../scripts/lib/launcher.ts';
import { waitFor } from './harness.ts';

const dir = await mkdtemp(join(tmpdir(), 'shop-launcher-'));
after(() => rm(dir, { recursive: true, force: true }));

async function script(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

test('every line reaches the caller, from stdout and stderr', async () => {
  const lines: string[] = [];
  const child = launch({
    name: 'talker',
    script: await script('talker.mjs', "console.log('one'); console.error('two'); console.log(process.env.GREETING);"),
    env: { GREETING: 'hello' },
    onLine: (line, stream) => lines.push(`${stream}:${line}`),
  });
  assert.deepEqual(await child.exited, { code: 0, signal: null });
  await waitFor(() => lines.length === 3);
  assert.deepEqual(lines.sort(), ['stderr:two', 'stdout:hello', 'stdout:one']);
});

test('stop() sends SIGTERM, and SIGKILL to a process still running after the grace', async () => {
  const said: string[] = [];
  const stubborn = launch({
    name: 'stubborn',
    script: await script(
      'stubborn.mjs',
      "process.on('SIGTERM', () => console.log('ignored')); console.log('up'); setInterval(() => {}, 1000);",
    ),
    onLine: (line) => said.push(line),
  });
  // Its SIGTERM handler is in place once it says so (Node may take a while to start on a loaded machine).
  await waitFor(() => said.includes('up'), { what: 'the stubborn process to be up' });
  const started = Date.now();
  const exit = await stubborn.stop(500);
  assert.equal(exit?.signal, 'SIGKILL');
  assert.ok(Date.now() - started >= 450, 'it was given its grace');
  const polite = launch({ name: 'polite', script: await script('polite.mjs', 'setInterval(() => {}, 1000);') });
  assert.equal((await polite.stop(5000))?.signal, 'SIGTERM');
});

test('with restart, a process that exits on its own starts again; one that exits 78 does not', async () => {
  const restarts: Exit[] = [];
  const flaky = launch({
    name: 'flaky',
    script: await script('flaky.mjs', 'process.exit(3);'),
    restart: { onRestart: (exit) => restarts.push(exit) },
  });
  await waitFor(() => restarts.length >= 2, { timeoutMs: 10_000, what: 'two restarts' });
  assert.deepEqual(restarts[0], { code: 3, signal: null });
  await flaky.stop();
  const count = restarts.length;
  await new Promise((resolve) => setTimeout(resolve, 1200));
  assert.equal(restarts.length, count, 'stopped: no more restarts');

  let gaveUp: Exit | undefined;
  const misconfigured = launch({
    name: 'misconfigured',
    script: await script('misconfigured.mjs', 'process.exit(78);'),
    restart: { onRestart: () => assert.fail('restarted after a configuration error'), onGiveUp: (exit) => (gaveUp = exit) },
  });
  await misconfigured.exited;
  await waitFor(() => gaveUp);
  assert.equal(gaveUp?.code, 78);
  assert.equal(misconfigured.running, false);
});

test('a process of the registry gets its name, its NATS user when its password is set, and its ports', () => {
  const env = processEnvironment(registry.orders, {
    opsPort: 9467,
    databaseUrl: 'postgresql://db/orders',
    env: { NATS_ORDERS_PASSWORD: 'secret' },
  });
  assert.deepEqual(env, {
    OTEL_SERVICE_NAME: 'orders',
    NATS_USER: 'orders',
    NATS_PASSWORD: 'secret',
    OPS_PORT: '9467',
    DATABASE_URL: 'postgresql://db/orders',
  });
  assert.deepEqual(processEnvironment(registry.bff, { env: {} }), { OTEL_SERVICE_NAME: 'bff' });
  // NATS_USER set by the operator wins: the launcher adds no user of its own.
  assert.equal(processEnvironment(registry.bff, { env: { NATS_USER: 'admin', NATS_BFF_PASSWORD: 'x' } }).NATS_USER, undefined);
});
