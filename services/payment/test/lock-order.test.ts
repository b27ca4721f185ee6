// lockOrder takes the order's advisory lock and reads the order's payment and
// tombstone in one round trip. The read must see what the previous holder of
// the lock committed while this one waited for it: that is what keeps a
// reservation and a cancellation of one order from missing each other.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { createLogger, createPool, ensureDatabase, migrate, withTransaction, type Pool, type Transaction } from '../../kit/index.ts';
import { dropTestDatabases, testDatabaseUrl, waitFor } from '../../../test/harness.ts';
import { insertCancellation, insertPayment, lockOrder } from '../store.ts';

let pool: Pool;

before(async () => {
  const log = createLogger('payments-test', 'silent');
  const databaseUrl = testDatabaseUrl('payments');
  await ensureDatabase(databaseUrl, log);
  pool = createPool(databaseUrl);
  await migrate(pool, 'payments', join(import.meta.dirname, '..', 'migrations'), log);
});

after(async () => {
  await pool?.end();
  await dropTestDatabases();
});

/** Runs `first` holding the order's lock; meanwhile a second transaction asks for the lock and waits; what it reads. */
async function readAfterWaiting(orderId: string, first: (tx: Transaction) => Promise<void>) {
  const waiterPid = Promise.withResolvers<number>();
  let read!: Promise<Awaited<ReturnType<typeof lockOrder>>>;
  await withTransaction(pool, async (holder) => {
    assert.deepEqual(await lockOrder(holder, orderId), { payment: undefined, cancelled: false });
    read = withTransaction(pool, async (waiter) => {
      waiterPid.resolve((await waiter.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid);
      return lockOrder(waiter, orderId);
    });
    read.catch(waiterPid.reject);
    const pid = await waiterPid.promise;
    // The second one's statement has started (its snapshot taken) and waits for the lock.
    await waitFor(
      async () =>
        (await pool.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = $2', [pid, 'Lock'])).rowCount === 1,
      { what: 'the second transaction to wait for the lock' },
    );
    await first(holder);
  });
  return read;
}

test('lockOrder waits for the lock, then sees the cancellation its holder committed', async () => {
  const orderId = randomUUID();
  const seen = await readAfterWaiting(orderId, (tx) => insertCancellation(tx, orderId, 'DEADLINE_EXCEEDED'));
  assert.deepEqual(seen, { payment: undefined, cancelled: true });
});

test('lockOrder waits for the lock, then sees the payment its holder committed', async () => {
  const orderId = randomUUID();
  const paymentId = randomUUID();
  const seen = await readAfterWaiting(orderId, async (tx) => {
    insertPayment(tx, {
      id: paymentId,
      orderId,
      customerId: randomUUID(),
      amount: { amount: 1_234, currency: 'EUR' },
      status: 'CAPTURED',
      declineReason: null,
      providerReference: 'sim_ch_test',
    });
  });
  assert.equal(seen.cancelled, false);
  assert.equal(seen.payment?.id, paymentId);
  assert.equal(seen.payment?.status, 'CAPTURED');
  assert.deepEqual(seen.payment?.amount, { amount: 1_234, currency: 'EUR' });
});

test('lockOrder on orders of their own does not wait', async () => {
  const holder = await pool.connect();
  try {
    await holder.query('BEGIN');
    await lockOrder(holder, randomUUID());
    // Another order: answered while the first lock is held.
    assert.deepEqual(
      await pool.connect().then(async (other) => {
        try {
          await other.query('BEGIN');
          return await lockOrder(other, randomUUID());
        } finally {
          await other.query('ROLLBACK');
          other.release();
        }
      }),
      { payment: undefined, cancelled: false },
    );
  } finally {
    await holder.query('ROLLBACK');
    holder.release();
  }
});
