// `npm run bench:rpc`: throughput of the kit's request-reply path beside
// plain nats.js, in one run, on one nats-server started here, with a fresh
// database.
//
// (a) `customers.get` against the real customer service (a child process,
//     PostgreSQL behind it): the kit client (RpcClient.call) versus plain
//     nc.request() on the same endpoint. Beneath it, a derived bound: the
//     ratio a kit client costing no CPU at all could reach.
// (b) a no-I/O endpoint (bench/no-io-server.ts, a child process): customers.get
//     served and called through the kit versus a raw responder
//     (nc.subscribe + msg.respond) called with plain nc.request(); beside
//     them, for reference, the raw responder called by the least a requester
//     can do (bareRequester: no timeout, no checks, no trace context), and by
//     plain nc.request() on a connection with nats.js's defaults (async
//     traces on, which the kit's connectNats turns off); and Moleculer: a
//     ServiceBroker in this process calling `customers.get` with
//     broker.call() on a broker in a child process (bench/moleculer-server.ts,
//     the same params check and reply) over the same nats-server.
//
// Servers run in child processes so that client and server do not share one
// event loop. CPU per call is measured for the caller, the server, nats-server
// and, in part (a), the PostgreSQL backends of the service's database. The
// plain callers do what any caller must (encode the request, parse the reply)
// and nothing more. Each part warms up, then alternates its variants in
// several short rounds (the machine is shared and noisy) and
// reports the median. Results go to stdout as a table and to
// bench-results/rpc.json.
//
// Knobs (environment): BENCH_ROUNDS (7), BENCH_ROUND_MS (2000),
// BENCH_WARMUP_MS (2000), BENCH_CONCURRENCY (64), BENCH_PARTS ("a,b"),
// BENCH_MOLECULER_TIMEOUT_MS (5000, as the kit's callers; 0: none, Moleculer's
// default), BENCH_MOLECULER_METRICS (unset: off, Moleculer's default; 1: on).
// Profiling: BENCH_CPU_PROF=<dir> makes both server processes write CPU
// profiles there; profile the caller with `npx node --cpu-prof bench/rpc.ts`.
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { ServiceBroker } from 'moleculer';
import { connect, createInbox, type Msg, type NatsConnection } from 'nats';
import { customers, type Customer } from '../subjects/index.ts';
import { connectNats, createLogger, RpcClient, startTracing, stopTracing } from '../services/kit/index.ts';
import { cpuSnapshot, cpuUsed, progress } from '../scripts/lib/measure.ts';
import { intEnv, resultsDir } from './common.ts';
import { dropTestDatabases, startNats, testDatabaseUrl, waitFor } from '../test/harness.ts';
import { launch, type Launched } from '../scripts/lib/launcher.ts';

/** Moleculer (a devDependency) for part (b)'s row of it; without it (an install that left out devDependencies) that row is left out, and said so. */
const moleculer = await import('./moleculer.ts').catch((error: NodeJS.ErrnoException) => {
  if (error.code !== 'ERR_MODULE_NOT_FOUND') throw error;
  progress(`Moleculer is not installed (${error.message.split('\n')[0]}): part (b) runs without its Moleculer row; npm ci installs it`);
  return undefined;
});

const ROUNDS = intEnv('BENCH_ROUNDS', 7);
const ROUND_MS = intEnv('BENCH_ROUND_MS', 2000);
const WARMUP_MS = intEnv('BENCH_WARMUP_MS', 2000);
const CONCURRENCY = intEnv('BENCH_CONCURRENCY', 64);
const PARTS = new Set((process.env.BENCH_PARTS ?? 'a,b').split(',').map((part) => part.trim()));
const TIMEOUT_MS = 5000;
/** How long a server process may take to start: long, for a machine busy with other work. */
const START_TIMEOUT_MS = 120_000;
const SEEDED_CUSTOMERS = 50;
/** The raw responder's subject in part (b); bench-only, so it does not live in subjects/. */
const RAW_SUBJECT = 'bench.raw.customers.get';
/**
 * Part (b)'s rows the kit is held against in issue 12, with the goal for
 * kit over each (median calls/s), printed beneath the table.
 */
const MOLECULER_ROW = 'Moleculer broker.call';
const DEFAULT_REQUEST_ROW = 'plain nc.request, nats.js default connection';
const KIT_GOALS = [
  { row: MOLECULER_ROW, goal: 1 },
  { row: DEFAULT_REQUEST_ROW, goal: 1.25 },
];

interface Variant {
  name: string;
  op: () => Promise<void>;
  /** The process serving this variant's calls, when it is not the part's server. */
  serverPid?: number;
}

/** Where a part's CPU is spent besides the caller and nats-server. */
interface CpuSources {
  serverPid: number | undefined;
  /** The server's database, whose PostgreSQL backends are counted (cpuSnapshot). */
  postgres?: { url: string; databases: string[] };
}

interface Part extends CpuSources {
  key: 'a' | 'b';
  title: string;
  /** The kit/plain ratio the kit is meant to reach. */
  target: number;
  kit: Variant;
  plain: Variant;
  /** Measured beside the two for reference, not part of the ratio's target. */
  references?: Variant[];
}

interface PartResult {
  key: string;
  title: string;
  target: number;
  variants: {
    name: string;
    samples: number[];
    median: number;
    /** Medians over the rounds of CPU microseconds per call; postgres is null without a database, total sums the others. */
    cpuUsPerOp: CpuPerOp;
    /** Median ops/s relative to the plain variant. */
    ratio: number;
  }[];
  /** Kit over plain, by median ops/s. */
  ratio: number;
  /** Part (b): the kit beside each row of KIT_GOALS: median ops/s and total CPU per call, kit then that row. */
  kitVersus?: { row: string; goal: number; ratio: number; opsPerSecond: [number, number]; cpuUsPerOp: [number, number] }[];
  /**
   * Derived, not measured (part a): the ratio a kit client costing no CPU at
   * all could reach, taking throughput as proportional to 1 / (CPU per call in
   * all processes): plain total / (plain total - plain client).
   */
  zeroCostClientBound?: number;
}

type CpuPerOp = { client: number; server: number; nats: number; postgres: number | null; total: number };

interface Sample {
  opsPerSecond: number;
  /** CPU time per completed call, in microseconds, of each process (NaN where it was not measured). */
  cpuUsPerOp: { client: number; server: number; nats: number; postgres: number; total: number };
}

/** Keeps `concurrency` calls in flight for `ms`, then lets them finish; returns calls per second and CPU per call. */
async function measure(op: () => Promise<void>, ms: number, concurrency: number, sources: CpuSources): Promise<Sample> {
  let done = 0;
  let stop = false;
  const processes = new Map([
    ['server', sources.serverPid],
    ['nats', natsPid],
  ]);
  const before = await cpuSnapshot(processes, sources.postgres);
  // The caller's CPU is read around the calls alone: a snapshot's query for the backends is not its work.
  const clientBefore = process.cpuUsage();
  const timer = setTimeout(() => (stop = true), ms);
  const started = performance.now();
  const worker = async () => {
    while (!stop) {
      await op();
      done++;
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, worker));
  } finally {
    clearTimeout(timer);
  }
  const seconds = (performance.now() - started) / 1000;
  const client = process.cpuUsage(clientBefore);
  const used = cpuUsed(before, await cpuSnapshot(processes, sources.postgres));
  const perOp = (cpu: number | undefined) => (cpu === undefined ? Number.NaN : (cpu * 1e6) / done);
  const cpuUsPerOp = {
    client: perOp((client.user + client.system) / 1e6),
    server: perOp(used.server),
    nats: perOp(used.nats),
    postgres: sources.postgres ? perOp(used.postgres ?? 0) : Number.NaN,
  };
  const total = cpuUsPerOp.client + cpuUsPerOp.server + cpuUsPerOp.nats + (sources.postgres ? cpuUsPerOp.postgres : 0);
  return { opsPerSecond: done / seconds, cpuUsPerOp: { ...cpuUsPerOp, total } };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

async function runPart(part: Part): Promise<PartResult> {
  const all = [part.kit, part.plain, ...(part.references ?? [])];
  progress(`\n(${part.key}) ${part.title}`);
  progress(`  warm-up ${WARMUP_MS} ms per variant`);
  // Each variant's server is counted: the part's, or its own (Moleculer's broker).
  const sourcesOf = (variant: Variant): CpuSources => ({ ...part, serverPid: variant.serverPid ?? part.serverPid });
  for (const variant of all) await measure(variant.op, WARMUP_MS, CONCURRENCY, sourcesOf(variant));
  const samples = new Map<Variant, Sample[]>(all.map((variant) => [variant, []]));
  for (let round = 1; round <= ROUNDS; round++) {
    // Rotate which variant goes first, so a slow spell of the machine does not always hit the same one.
    const order = all.map((_, index) => all[(index + round - 1) % all.length]!);
    const line: string[] = [];
    for (const variant of order) {
      const sample = await measure(variant.op, ROUND_MS, CONCURRENCY, sourcesOf(variant));
      samples.get(variant)!.push(sample);
      line.push(`${variant.name} ${fmt(sample.opsPerSecond)}/s`);
    }
    progress(`  round ${round}/${ROUNDS}: ${line.join(', ')}`);
  }
  const medianOf = (variant: Variant) => median(samples.get(variant)!.map((sample) => sample.opsPerSecond));
  const plain = medianOf(part.plain);
  const variants = all.map((variant) => {
    const taken = samples.get(variant)!;
    const cpu = (which: keyof Sample['cpuUsPerOp']) => round1(median(taken.map((sample) => sample.cpuUsPerOp[which])));
    return {
      name: variant.name,
      samples: taken.map((sample) => Math.round(sample.opsPerSecond)),
      median: Math.round(medianOf(variant)),
      cpuUsPerOp: {
        client: cpu('client'),
        server: cpu('server'),
        nats: cpu('nats'),
        postgres: part.postgres ? cpu('postgres') : null,
        total: cpu('total'),
      },
      ratio: Math.round((medianOf(variant) / plain) * 100) / 100,
    };
  });
  const result: PartResult = { key: part.key, title: part.title, target: part.target, variants, ratio: medianOf(part.kit) / plain };
  const kit = variants[0];
  const versus = KIT_GOALS.flatMap(({ row, goal }) => {
    const other = variants.find((variant) => variant.name === row);
    if (!kit || !other) return [];
    return [
      {
        row,
        goal,
        ratio: round2(kit.median / other.median),
        opsPerSecond: [kit.median, other.median] as [number, number],
        cpuUsPerOp: [kit.cpuUsPerOp.total, other.cpuUsPerOp.total] as [number, number],
      },
    ];
  });
  if (versus.length > 0) result.kitVersus = versus;
  if (part.postgres) {
    // Only in part (a): there the caller is a small share of a call's CPU, which bounds what any client can gain.
    const { total, client } = variants[1]!.cpuUsPerOp;
    result.zeroCostClientBound = Math.round((total / (total - client)) * 100) / 100;
  }
  return result;
}

const round1 = (value: number) => Math.round(value * 10) / 10;
const round2 = (value: number) => Math.round(value * 100) / 100;

function cpuCell(value: number | null): string {
  if (value === null) return '-';
  return Number.isFinite(value) ? `${value.toFixed(1)} us` : 'n/a';
}

function fmt(value: number): string {
  return Math.round(value).toLocaleString('en-US');
}

/**
 * Runs `script` (relative to the project) through the shop's launcher
 * (scripts/lib/launcher.ts) and resolves once it prints `readyLine`. With
 * BENCH_CPU_PROF=<dir> the child writes a CPU profile there when it stops.
 */
async function spawnChild(script: string, env: Record<string, string>, readyLine: string): Promise<Launched> {
  const profile = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
  let ready = false;
  let lastLines = '';
  const child = launch({
    name: script,
    script,
    nodeArgs: profile,
    env: { LOG_FORMAT: 'json', ...env },
    onLine: (line) => {
      if (line.includes(readyLine)) ready = true;
      lastLines = `${lastLines}\n${line}`.slice(-4000);
    },
  });
  await waitFor(
    () => {
      if (!child.running) throw new Error(`${script} exited with ${child.lastExit?.code}: ${lastLines}`);
      return ready || undefined;
    },
    { timeoutMs: START_TIMEOUT_MS, what: `${script} to start` },
  );
  return child;
}

/**
 * The least a requester can do: one reply subscription, a counter token, a
 * publish. No timeout, no checks, no trace context, so not a usable client;
 * it shows how far any client could go on this machine (the floor of part b).
 */
function bareRequester(nc: NatsConnection) {
  const prefix = `${createInbox()}.`;
  const waiting = new Map<string, (msg: Msg) => void>();
  let next = 0;
  nc.subscribe(`${prefix}*`, {
    callback: (_error, msg) => {
      const token = msg.subject.slice(prefix.length);
      const resolve = waiting.get(token);
      waiting.delete(token);
      resolve?.(msg);
    },
  });
  return {
    request: (subject: string, payload: Uint8Array) =>
      new Promise<Msg>((resolve) => {
        const token = (next++).toString(36);
        waiting.set(token, resolve);
        nc.publish(subject, payload, { reply: prefix + token });
      }),
  };
}

function expectCustomer(customer: Customer | { id?: unknown }, id: string): void {
  if (customer.id !== id) throw new Error(`expected customer ${id}, got ${JSON.stringify(customer).slice(0, 200)}`);
}

/**
 * Checked once before part (b) measures: Moleculer answers what the kit
 * answers, and its params check accepts and refuses what the contract does.
 */
async function expectMoleculerLikeKit(broker: ServiceBroker, id: string): Promise<void> {
  const answer = (input: object) => broker.call('customers.get', input);
  assert.deepEqual(await answer({ id }), await client.call(customers.get, { id }), 'Moleculer and the kit answer the same customer');
  const inputs = [{ id: id.toUpperCase() }, {}, { id: 42 }, { id: 'not-a-uuid' }, { id, extra: true }];
  for (const input of inputs) {
    const accepted = await answer(input).then(
      () => true,
      (error: Error) => {
        if (error.name !== 'ValidationError') throw error;
        return false;
      },
    );
    const contract = customers.get.request.check(input);
    assert.equal(accepted, contract, `Moleculer ${accepted ? 'accepts' : 'refuses'} ${JSON.stringify(input)}, the contract does not`);
  }
}

const nats = await startNats();
const natsPid = nats.process.pid;
const children: Launched[] = [];
const results: PartResult[] = [];
// The caller's process is set up like a service's: tracing registered (no
// exporter), one connection with noAsyncTraces (the kit's connectNats).
startTracing('bench');
const log = createLogger('bench', 'warn');
const nc = await connectNats('bench', { NATS_URL: nats.url }, log);
const client = new RpcClient(nc, { timeoutMs: TIMEOUT_MS });
const bare = bareRequester(nc);
// A second connection as nats.js makes it by default (a reference row of part b).
const defaultNc = await connect({ servers: nats.url });
/** Moleculer's caller (part b), a broker in this process like the kit's client. */
let moleculerCaller: ServiceBroker | undefined;

try {
  const machine = {
    cores: cpus().length,
    cpu: cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    natsServer: nc.info?.version ?? 'unknown',
    loadAverageAtStart: loadavg().map((value) => Number(value.toFixed(2))),
  };
  progress(`machine: ${machine.cores} cores (${machine.cpu}), Node ${machine.node}, nats-server ${machine.natsServer}`);
  progress(`${CONCURRENCY} calls in flight, ${ROUNDS} rounds of ${ROUND_MS} ms per variant`);

  if (PARTS.has('a')) {
    progress('\nstarting the customer service (child process) on a fresh database');
    // The service's own main.ts, as deployed (tracing registered, pool, micro service).
    const databaseUrl = testDatabaseUrl('customers');
    const service = await spawnChild(
      'services/customer/main.ts',
      { NATS_URL: nats.url, DATABASE_URL: databaseUrl, LOG_LEVEL: 'info' },
      '"service started"',
    );
    children.push(service);
    const ids: string[] = [];
    for (let i = 0; i < SEEDED_CUSTOMERS; i++) {
      const customer = await client.call(customers.register, {
        email: `bench-${i}@example.com`,
        name: `Bench ${i}`,
        password: 'correct horse battery staple',
      });
      ids.push(customer.id);
    }
    let next = 0;
    const nextId = () => ids[next++ % ids.length]!;
    results.push(
      await runPart({
        key: 'a',
        title: 'customers.get, customer service + PostgreSQL',
        target: 1.2,
        serverPid: service.pid,
        postgres: { url: databaseUrl, databases: [new URL(databaseUrl).pathname.slice(1)] },
        kit: {
          name: 'kit RpcClient.call',
          op: async () => {
            const id = nextId();
            expectCustomer(await client.call(customers.get, { id }), id);
          },
        },
        plain: {
          name: 'plain nc.request',
          op: async () => {
            const id = nextId();
            const msg = await nc.request(customers.get.subject, Buffer.from(JSON.stringify({ id })), { timeout: TIMEOUT_MS });
            expectCustomer(JSON.parse(msg.string()) as Customer, id);
          },
        },
      }),
    );
    await service.stop();
    children.splice(children.indexOf(service), 1);
  }

  if (PARTS.has('b')) {
    progress('\nstarting bench/no-io-server.ts (child process)');
    const id = '5b1f1c3e-8a39-4c1e-9b0e-6f7d2a4c9e10';
    const server = await spawnChild(
      'bench/no-io-server.ts',
      { NATS_URL: nats.url, LOG_LEVEL: 'warn', BENCH_CUSTOMER_ID: id, BENCH_RAW_SUBJECT: RAW_SUBJECT },
      'ready',
    );
    children.push(server);
    let moleculerRow: Variant | undefined;
    if (moleculer) {
      progress('starting bench/moleculer-server.ts (child process)');
      const moleculerServer = await spawnChild('bench/moleculer-server.ts', { NATS_URL: nats.url, BENCH_CUSTOMER_ID: id }, 'ready');
      children.push(moleculerServer);
      // No signal handlers of its own: the bench stops it, in `finally`.
      const caller = moleculer.moleculerBroker('bench-moleculer-caller', nats.url, { skipProcessEventRegistration: true });
      moleculerCaller = caller;
      await caller.start();
      await caller.waitForServices('customers', START_TIMEOUT_MS);
      await expectMoleculerLikeKit(caller, id);
      moleculerRow = {
        // The kit's counterpart in another framework: its params checked by the server as the kit checks the request.
        name: MOLECULER_ROW,
        serverPid: moleculerServer.pid,
        op: async () => expectCustomer(await caller.call<Customer, { id: string }>('customers.get', { id }), id),
      };
    }
    results.push(
      await runPart({
        key: 'b',
        title: 'no-I/O endpoint: kit server + kit client vs raw responder + nc.request',
        target: 2,
        serverPid: server.pid,
        kit: {
          name: 'kit serveEndpoints + RpcClient',
          op: async () => expectCustomer(await client.call(customers.get, { id }), id),
        },
        plain: {
          name: 'raw respond + nc.request',
          op: async () => {
            const msg = await nc.request(RAW_SUBJECT, Buffer.from(JSON.stringify({ id })), { timeout: TIMEOUT_MS });
            expectCustomer(JSON.parse(msg.string()) as Customer, id);
          },
        },
        references: [
          {
            name: 'floor: raw respond + bare publish',
            op: async () => {
              const msg = await bare.request(RAW_SUBJECT, Buffer.from(JSON.stringify({ id })));
              expectCustomer(JSON.parse(msg.string()) as Customer, id);
            },
          },
          {
            // What the kit's connection setting (noAsyncTraces) saves nc.request().
            name: DEFAULT_REQUEST_ROW,
            op: async () => {
              const msg = await defaultNc.request(RAW_SUBJECT, Buffer.from(JSON.stringify({ id })), { timeout: TIMEOUT_MS });
              expectCustomer(JSON.parse(msg.string()) as Customer, id);
            },
          },
          ...(moleculerRow ? [moleculerRow] : []),
        ],
      }),
    );
  }

  const rows = results.flatMap((part) =>
    part.variants.map((variant, index) => [
      `(${part.key}) ${variant.name}`,
      fmt(variant.median),
      `${fmt(Math.min(...variant.samples))}-${fmt(Math.max(...variant.samples))}`,
      index === 0 ? `${part.ratio.toFixed(2)}x (target ${part.target}x)` : `${variant.ratio.toFixed(2)}x`,
      cpuCell(variant.cpuUsPerOp.client),
      cpuCell(variant.cpuUsPerOp.server),
      cpuCell(variant.cpuUsPerOp.nats),
      cpuCell(variant.cpuUsPerOp.postgres),
      cpuCell(variant.cpuUsPerOp.total),
    ]),
  );
  const header = ['variant', 'ops/s (median)', 'range', 'ratio', 'client cpu', 'server cpu', 'nats cpu', 'pg cpu', 'total cpu'];
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  const line = (cells: string[]) =>
    cells.map((cell, column) => (column === 0 ? cell.padEnd(widths[0]!) : cell.padStart(widths[column]!))).join('  ');
  process.stdout.write(
    `\nmachine: ${machine.cores} cores, ${machine.cpu}, Node ${machine.node}, nats-server ${machine.natsServer}\n` +
      `${CONCURRENCY} in flight, median of ${ROUNDS} rounds x ${ROUND_MS} ms; cpu = CPU microseconds per call (median)\n` +
      (moleculerCaller && moleculer
        ? `Moleculer: requestTimeout ${moleculer.moleculerSettings.timeoutMs ? `${moleculer.moleculerSettings.timeoutMs} ms` : 'none'}, ` +
          `metrics ${moleculer.moleculerSettings.metrics ? 'on' : 'off'}\n`
        : '') +
      '\n' +
      `${[line(header), ...rows.map(line)].join('\n')}\n` +
      results
        .filter((part) => part.zeroCostClientBound !== undefined)
        .map((part) => {
          const plain = part.variants[1]!;
          const { total, client } = plain.cpuUsPerOp;
          return (
            `\n(${part.key}) derived bound, not measured: a kit client costing no CPU at all would reach at most ` +
            `${part.zeroCostClientBound!.toFixed(2)}x\n    (${plain.name}: ${total.toFixed(1)} us of CPU per call in all processes, ` +
            `${(total - client).toFixed(1)} us without its caller's ${client.toFixed(1)} us; throughput taken as proportional to 1 / total)\n`
          );
        })
        .join('') +
      results
        .map((part) =>
          (part.kitVersus ?? [])
            .map(
              ({ row, goal, ratio, opsPerSecond: [kitOps, otherOps], cpuUsPerOp: [kitCpu, otherCpu] }, index) =>
                `${index === 0 ? '\n' : ''}(${part.key}) kit / ${row}: ${ratio.toFixed(2)}x calls/s (goal ${goal}x; ` +
                `${fmt(kitOps)} / ${fmt(otherOps)}), CPU per call in all processes ${kitCpu.toFixed(1)} / ${otherCpu.toFixed(1)} us\n`,
            )
            .join(''),
        )
        .join(''),
  );

  const outDir = resultsDir();
  await mkdir(outDir, { recursive: true });
  const file = join(outDir, 'rpc.json');
  await writeFile(
    file,
    `${JSON.stringify(
      {
        at: new Date().toISOString(),
        machine: { ...machine, loadAverageAtEnd: loadavg().map((value) => Number(value.toFixed(2))) },
        settings: {
          concurrency: CONCURRENCY,
          rounds: ROUNDS,
          roundMs: ROUND_MS,
          warmupMs: WARMUP_MS,
          moleculer: moleculer?.moleculerSettings ?? 'not installed',
        },
        parts: results,
      },
      null,
      2,
    )}\n`,
  );
  progress(`\nwritten ${file}`);
} finally {
  client.close();
  await moleculerCaller?.stop();
  await nc.drain().catch(() => {});
  await defaultNc.drain().catch(() => {});
  for (const child of children) await child.stop();
  await stopTracing();
  await nats.cleanup();
  await dropTestDatabases().catch((error: unknown) => progress(`could not drop the test database: ${(error as Error).message}`));
}
