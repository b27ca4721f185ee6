// `npm run test:chaos`: faults under load, against the whole shop as real
// processes on this machine's loopback (test/chaos/shop.ts). An order load
// runs through every phase (test/chaos/load.ts), the SMTP server refuses half
// of the emails throughout, and poison events are slipped in among the real
// ones. The phases:
//   1. kill -9 of every service in turn, each restarted at once, twice round;
//   2. nats-server restarted on the same store and port: once gracefully
//      (SIGTERM), once by kill -9;
//   3. every PostgreSQL connection of the shop's databases dropped
//      (pg_terminate_backend), three times. PostgreSQL itself is not
//      restarted: it is shared by everything else on this machine; dropping
//      every connection is what a restart does to the services;
//   4. the shop's databases refusing connections for some seconds, twice
//      (ALLOW_CONNECTIONS false, their connections ended, then true again):
//      what the services see while PostgreSQL restarts or fails over, when
//      the pools cannot reconnect at once;
//   5. the SMTP server refusing half of the emails, and nothing else.
// After each phase the load stops and the shop comes to rest, then: every
// accepted order is CONFIRMED or CANCELLED; nothing is duplicated (no order
// beyond the calls made, no event twice for one order, no email twice but
// one a kill -9 of the notification process caught between the SMTP server's
// 250 and the record: a kill just after its first copy, within twice the
// time the phase's emails took from acceptance to record, at least 50 ms,
// run.ts KILL_WINDOW_FLOOR_MS);
// stock, reservations, payments, the provider's books and the emails
// reconcile exactly (scripts/reconcile.ts); every dead letter is one of the
// poison events put in, dead-lettered by every consumer of its subject; bad
// requests are still refused with a typed error; and no process exited on
// its own. The suite prints a table of it all.
//
// CHAOS_SEED=<n> repeats a run's choices (orders, cards, cancels, SMTP refusals, poison).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import pRetry from 'p-retry';
import { waitFor } from '../harness.ts';
import { startChaosRun, type ChaosRun, type Row } from './run.ts';
import { SERVICE_DIRS } from './shop.ts';

const SEED = Number(process.env.CHAOS_SEED ?? 20_240_607);
/** How long the shop's databases refuse connections in the outage phase: as long as a PostgreSQL restart takes. */
const OUTAGE_MS = 8000;

let run: ChaosRun;
let shop: ChaosRun['shop'];
let progress: ChaosRun['progress'];
let phase: ChaosRun['phase'];
let assertClean: ChaosRun['assertClean'];

before(async () => {
  run = await startChaosRun({
    title: 'chaos run (CHAOS_SEED to repeat)',
    seed: SEED,
    shop: {
      seed: SEED,
      smtpFailureRate: 0.5,
      // Shorter than the consumers' ack wait (30 s): orders caught by a kill are also cancelled by their deadline and compensated.
      env: { ORDER_DEADLINE_MS: '20000' },
      // Half the attempts fail: enough attempts that none runs out.
      // And a carrier that fails a third of its calls: each step is retried until it goes through.
      serviceEnv: { notification: { NOTIFY_MAX_ATTEMPTS: '60' }, shipping: { SHIPPING_FAILURE_RATE: '0.3' } },
    },
    load: { ratePerSecond: 10, maxInFlight: 12, cancelShare: 0.06, declineShare: 0.08 },
  });
  ({ shop, progress, phase, assertClean } = run);
});

after(async () => {
  await run?.close();
});

/**
 * What a PostgreSQL restart or failover does to the shop: its databases take
 * no new connection and lose the ones they had, for `ms`, then are back.
 * Returns how many connections were ended.
 */
async function refuseConnections(ms: number): Promise<number> {
  const urls = Object.values(shop.databases);
  const names = urls.map((url) => decodeURIComponent(new URL(url).pathname.slice(1)));
  const server = new URL(urls[0]!);
  server.pathname = '/postgres';
  // Tried again while PostgreSQL, shared with everything else on this machine, is out of connections.
  const admin = await pRetry(
    async () => {
      const client = new pg.Client({ connectionString: server.toString() });
      client.on('error', () => {});
      await client.connect().catch(async (error: unknown) => {
        await client.end().catch(() => {});
        throw error;
      });
      return client;
    },
    { retries: 60, minTimeout: 500, factor: 1, shouldRetry: ({ error }) => (error as { code?: string }).code === '53300' },
  );
  const allow = async (allowed: boolean) => {
    for (const name of names) await admin.query(`ALTER DATABASE ${pg.escapeIdentifier(name)} WITH ALLOW_CONNECTIONS ${allowed}`);
  };
  let ended = 0;
  try {
    await allow(false);
    // Until none is left: a connection may have been half-way in when the door closed.
    await waitFor(
      async () => {
        const { rows } = await admin.query<{ ended: boolean }>(
          'SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity WHERE datname = ANY($1) AND pid <> pg_backend_pid()',
          [names],
        );
        ended += rows.filter((row) => row.ended).length;
        return rows.length === 0;
      },
      { intervalMs: 100, what: "the shop's connections to end" },
    );
    await new Promise((resolve) => setTimeout(resolve, ms));
  } finally {
    await allow(true);
    await admin.end();
  }
  return ended;
}

// --- The phases --------------------------------------------------------------------------------

test('kill -9 of every service in turn, restarted at once, twice round, under load', async () => {
  const row = await phase('kill -9 each service ×2', async () => {
    let faults = 0;
    for (let round = 0; round < 2; round++) {
      for (const dir of SERVICE_DIRS) {
        await progress();
        await shop.kill(dir);
        await shop.startService(dir);
        faults++;
      }
    }
    return faults;
  });
  assertClean(row);
});

test('nats-server restarted under load on the same store: gracefully, then by kill -9', async () => {
  const row = await phase('nats-server restart ×2', async () => {
    await progress();
    await shop.restartNats('SIGTERM');
    await progress();
    await shop.restartNats('SIGKILL');
    return 2;
  });
  assertClean(row);
});

test('every PostgreSQL connection of the shop dropped under load, three times', async () => {
  const row = await phase('PostgreSQL connections dropped ×3', async () => {
    for (let i = 0; i < 3; i++) {
      await progress();
      const ended = await shop.dropConnections();
      assert.ok(ended > 5, `connections were ended (${ended})`);
    }
    return 3;
  });
  assertClean(row);
});

test("the shop's databases refusing connections for some seconds under load, twice", async () => {
  const row = await phase(`PostgreSQL refusing connections ${OUTAGE_MS / 1000} s ×2`, async () => {
    for (let i = 0; i < 2; i++) {
      await progress();
      const ended = await refuseConnections(OUTAGE_MS);
      assert.ok(ended > 5, `connections were ended (${ended})`);
      // Said here, not only at the end: a service that died would leave the load waiting for orders.
      const exited = shop.crashes.map(
        (crash) => `${crash.process} exited (${crash.code ?? crash.signal}): ${crash.lastLines.slice(-3).join(' | ')}`,
      );
      assert.deepEqual(exited, [], 'no service exits while its database refuses connections');
    }
    return 2;
  });
  assertClean(row);
});

test('the SMTP server refusing half of the emails, and nothing else', async () => {
  const row = await phase('SMTP refusing 50%', async () => {
    await progress(100);
    return 0;
  });
  assert.ok(row.smtpRefused > 10, `the SMTP server refused emails (${row.smtpRefused})`);
  assertClean(row);
});

test('over the whole run: nothing lost, nothing twice, no crash, every dead letter explained', () => {
  const { rows } = run;
  assert.equal(rows.length, 5, 'every phase ran');
  const sum = (key: keyof Row) => rows.reduce((total, row) => total + (row[key] as number), 0);
  assert.equal(sum('lost'), 0);
  assert.equal(sum('duplicated'), 0);
  assert.equal(shop.crashes.length, 0);
  assert.ok(rows.every((row) => row.reconciliation.startsWith('ok')));
  assert.ok(sum('placed') >= 100, `a real load went through (${sum('placed')} orders)`);
});
