// The sender loop on its own, against the real PostgreSQL and a real SMTP
// server: batch claims never send an email twice, a sent email is recorded
// before the sender says it sent it (so a kill -9 then cannot send it again),
// a crashed sender's claims are picked up once their lease runs out, and the
// queue costs about one claim per batch of emails, not one per worker per
// email.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import pg from 'pg';
import { createLogger, createPool, ensureDatabase, migrate, withTransaction, type Pool } from '../../kit/index.ts';
import { dropTestDatabases, testDatabaseUrl, waitFor } from '../../../test/harness.ts';
import { Mailer, NotificationSender, type SenderOptions } from '../mailer.ts';
import { claimDue, insertNotification, markSent } from '../store.ts';
import { startSmtpServer, type TestSmtpServer } from './smtp.ts';

const log = createLogger('notifications-test', 'silent');
let pool: Pool;
let databaseUrl: string;
let smtp: TestSmtpServer;
const running: NotificationSender[] = [];

before(async () => {
  databaseUrl = testDatabaseUrl('notifications');
  await ensureDatabase(databaseUrl, log);
  pool = createPool(databaseUrl);
  await migrate(pool, 'notifications', join(import.meta.dirname, '..', 'migrations'), log);
  smtp = await startSmtpServer();
});

after(async () => {
  await Promise.all(running.map((sender) => sender.stop()));
  await pool?.end();
  await smtp?.close();
  await dropTestDatabases();
});

/** A started sender on `db` (the test's pool unless given). */
async function startSender(options: Partial<SenderOptions> = {}, db: Pool = pool): Promise<NotificationSender> {
  const mailer = new Mailer({
    SMTP_HOST: '127.0.0.1',
    SMTP_PORT: smtp.port,
    SMTP_FROM: 'The Shop <shop@example.com>',
    SMTP_SECURE: false,
    SMTP_TIMEOUT_MS: 5000,
  });
  const sender = new NotificationSender(db, mailer, log, { maxAttempts: 5, retryBaseMs: 100, ...options });
  running.push(sender);
  await sender.start();
  return sender;
}

async function stopSender(sender: NotificationSender): Promise<void> {
  running.splice(running.indexOf(sender), 1);
  await sender.stop();
}

/** Records `count` PENDING emails to one new address; their ids. */
async function pending(count: number): Promise<{ to: string; ids: string[] }> {
  const to = `batch-${randomUUID().slice(0, 8)}@example.com`;
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const id = randomUUID();
    await withTransaction(pool, async (tx) =>
      insertNotification(tx, {
        id,
        eventId: randomUUID(),
        eventType: 'orders.events.confirmed',
        customerId: randomUUID(),
        orderId: randomUUID(),
        email: to,
        subject: `email ${i}`,
        body: 'hello',
        status: 'PENDING',
      }),
    );
    ids.push(id);
  }
  return { to, ids };
}

async function rows(ids: string[]) {
  const { rows } = await pool.query<{ id: string; status: string; attempts: number; sent_at: Date | null }>(
    'SELECT id, status, attempts, sent_at FROM notifications WHERE id = ANY($1::uuid[])',
    [ids],
  );
  return rows;
}

function allSent(ids: string[]) {
  return waitFor(
    async () => {
      const found = await rows(ids);
      return found.length === ids.length && found.every((row) => row.status === 'SENT') && found;
    },
    { what: `${ids.length} emails sent` },
  );
}

/**
 * The test's pool, counting the statements that start with each of `prefixes`
 * once they are answered: a count seen by a later look (a timer) comes after
 * everything the sender did on that answer.
 */
function counting(prefixes: Record<string, string>): { db: Pool; counts: Record<string, number> } {
  const counts = Object.fromEntries(Object.keys(prefixes).map((name) => [name, 0]));
  const db = Object.create(pool) as Pool;
  db.query = ((...args: Parameters<Pool['query']>) => {
    const text = typeof args[0] === 'string' ? args[0] : (args[0] as { text: string }).text;
    const name = Object.keys(prefixes).find((key) => text.trimStart().startsWith(prefixes[key]!));
    const answer = (pool.query as (...a: unknown[]) => Promise<unknown>)(...args);
    if (name === undefined) return answer;
    return answer.then((result) => {
      counts[name]!++;
      return result;
    });
  }) as Pool['query'];
  return { db, counts };
}

test('claimDue takes at most its limit, leases what it takes, and tells when the next email falls due', async () => {
  const { ids } = await pending(3);
  const later = (await pending(1)).ids[0]!;
  await pool.query(`UPDATE notifications SET next_attempt_at = now() + interval '1 hour' WHERE id = $1`, [later]);
  // Other tests' rows may be due too: claim until ours are taken (the queue is shared).
  const taken: string[] = [];
  let last: Awaited<ReturnType<typeof claimDue>>;
  do {
    last = await claimDue(pool, 60_000, 2);
    assert.ok(last.rows.length <= 2);
    taken.push(...last.rows.map((row) => row.id));
  } while (last.rows.length > 0);
  assert.ok(
    ids.every((id) => taken.includes(id)),
    'every due email claimed',
  );
  assert.ok(!taken.includes(later), 'not one that is not due');
  assert.equal(new Set(taken).size, taken.length, 'none twice');
  // Due next: the claimed ones when their lease ends (a minute), before the one due in an hour.
  const untilNext = last.nextDueAt!.getTime() - Date.now();
  assert.ok(untilNext > 50_000 && untilNext <= 60_000, `next due in ${untilNext} ms`);
  // Leased: not claimable again.
  assert.deepEqual((await claimDue(pool, 60_000, 10)).rows, []);
  await pool.query(`UPDATE notifications SET status = 'FAILED' WHERE id = ANY($1::uuid[])`, [[...ids, later]]);
});

test('a claim records the email its worker just sent, and never claims that one', async () => {
  const { ids } = await pending(2);
  const [sent, next] = ids as [string, string];
  // The worker's email was leased by an earlier claim and is due again (its lease ran out): still not claimed.
  await pool.query(`UPDATE notifications SET next_attempt_at = now() - interval '1 second' WHERE id = $1`, [sent]);
  let claim = await claimDue(pool, 60_000, 10, sent);
  const taken = claim.rows.map((row) => row.id);
  // Other tests' rows may be due too: claim until none is left (the queue is shared).
  while (claim.rows.length > 0) {
    claim = await claimDue(pool, 60_000, 10);
    taken.push(...claim.rows.map((row) => row.id));
  }
  assert.ok(taken.includes(next), 'the other one claimed');
  assert.ok(!taken.includes(sent), 'not the one it records');
  const [row] = await rows([sent]);
  assert.equal(row!.status, 'SENT');
  assert.equal(row!.attempts, 1);
  await pool.query(`UPDATE notifications SET status = 'FAILED' WHERE id = $1`, [next]);
});

test('an email recorded SENT twice (a lease ran out under a live sender) keeps its first record', async () => {
  const { ids } = await pending(2);
  const [byMarkSent, byClaim] = ids as [string, string];
  for (const id of ids) await markSent(pool, id);
  const first = await rows(ids);
  assert.ok(first.every((row) => row.status === 'SENT' && row.attempts === 1));
  // The slow sender's records, by either path: nothing changes.
  await markSent(pool, byMarkSent);
  await claimDue(pool, 60_000, 0, byClaim);
  const again = await rows(ids);
  for (const row of again) {
    const before = first.find((earlier) => earlier.id === row.id)!;
    assert.equal(row.attempts, 1, 'one attempt counted');
    assert.deepEqual(row.sent_at, before.sent_at, 'sent when it was first sent');
  }
});

test('two senders working through a backlog with batch claims send every email exactly once', async () => {
  const { to, ids } = await pending(40);
  const first = await startSender({ concurrency: 4 });
  const second = await startSender({ concurrency: 3 });
  try {
    const sent = await allSent(ids);
    assert.ok(
      sent.every((row) => row.attempts === 1),
      'one attempt each',
    );
    const mails = smtp.mailsTo(to);
    assert.equal(mails.length, 40);
    assert.deepEqual(new Set(mails.map((mail) => mail.messageId)), new Set(ids.map((id) => `<${id}@shop>`)));
  } finally {
    await stopSender(first);
    await stopSender(second);
  }
});

test("a crashed sender's claimed emails are sent once its lease runs out, and only then", async () => {
  const { to, ids } = await pending(3);
  // The crashed sender: claimed them with a short lease, sent nothing, recorded nothing.
  const leaseMs = 600;
  const claimedAt = Date.now();
  const crashed = await claimDue(pool, leaseMs, 10);
  assert.deepEqual(new Set(crashed.rows.map((row) => row.id)), new Set(ids));
  // A sweep far away: only the due time its claims saw can bring the sender back in time.
  const sender = await startSender({ sweepMs: 60_000 });
  try {
    const sent = await allSent(ids);
    // Not while the lease held: the SMTP server saw each email only after it ran out (one clock, this machine's).
    const mails = smtp.mailsTo(to);
    for (const mail of mails)
      assert.ok(mail.receivedAt >= claimedAt + leaseMs, `received ${mail.receivedAt - claimedAt} ms after the claim`);
    assert.equal(mails.length, 3, 'each once');
    assert.ok(sent.every((row) => row.attempts === 1));
  } finally {
    await stopSender(sender);
  }
});

test('a refused email is retried after its back-off without waiting for a sweep', async () => {
  const { to, ids } = await pending(1);
  smtp.failNext(to, 2);
  const sender = await startSender({ sweepMs: 60_000, retryBaseMs: 100 });
  try {
    const [row] = await allSent(ids);
    assert.equal(row!.attempts, 3);
    assert.deepEqual(
      smtp.attemptsTo(to).map((attempt) => attempt.code),
      [451, 451, 250],
    );
  } finally {
    await stopSender(sender);
  }
});

test('the queue costs a claim per batch, and each email one record, made as soon as the SMTP server accepts it', async () => {
  const { db, counts } = counting({ claims: 'WITH claimed AS', sent: "UPDATE notifications SET status = 'SENT'" });
  // Nothing due: the first pass looks once (counted once answered: the pass has ended by the next look).
  const sender = await startSender({ concurrency: 4, sweepMs: 60_000 }, db);
  try {
    await waitFor(() => counts.claims === 1, { what: 'the first look' });

    // Its claim, and its record on its own: nothing else is due when it is accepted.
    const lone = await pending(1);
    sender.wake();
    await allSent(lone.ids);
    await waitFor(() => counts.sent === 1 || undefined, { what: 'the record answered' });
    assert.equal(counts.claims, 2, 'a lone email: its claim');

    // A backlog of 12 for 4 workers: a claim for each round or two of workers. A record rides with a
    // claim only when the worker whose email was just accepted claims the next ones (no other record).
    const backlog = await pending(12);
    counts.claims = 0;
    counts.sent = 0;
    sender.wake();
    const sent = await allSent(backlog.ids);
    assert.ok(counts.claims <= 5, `${counts.claims} claims for 12 emails`);
    assert.ok(counts.sent <= 12, `${counts.sent} records of their own for 12 emails`);
    assert.ok(sent.every((row) => row.attempts === 1));
  } finally {
    await stopSender(sender);
  }
});

test('an email the sender says it sent is recorded: a kill -9 then does not send it again', async () => {
  const { to, ids } = await pending(1);
  const child = spawn(process.execPath, [join(import.meta.dirname, 'sender-process.ts')], {
    env: { ...process.env, DATABASE_URL: databaseUrl, SMTP_PORT: String(smtp.port), LOG_FORMAT: 'json' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = once(child, 'exit');
  try {
    // Killed the moment it says so, with no warning: nothing it meant to do later gets done.
    for await (const line of createInterface({ input: child.stdout! })) {
      if (line.includes('"email sent"') && line.includes(ids[0]!)) {
        child.kill('SIGKILL');
        break;
      }
    }
    await exited;
  } finally {
    child.kill('SIGKILL');
  }
  assert.equal(smtp.mailsTo(to).length, 1, 'accepted by the SMTP server');
  const [row] = await rows(ids);
  assert.equal(row!.status, 'SENT', 'recorded before the kill');
  assert.equal(row!.attempts, 1);
});

test('an email accepted while its database closes for longer than a burst of retries is recorded once it opens, and sent once', async () => {
  const { to, ids } = await pending(1);
  const database = new URL(databaseUrl).pathname.slice(1);
  const admin = new pg.Client({ connectionString: new URL('/postgres', databaseUrl).toString() });
  await admin.connect();
  const closed = Promise.withResolvers<void>();
  // The SMTP server accepts the email only once the database refuses every connection, for 20 s:
  // longer than a burst of retries (~16 s), shorter than a lease (5 minutes).
  smtp.beforeAccepting(to, async () => {
    await admin.query(`ALTER DATABASE ${pg.escapeIdentifier(database)} WITH ALLOW_CONNECTIONS false`);
    await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [database]);
    closed.resolve();
  });
  const sender = await startSender();
  try {
    await closed.promise;
    await waitFor(() => smtp.mailsTo(to).length === 1 || undefined, { what: 'the email accepted' });
    await new Promise((resolve) => setTimeout(resolve, 20_000));
  } finally {
    await admin.query(`ALTER DATABASE ${pg.escapeIdentifier(database)} WITH ALLOW_CONNECTIONS true`);
    await admin.end();
  }
  const [row] = await waitFor(
    async () => {
      const found = await rows(ids);
      return found[0]?.status === 'SENT' ? found : undefined;
    },
    { timeoutMs: 15_000, what: 'the email recorded as SENT' },
  );
  assert.equal(row!.attempts, 1);
  assert.equal(smtp.mailsTo(to).length, 1, 'sent once');
  await stopSender(sender);
});
