// The payment simulator on its own, against the real PostgreSQL: its rules,
// its idempotency (also under concurrent calls), its refunds, its injected
// faults, and its settings.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { ConfigError, createLogger, createPool, ensureDatabase, loadConfig, migrate, type Pool } from '../../kit/index.ts';
import { dropTestDatabases, testDatabaseUrl, waitFor } from '../../../test/harness.ts';
import { PaymentSettings } from '../app.ts';
import { ProviderRejectedError, ProviderUnavailableError } from '../provider.ts';
import { PaymentSimulator, type SimulatorSettings } from '../simulator.ts';
import { SimulatorBooks } from './helpers.ts';

const DEFAULTS: SimulatorSettings = {
  PAYMENT_AMOUNT_LIMIT: 100_000_000,
  PAYMENT_DELAY_MS: 0,
  PAYMENT_FAILURE_RATE: 0,
  PAYMENT_FAIL_FIRST_ATTEMPTS: 0,
};
const EUR = (amount: number) => ({ amount, currency: 'EUR' });

let databaseUrl: string;
let pool: Pool;
let books: SimulatorBooks;

/** A simulator sharing the test's pool (closed once, in after()). */
function simulator(settings: Partial<SimulatorSettings> = {}, random?: () => number): PaymentSimulator {
  return new PaymentSimulator(pool, { ...DEFAULTS, ...settings }, random);
}

before(async () => {
  const log = createLogger('payments-test', 'silent');
  databaseUrl = testDatabaseUrl('payments');
  await ensureDatabase(databaseUrl, log);
  pool = createPool(databaseUrl);
  await migrate(pool, 'payments', join(import.meta.dirname, '..', 'migrations'), log);
  books = new SimulatorBooks(databaseUrl);
});

after(async () => {
  await books?.close();
  await pool?.end();
  await dropTestDatabases();
});

test('the rules: declining tokens, the amount limit, and a capture otherwise', async () => {
  const sim = simulator({ PAYMENT_AMOUNT_LIMIT: 1_000 });
  const charge = (token: string, amount: number) => sim.charge({ idempotencyKey: randomUUID(), token, amount: EUR(amount) });
  assert.deepEqual(await charge('tok_decline', 10), { status: 'declined', reason: 'card declined' });
  assert.deepEqual(await charge('tok_insufficient_funds', 10), { status: 'declined', reason: 'insufficient funds' });
  assert.deepEqual(await charge('tok_visa', 1_001), { status: 'declined', reason: 'amount over limit' });
  // A declining token wins over the limit: the rules are checked in their documented order.
  assert.deepEqual(await charge('tok_decline', 1_001), { status: 'declined', reason: 'card declined' });
  const captured = await charge('tok_anything_else', 1_000);
  assert.equal(captured.status, 'captured');
  assert.match(captured.status === 'captured' ? captured.reference : '', /^sim_ch_[0-9a-f-]{36}$/);
});

test('the same idempotency key returns the first answer and charges once', async () => {
  const sim = simulator();
  const key = randomUUID();
  const first = await sim.charge({ idempotencyKey: key, token: 'tok_visa', amount: EUR(500) });
  const again = await sim.charge({ idempotencyKey: key, token: 'tok_visa', amount: EUR(500) });
  // Even a request that would be declined gets the first answer back under the same key.
  const changed = await sim.charge({ idempotencyKey: key, token: 'tok_decline', amount: EUR(999) });
  assert.equal(first.status, 'captured');
  assert.deepEqual(again, first);
  assert.deepEqual(changed, first);
  assert.equal((await books.entries(key)).length, 1);
  assert.equal(await books.calls(key), 3);

  const declinedKey = randomUUID();
  const declined = await sim.charge({ idempotencyKey: declinedKey, token: 'tok_decline', amount: EUR(500) });
  assert.deepEqual(await sim.charge({ idempotencyKey: declinedKey, token: 'tok_visa', amount: EUR(500) }), declined);
});

test('concurrent charges with one key: one ledger entry, one reference for all', async () => {
  const sim = simulator();
  const key = randomUUID();
  const outcomes = await Promise.all(
    Array.from({ length: 8 }, () => sim.charge({ idempotencyKey: key, token: 'tok_visa', amount: EUR(700) })),
  );
  assert.equal(new Set(outcomes.map((outcome) => JSON.stringify(outcome))).size, 1);
  assert.equal((await books.entries(key)).length, 1);
});

test('a charge that waits on another call with its key answers with what that call recorded', async () => {
  const sim = simulator();
  const key = randomUUID();
  const other = await pool.connect();
  try {
    // The other call: its ledger entry written, not yet committed.
    await other.query('BEGIN');
    await other.query(
      `INSERT INTO simulator_ledger (idempotency_key, operation, amount, currency, outcome, reason, reference)
       VALUES ($1, 'charge', 700, 'EUR', 'captured', NULL, 'sim_ch_first')`,
      [key],
    );
    const charging = sim.charge({ idempotencyKey: key, token: 'tok_decline', amount: EUR(999) });
    await waitFor(
      async () =>
        (await pool.query(`SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`)).rowCount,
      { what: 'the charge to wait for the other call' },
    );
    await other.query('COMMIT');
    // Committed after the waiting statement began: the first answer still wins.
    assert.deepEqual(await charging, { status: 'captured', reference: 'sim_ch_first' });
  } finally {
    other.release();
  }
  assert.equal((await books.entries(key)).length, 1);
  assert.equal(await books.calls(key), 1);
});

test('refunds: once per charge, idempotent by key, never for unknown or declined charges', async () => {
  const sim = simulator();
  const key = randomUUID();
  const charge = await sim.charge({ idempotencyKey: key, token: 'tok_visa', amount: EUR(1_200) });
  assert.equal(charge.status, 'captured');
  const chargeReference = charge.status === 'captured' ? charge.reference : '';

  const refund = await sim.refund({ idempotencyKey: `refund:${key}`, chargeReference, amount: EUR(1_200) });
  assert.match(refund.reference, /^sim_re_/);
  assert.deepEqual(await sim.refund({ idempotencyKey: `refund:${key}`, chargeReference, amount: EUR(1_200) }), refund);
  await assert.rejects(
    sim.refund({ idempotencyKey: `another:${key}`, chargeReference, amount: EUR(1_200) }),
    ProviderRejectedError,
    'a second refund under another key',
  );
  await assert.rejects(
    sim.refund({ idempotencyKey: randomUUID(), chargeReference: 'sim_ch_unknown', amount: EUR(1) }),
    ProviderRejectedError,
  );
  const bigger = await sim.charge({ idempotencyKey: randomUUID(), token: 'tok_visa', amount: EUR(10) });
  await assert.rejects(
    sim.refund({ idempotencyKey: randomUUID(), chargeReference: bigger.status === 'captured' ? bigger.reference : '', amount: EUR(11) }),
    ProviderRejectedError,
    'more than was charged',
  );
  const ledger = await books.forOrder(key);
  assert.deepEqual(
    ledger.map((entry) => [entry.operation, entry.outcome, entry.amount]),
    [
      ['charge', 'captured', 1_200],
      ['refund', 'refunded', 1_200],
    ],
  );
});

test('PAYMENT_FAIL_FIRST_ATTEMPTS fails the first calls of each key, then answers; nothing is charged meanwhile', async () => {
  const sim = simulator({ PAYMENT_FAIL_FIRST_ATTEMPTS: 2 });
  const key = randomUUID();
  for (let call = 1; call <= 2; call++) {
    await assert.rejects(sim.charge({ idempotencyKey: key, token: 'tok_visa', amount: EUR(5) }), ProviderUnavailableError);
    assert.deepEqual(await books.entries(key), []);
  }
  assert.equal((await sim.charge({ idempotencyKey: key, token: 'tok_visa', amount: EUR(5) })).status, 'captured');
  // A transient failure is never a decline, even for a declining token.
  const declining = randomUUID();
  await assert.rejects(sim.charge({ idempotencyKey: declining, token: 'tok_decline', amount: EUR(5) }), ProviderUnavailableError);
});

test('PAYMENT_FAILURE_RATE is the chance of a transient failure per call', async () => {
  const always = simulator({ PAYMENT_FAILURE_RATE: 1 });
  const key = randomUUID();
  for (let call = 0; call < 5; call++) {
    await assert.rejects(always.charge({ idempotencyKey: key, token: 'tok_visa', amount: EUR(5) }), ProviderUnavailableError);
  }
  assert.deepEqual(await books.entries(key), []);
  // A fixed source of randomness: 0.2 fails at rate 0.5, 0.7 does not.
  const draws = [0.2, 0.7];
  const half = simulator({ PAYMENT_FAILURE_RATE: 0.5 }, () => draws.shift() ?? 0.99);
  await assert.rejects(half.charge({ idempotencyKey: key, token: 'tok_visa', amount: EUR(5) }), ProviderUnavailableError);
  assert.equal((await half.charge({ idempotencyKey: key, token: 'tok_visa', amount: EUR(5) })).status, 'captured');
  assert.equal(await books.calls(key), 7);
});

test('settings come from the environment with documented defaults, and bad values are refused', () => {
  const defaults = loadConfig(PaymentSettings, {});
  assert.equal(defaults.PAYMENT_AMOUNT_LIMIT, 100_000_000);
  assert.equal(defaults.PAYMENT_DELAY_MS, 0);
  assert.equal(defaults.PAYMENT_FAILURE_RATE, 0);
  assert.equal(defaults.PAYMENT_FAIL_FIRST_ATTEMPTS, 0);
  const set = loadConfig(PaymentSettings, { PAYMENT_AMOUNT_LIMIT: '500', PAYMENT_FAILURE_RATE: '0.25', PAYMENT_DELAY_MS: '10' });
  assert.equal(set.PAYMENT_AMOUNT_LIMIT, 500);
  assert.equal(set.PAYMENT_FAILURE_RATE, 0.25);
  assert.equal(set.PAYMENT_DELAY_MS, 10);
  for (const [name, value] of [
    ['PAYMENT_FAILURE_RATE', '1.5'],
    ['PAYMENT_FAILURE_RATE', 'often'],
    ['PAYMENT_AMOUNT_LIMIT', '-1'],
    ['PAYMENT_DELAY_MS', '60000'],
    ['PAYMENT_FAIL_FIRST_ATTEMPTS', '-3'],
  ] as const) {
    assert.throws(
      () => loadConfig(PaymentSettings, { [name]: value }),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.match(error.message, new RegExp(name));
        return true;
      },
    );
  }
});

test('findCharge: what was charged under a key, moving no money and not counted as a call', async () => {
  const sim = simulator();
  assert.equal(await sim.findCharge(randomUUID()), undefined, 'unknown key');

  const key = randomUUID();
  const charge = await sim.charge({ idempotencyKey: key, token: 'tok_visa', amount: EUR(2_345) });
  assert.equal(charge.status, 'captured');
  const reference = charge.status === 'captured' ? charge.reference : '';
  assert.deepEqual(await sim.findCharge(key), { status: 'captured', reference, amount: EUR(2_345) });
  // Still the charge after it was refunded; a refund's key is not a charge.
  await sim.refund({ idempotencyKey: `refund:${key}`, chargeReference: reference, amount: EUR(2_345) });
  assert.deepEqual(await sim.findCharge(key), { status: 'captured', reference, amount: EUR(2_345) });
  assert.equal(await sim.findCharge(`refund:${key}`), undefined);
  assert.equal(await books.calls(key), 1, 'lookups are not charge attempts');
  assert.equal((await books.forOrder(key)).length, 2);

  const declinedKey = randomUUID();
  await sim.charge({ idempotencyKey: declinedKey, token: 'tok_insufficient_funds', amount: EUR(5) });
  assert.deepEqual(await sim.findCharge(declinedKey), { status: 'declined', reason: 'insufficient funds' });

  // A lookup can fail like any call; it is never "nothing found".
  await assert.rejects(simulator({ PAYMENT_FAILURE_RATE: 1 }).findCharge(key), ProviderUnavailableError);
  // PAYMENT_FAIL_FIRST_ATTEMPTS is about attempts to move money: a lookup is answered.
  assert.equal((await simulator({ PAYMENT_FAIL_FIRST_ATTEMPTS: 5 }).findCharge(key))?.status, 'captured');
});
