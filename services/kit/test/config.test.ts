// Configuration: strings from the environment become typed settings with
// defaults; a wrong value names its variable, and a process's main stops with
// EX_CONFIG (78) before touching NATS or PostgreSQL.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Type } from '@sinclair/typebox';
import { ConfigError, ServiceSettings, loadConfig } from '../index.ts';
import { CustomerSettings } from '../../customer/app.ts';
import { ROOT, dropTestDatabases, testDatabaseUrl } from '../../../test/harness.ts';

after(async () => {
  await dropTestDatabases();
});

test('loadConfig fills defaults for unset and empty variables', () => {
  const settings = loadConfig(ServiceSettings, { LOG_LEVEL: '' });
  assert.equal(settings.NATS_URL, 'nats://127.0.0.1:4222');
  assert.equal(settings.LOG_LEVEL, 'info');
  assert.equal(settings.STREAM_REPLICAS, 1);
  assert.equal(settings.RPC_TIMEOUT_MS, 2000);
  assert.equal(settings.SHUTDOWN_TIMEOUT_MS, 10_000);
  assert.equal(settings.DATABASE_URL, undefined);
  assert.equal(settings.ZIPKIN_URL, undefined);
});

test('loadConfig converts strings to numbers and keeps given values', () => {
  const settings = loadConfig(ServiceSettings, {
    NATS_URL: 'nats://10.0.0.1:4222, nats://10.0.0.2:4222',
    LOG_LEVEL: 'debug',
    STREAM_REPLICAS: '3',
    RPC_TIMEOUT_MS: '1500',
    DATABASE_URL: 'postgresql://shop@db:5432/shop_customers',
    UNRELATED: 'ignored',
  });
  assert.equal(settings.RPC_TIMEOUT_MS, 1500);
  assert.equal(settings.STREAM_REPLICAS, 3);
  assert.equal(settings.LOG_LEVEL, 'debug');
  assert.equal(settings.NATS_URL, 'nats://10.0.0.1:4222, nats://10.0.0.2:4222');
  assert.equal(settings.DATABASE_URL, 'postgresql://shop@db:5432/shop_customers');
  assert.equal(Object.hasOwn(settings, 'UNRELATED'), false);
});

test('loadConfig converts booleans and reads a service schema', () => {
  const settings = loadConfig(
    { ...CustomerSettings, FEATURE: Type.Boolean({ default: false }) },
    {
      ADMIN_EMAILS: 'boss@shop.test',
      FEATURE: 'true',
    },
  );
  assert.equal(settings.FEATURE, true);
  assert.equal(settings.ADMIN_EMAILS, 'boss@shop.test');
  assert.equal(loadConfig(CustomerSettings, {}).ADMIN_EMAILS, '');
});

test('a bad variable gives a ConfigError naming it and the value given', () => {
  assert.throws(
    () => loadConfig(ServiceSettings, { RPC_TIMEOUT_MS: 'abc' }),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /RPC_TIMEOUT_MS \("abc"\)/);
      return true;
    },
  );
  assert.throws(() => loadConfig(ServiceSettings, { RPC_TIMEOUT_MS: '5' }), /RPC_TIMEOUT_MS \("5"\)/);
  assert.throws(() => loadConfig(ServiceSettings, { NATS_URL: 'notaurl' }), /NATS_URL \("notaurl"\)/);
  assert.throws(() => loadConfig(ServiceSettings, { DATABASE_URL: 'mysql://db/x' }), /DATABASE_URL/);
  assert.throws(() => loadConfig(ServiceSettings, { ZIPKIN_URL: 'zipkin:9411' }), /ZIPKIN_URL/);
});

test('text that only looks like a number or boolean is refused, not rounded', () => {
  const schema = { ...ServiceSettings, FEATURE: Type.Boolean({ default: false }) };
  assert.throws(() => loadConfig(schema, { RPC_TIMEOUT_MS: '2500.5' }), /RPC_TIMEOUT_MS \("2500.5"\)/);
  assert.throws(() => loadConfig(schema, { STREAM_REPLICAS: '1e0' }), /STREAM_REPLICAS/);
  assert.throws(() => loadConfig(schema, { FEATURE: 'yes' }), /FEATURE \("yes"\)/);
  assert.equal(loadConfig(schema, { RPC_TIMEOUT_MS: ' 2500 ' }).RPC_TIMEOUT_MS, 2500);
});

test('every bad variable is named at once, each once', () => {
  assert.throws(
    () => loadConfig(ServiceSettings, { LOG_LEVEL: 'loud', STREAM_REPLICAS: '9', SHUTDOWN_TIMEOUT_MS: 'soon' }),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      for (const name of ['LOG_LEVEL', 'STREAM_REPLICAS', 'SHUTDOWN_TIMEOUT_MS']) {
        assert.equal(error.message.split(`${name} (`).length - 1, 1, `${name} named once in: ${error.message}`);
      }
      assert.doesNotMatch(error.message, /RPC_TIMEOUT_MS|NATS_URL/);
      return true;
    },
  );
});

/** Runs the customer service's main with `env`; resolves with its exit code and stderr. */
function runMain(env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'services', 'customer', 'main.ts')], {
      // A database of its own, in case a regression lets the process get that far.
      env: { ...process.env, DATABASE_URL: testDatabaseUrl('customers'), LOG_LEVEL: 'silent', ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const guard = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`main.ts did not exit on bad configuration: ${stderr}`));
    }, 15_000);
    child.once('exit', (code) => {
      clearTimeout(guard);
      resolve({ code, stderr });
    });
  });
}

test('main exits 78 with the message on stderr when RPC_TIMEOUT_MS is not a number', async () => {
  const { code, stderr } = await runMain({ NATS_URL: 'nats://127.0.0.1:1', RPC_TIMEOUT_MS: 'abc' });
  assert.equal(code, 78);
  assert.match(stderr, /Invalid configuration/);
  assert.match(stderr, /RPC_TIMEOUT_MS \("abc"\)/);
});

test('main exits 78 when NATS_URL is not a URL, instead of retrying forever', async () => {
  const { code, stderr } = await runMain({ NATS_URL: 'notaurl' });
  assert.equal(code, 78);
  assert.match(stderr, /NATS_URL \("notaurl"\)/);
});
