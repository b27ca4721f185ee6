// The outbox benchmark (`npm run bench:outbox`, part of `npm run bench`):
// JetStream publishing through the kit's outbox beside plain pipelined
// js.publish, in one run, on one nats-server started here and a fresh
// database.
//
//   relay      BENCH_OUTBOX_EVENTS (20,000) events waiting in the outbox table
//              (written beforehand, not timed); the kit's OutboxRelay is
//              started and timed until it has published them all.
//   states     as relay, but the rows are states (writeStates) of
//              BENCH_OUTBOX_EVENTS customers, the variant's own keys every
//              round with a higher version: each is put over the key's
//              previous one in the customers bucket with a compare-and-set.
//              Two variants: a new relay each round (it reads each key's last
//              message before its put; the first round finds none), and one
//              relay kept across rounds (it put every key the round before,
//              so it puts without reading).
//   plain      the same number of the same events published with js.publish,
//              BENCH_OUTBOX_WINDOW (500, the relay's batch) awaiting at once,
//              each with its msgID, as the relay does.
//   end-to-end BENCH_OUTBOX_WRITERS (16) writers commit one event per
//              transaction (writeEvent in withTransaction) for
//              BENCH_OUTBOX_SECONDS (5) while the relay runs; timed until the
//              last one is published. For reference: the rate at which a
//              service can emit events, commit included.
//
// The relay and the plain publisher run in this process, set up as a service
// sets up its own (tracing registered without an exporter, one connection),
// alternating over BENCH_OUTBOX_ROUNDS (3) rounds; medians are reported.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { randomUUID } from 'node:crypto';
import type { JetStreamClient, JetStreamManager, NatsConnection } from 'nats';
import { customers, streams } from '../subjects/index.ts';
import {
  OutboxRelay,
  connectNats,
  createLogger,
  createPool,
  ensureDatabase,
  ensureStreams,
  migrate,
  startTracing,
  stopTracing,
  withTransaction,
  writeEvent,
  writeStates,
  openStateBucket,
  type Pool,
} from '../services/kit/index.ts';
import { dropTestDatabases, startNats, testDatabaseUrl } from '../test/harness.ts';
import {
  cpuSnapshot,
  cpuUsed,
  describeMachine,
  fmt,
  machine,
  median,
  progress,
  round,
  table,
  type CpuSnapshot,
} from '../scripts/lib/measure.ts';
import { intEnv, writeResults } from './common.ts';

export interface OutboxSettings {
  events: number;
  window: number;
  writers: number;
  seconds: number;
  rounds: number;
}

export function outboxSettings(): OutboxSettings {
  return {
    events: intEnv('BENCH_OUTBOX_EVENTS', 20_000),
    window: intEnv('BENCH_OUTBOX_WINDOW', 500),
    writers: intEnv('BENCH_OUTBOX_WRITERS', 16),
    seconds: intEnv('BENCH_OUTBOX_SECONDS', 5),
    rounds: intEnv('BENCH_OUTBOX_ROUNDS', 3),
  };
}

export interface OutboxVariant {
  name: string;
  /** Events per second, one per round. */
  samples: number[];
  median: number;
  /** Median CPU microseconds per event of this process, nats-server and PostgreSQL. */
  cpuUsPerEvent: Record<string, number>;
  /** Median events/s over the plain variant's. */
  ratio: number;
}

export interface OutboxResult {
  settings: OutboxSettings;
  variants: OutboxVariant[];
}

const event = () => {
  const id = randomUUID();
  return { customerId: id, email: `outbox-${id.slice(0, 8)}@bench.test`, name: 'Outbox Bench' };
};

export async function runOutboxBench(settings: OutboxSettings = outboxSettings()): Promise<OutboxResult> {
  progress('outbox: starting nats-server and a fresh database');
  startTracing('bench-outbox');
  const nats = await startNats();
  const log = createLogger('bench-outbox', 'warn');
  const url = testDatabaseUrl('bench_outbox');
  const database = decodeURIComponent(new URL(url).pathname.slice(1));
  const noMigrations = await mkdtemp(join(tmpdir(), 'bench-outbox-'));
  await ensureDatabase(url, log);
  const pool: Pool = createPool(url);
  let nc: NatsConnection | undefined;
  try {
    await migrate(pool, 'bench', noMigrations, log);
    nc = await connectNats('bench-outbox', { NATS_URL: nats.url }, log);
    const js: JetStreamClient = nc.jetstream();
    const jsm: JetStreamManager = await nc.jetstreamManager();
    await ensureStreams(jsm, [streams.CUSTOMERS], 1, log);
    await openStateBucket(nc, customers.profiles);
    const snapshot = () => cpuSnapshot(new Map([['nats-server', nats.process.pid]]), { url, databases: [database] });
    const perEvent = (before: CpuSnapshot, after: CpuSnapshot, events: number) =>
      Object.fromEntries(Object.entries(cpuUsed(before, after)).map(([name, seconds]) => [name, round((seconds * 1e6) / events, 1)]));

    /** Starts a relay that counts what it publishes; resolves `done` once `target` events are out. */
    const countingRelay = (target: number) => {
      let published = 0;
      let finish: () => void = () => {};
      const done = new Promise<void>((resolve) => (finish = resolve));
      const relay = new OutboxRelay(pool, url, js, log, {
        metrics: {
          eventPublished() {
            if (++published === target) finish();
          },
        },
      });
      return { relay, done, published: () => published };
    };

    const relayRound = async (): Promise<{ rate: number; cpu: Record<string, number> }> => {
      // Written beforehand, in transactions of 200, and not timed.
      for (let written = 0; written < settings.events; written += 200) {
        await withTransaction(pool, async (tx) => {
          for (let i = 0; i < Math.min(200, settings.events - written); i++) await writeEvent(tx, customers.registered, event());
        });
      }
      const { relay, done } = countingRelay(settings.events);
      const before = await snapshot();
      const started = performance.now();
      await relay.start();
      await done;
      const seconds = (performance.now() - started) / 1000;
      const after = await snapshot();
      await relay.stop();
      return { rate: settings.events / seconds, cpu: perEvent(before, after, settings.events) };
    };

    // The kept relay reads through a pool of its own: a commit wakes the relays of its pool only, so no other round wakes it.
    const keptPool: Pool = createPool(url);
    const createdAt = new Date().toISOString();
    /** One relay kept across rounds (started on first use): it put every key of its variant the round before. */
    let kept: { relay: OutboxRelay; onPublished: () => void } | undefined;
    /**
     * A round of states of the variant's own keys, one version up; timed from
     * the relay's start (a new relay) or wake-up (the kept one).
     */
    const statesRounds = (keptRelay: boolean) => {
      const stateKeys = Array.from({ length: settings.events }, () => randomUUID());
      let stateVersion = 0;
      return async (): Promise<{ rate: number; cpu: Record<string, number> }> => {
        stateVersion++;
        for (let written = 0; written < settings.events; written += 200) {
          const keys = stateKeys.slice(written, written + 200);
          const states = keys.map((id) => ({
            id,
            email: `state-${id.slice(0, 8)}@bench.test`,
            name: 'State Bench',
            role: 'customer' as const,
            createdAt,
            version: stateVersion,
          }));
          await withTransaction(pool, (tx) => writeStates(tx, customers.profiles, states));
        }
        let published = 0;
        let finish: () => void = () => {};
        const done = new Promise<void>((resolve) => (finish = resolve));
        const count = () => {
          if (++published === settings.events) finish();
        };
        const before = await snapshot();
        const started = performance.now();
        if (keptRelay) {
          if (!kept) {
            const holder = { onPublished: () => {} };
            const relay = new OutboxRelay(keptPool, url, js, log, {
              sweepMs: 3_600_000,
              metrics: { eventPublished: () => holder.onPublished() },
            });
            kept = Object.assign(holder, { relay });
            kept.onPublished = count;
            await relay.start();
          } else {
            kept.onPublished = count;
            kept.relay.wake();
          }
          await done;
        } else {
          const relay = new OutboxRelay(pool, url, js, log, { metrics: { eventPublished: count } });
          await relay.start();
          await done;
          await relay.stop();
        }
        const seconds = (performance.now() - started) / 1000;
        const after = await snapshot();
        return { rate: settings.events / seconds, cpu: perEvent(before, after, settings.events) };
      };
    };
    const statesRound = statesRounds(false);
    const keptStatesRound = statesRounds(true);

    const plainRound = async (): Promise<{ rate: number; cpu: Record<string, number> }> => {
      const payloads = Array.from({ length: settings.events }, () => {
        const id = randomUUID();
        const envelope = { id, type: customers.registered.subject, occurredAt: new Date().toISOString(), data: event() };
        return { id, data: Buffer.from(JSON.stringify(envelope)) };
      });
      const before = await snapshot();
      const started = performance.now();
      let next = 0;
      await Promise.all(
        Array.from({ length: settings.window }, async () => {
          while (next < payloads.length) {
            const { id, data } = payloads[next++]!;
            await js.publish(customers.registered.subject, data, { msgID: id, timeout: 5000 });
          }
        }),
      );
      const seconds = (performance.now() - started) / 1000;
      const after = await snapshot();
      return { rate: settings.events / seconds, cpu: perEvent(before, after, settings.events) };
    };

    const endToEndRound = async (): Promise<{ rate: number; cpu: Record<string, number> }> => {
      const { relay, published } = countingRelay(Number.POSITIVE_INFINITY);
      await relay.start();
      const before = await snapshot();
      const started = performance.now();
      const end = started + settings.seconds * 1000;
      let committed = 0;
      await Promise.all(
        Array.from({ length: settings.writers }, async () => {
          while (performance.now() < end) {
            await withTransaction(pool, (tx) => writeEvent(tx, customers.registered, event()));
            committed++;
          }
        }),
      );
      // Until the relay has caught up with every committed event.
      while (published() < committed) await new Promise((resolve) => setTimeout(resolve, 2));
      const seconds = (performance.now() - started) / 1000;
      const after = await snapshot();
      await relay.stop();
      return { rate: committed / seconds, cpu: perEvent(before, after, committed) };
    };

    const variants = [
      { name: 'outbox relay (backlog -> JetStream)', run: relayRound },
      { name: `plain js.publish, ${settings.window} in flight`, run: plainRound },
      { name: `outbox end-to-end, ${settings.writers} writers`, run: endToEndRound },
      { name: 'outbox relay, states, a new relay (backlog -> KV bucket)', run: statesRound },
      { name: 'outbox relay, states, put by it before', run: keptStatesRound },
    ];
    progress(`outbox: warm-up`);
    await relayRound();
    await plainRound();
    await keptStatesRound(); // the kept relay puts its keys once
    const samples = new Map(variants.map((variant) => [variant.name, [] as { rate: number; cpu: Record<string, number> }[]]));
    for (let round = 1; round <= settings.rounds; round++) {
      const line: string[] = [];
      // Rotate the order, so a slow spell of the machine does not always hit the same one.
      for (let i = 0; i < variants.length; i++) {
        const variant = variants[(i + round - 1) % variants.length]!;
        const sample = await variant.run();
        samples.get(variant.name)!.push(sample);
        line.push(`${variant.name.split(',')[0]} ${fmt(sample.rate)}/s`);
      }
      progress(`  round ${round}/${settings.rounds}: ${line.join(', ')}`);
    }
    await kept?.relay.stop();
    await keptPool.end();
    const medianRate = (name: string) => median(samples.get(name)!.map((sample) => sample.rate));
    const plain = medianRate(variants[1]!.name);
    return {
      settings,
      variants: variants.map(({ name }) => {
        const taken = samples.get(name)!;
        const processes = [...new Set(taken.flatMap((sample) => Object.keys(sample.cpu)))];
        return {
          name,
          samples: taken.map((sample) => Math.round(sample.rate)),
          median: Math.round(medianRate(name)),
          cpuUsPerEvent: Object.fromEntries(
            processes.map((process) => [process, round(median(taken.map((sample) => sample.cpu[process] ?? Number.NaN)), 1)]),
          ),
          ratio: round(medianRate(name) / plain, 2),
        };
      }),
    };
  } finally {
    await nc?.drain().catch(() => {});
    await pool.end();
    await nats.cleanup();
    await dropTestDatabases().catch((error: unknown) => progress(`could not drop the bench database: ${(error as Error).message}`));
    await rm(noMigrations, { recursive: true, force: true });
    await stopTracing();
  }
}

export function outboxRows(result: OutboxResult): string[][] {
  return result.variants.map((variant) => [
    variant.name,
    fmt(variant.median),
    `${fmt(Math.min(...variant.samples))}-${fmt(Math.max(...variant.samples))}`,
    `${variant.ratio.toFixed(2)}x`,
    ...['bench', 'nats-server', 'postgres'].map((process) => fmt(variant.cpuUsPerEvent[process] ?? Number.NaN, 1)),
  ]);
}

export const OUTBOX_HEADER = ['variant', 'events/s', 'range', 'vs plain', 'cpu us/event: node', 'nats', 'postgres'];

if (import.meta.main) {
  const m = machine();
  progress(`machine: ${describeMachine(m)}`);
  const result = await runOutboxBench();
  process.stdout.write(`\nmachine: ${describeMachine(m)}\n\n${table(OUTBOX_HEADER, outboxRows(result))}\n`);
  const file = await writeResults('outbox', {
    at: new Date().toISOString(),
    machine: { ...m, loadAverageAtEnd: machine().loadAverage },
    ...result,
  });
  progress(`\nwritten ${file}`);
}
