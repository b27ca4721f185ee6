// `npm run soak -- --minutes N --rate R`: the whole shop (every service and
// the BFF as child processes, as `npm run load` starts them) under a steady
// order load for N minutes, with a report every minute of what should stay
// flat when nothing leaks:
//   - per process: resident memory and event-loop delay (p99 and max since
//     the last report), read from its operations port's /metrics
//     (prom-client's default metrics); nats-server's memory from /proc;
//   - orders placed, confirmed and cancelled in the minute, and the time from
//     asking placeOrder until CONFIRMED is heard on the orderUpdated
//     subscription (p50, p99);
//   - the rows of every table of every service's database;
//   - every stream's messages and bytes, and every consumer's lag (pending)
//     and unacknowledged deliveries (JetStream API).
// At the end: each process's memory in the first and the last five minutes
// (the first and last report on a shorter run), p99 first and last, the
// inbox rows left. Exit 1 when an order did not end as its kind should (one
// cancelled at its deadline is counted apart: the shop was too slow, nothing wrong).
//
// Options (or environment SOAK_<NAME>):
//   --minutes N     minutes of load (default 5; fractions allowed)
//   --rate R        orders per second (default 10)
//   --every S       seconds between two reports (default 60)
//   --customers N   customers placing the orders, each on a subscription of its own (default 20)
//   --mix ok=90,decline=5,oos=5   kinds of order by weight (as npm run load)
//   --settle S      longest wait for one order to end (default 60)
//   --json FILE     also write every report and the summary as JSON
// The shop's processes take the rest of the environment, e.g. short inbox
// horizons: INBOX_RETENTION_SECONDS=60 INBOX_PRUNE_INTERVAL_MS=5000.
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { connect, type NatsConnection } from 'nats';
import pRetry from 'p-retry';
import pg from 'pg';
import { GraphQLHttp, REGISTER, adminToken, createProducts, startShop, type Shop } from './lib/shop.ts';
import { Latencies, StatusLine, describeMachine, fmt, machine, progress, round, table } from './lib/measure.ts';
import { PLACE_ORDER, Subscriptions, expectedOutcome, parseMix, pickKind, type Kind } from './lib/order-follow.ts';
import { scriptOptions } from './options.ts';

// --- Options --------------------------------------------------------------------------------------------

const { option, numberOption } = scriptOptions({
  url: import.meta.url,
  command: 'soak',
  envPrefix: 'SOAK',
  names: ['minutes', 'rate', 'every', 'customers', 'mix', 'settle', 'json'],
});

const settings = {
  minutes: numberOption('minutes', 5, 0.1),
  rate: numberOption('rate', 10, 0.1),
  everyS: numberOption('every', 60, 1),
  customers: Math.trunc(numberOption('customers', 20, 1)),
  mix: parseMix(option('mix') ?? 'ok=90,decline=5,oos=5'),
  settleS: numberOption('settle', 60, 1),
};
const jsonFile = option('json');

// --- The load: orders at a steady rate, each followed to its end ------------------------------------------

interface Customer {
  token: string;
  subscriptions: Subscriptions;
}

/** What happened to orders since the last report (`window`) and since the start (`total`). */
class OrderBooks {
  window = { placed: 0, confirmed: 0, cancelled: 0, errors: 0 };
  /** `late`: cancelled at their deadline (the shop too slow for the rate): the saga's answer to a starved shop, not a wrong one. */
  readonly total = { placed: 0, confirmed: 0, cancelled: 0, errors: 0, unsettled: 0, unexpected: 0, late: 0 };
  /** From asking placeOrder until CONFIRMED is heard, in ms; since the last report. */
  confirmLatency = new Latencies();
  /** Every confirmation of the run: when it was heard (ms since the start of the load) and how long it took. */
  readonly confirmations: { atMs: number; ms: number }[] = [];
  readonly errors = new Map<string, number>();
  readonly surprises: string[] = [];

  count(key: 'placed' | 'confirmed' | 'cancelled' | 'errors'): void {
    this.window[key]++;
    this.total[key]++;
  }

  error(code: string): void {
    this.count('errors');
    this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
  }

  /** The window's figures, and a fresh window. */
  takeWindow(): { orders: OrderBooks['window']; p50: number; p99: number } {
    const taken = { orders: this.window, p50: this.confirmLatency.percentile(50), p99: this.confirmLatency.percentile(99) };
    this.window = { placed: 0, confirmed: 0, cancelled: 0, errors: 0 };
    this.confirmLatency = new Latencies();
    return taken;
  }
}

const books = new OrderBooks();
/** When the load started (performance.now()). */
let loadStarted = 0;

async function placeAndFollow(
  client: GraphQLHttp,
  customer: Customer,
  products: { inStock: { id: string }[]; soldOut: { id: string } },
  kind: Kind,
) {
  const lines = new Map<string, number>();
  const count = 1 + Math.floor(Math.random() * 3);
  for (let i = 0; i < count; i++) lines.set(products.inStock[Math.floor(Math.random() * products.inStock.length)]!.id, 1);
  if (kind === 'oos') lines.set(products.soldOut.id, 1);
  const asked = performance.now();
  let orderId: string;
  try {
    const placed = await client.ok<{ placeOrder: { id: string } }>(
      PLACE_ORDER,
      {
        lines: [...lines].map(([productId, quantity]) => ({ productId, quantity })),
        token: kind === 'decline' ? 'tok_decline' : 'tok_soak',
      },
      customer.token,
    );
    orderId = placed.placeOrder.id;
  } catch (error) {
    books.error(`placeOrder: ${(error as { code?: string }).code ?? (error as Error).message.slice(0, 80)}`);
    return;
  }
  books.count('placed');
  try {
    const order = await customer.subscriptions.untilSettled(orderId, settings.settleS * 1000);
    const outcome = order.status === 'CONFIRMED' ? 'CONFIRMED' : `CANCELLED ${order.cancelReason}`;
    if (order.status === 'CONFIRMED') {
      books.count('confirmed');
      const now = performance.now();
      books.confirmLatency.add(now - asked);
      books.confirmations.push({ atMs: now - loadStarted, ms: now - asked });
    } else books.count('cancelled');
    if (outcome === 'CANCELLED DEADLINE_EXCEEDED') books.total.late++;
    else if (outcome !== expectedOutcome[kind]) {
      books.total.unexpected++;
      if (books.surprises.length < 5) books.surprises.push(`order ${orderId} (${kind}) ended ${outcome}`);
    }
  } catch (error) {
    const code = (error as { code?: string }).code ?? 'FOLLOW_FAILED';
    if (code === 'UNSETTLED') books.total.unsettled++;
    books.error(`follow: ${code}`);
  }
}

// --- Measuring the shop ----------------------------------------------------------------------------------

interface ProcessSample {
  rssMiB: number;
  /** V8 heap in use after the last collection (nodejs_heap_size_used_bytes): what RSS holds that is live. */
  heapMiB: number;
  /**
   * Memory V8 knows of outside its heap (nodejs_external_memory_bytes: Buffers,
   * sockets' and zlib's buffers). RSS growing with heap and this flat points
   * at the allocator (fragmentation), not at something kept alive.
   */
  externalMiB: number;
  /** Event-loop delay since the previous scrape (prom-client resets its histogram on each). */
  loopP99Ms: number;
  loopMaxMs: number;
}

/** The value of `metric` (first series) in a Prometheus text page; undefined when absent. */
function metricValue(page: string, metric: string): number | undefined {
  const match = new RegExp(`^${metric}(?:\\{[^}]*\\})? (\\S+)`, 'm').exec(page);
  return match ? Number(match[1]) : undefined;
}

/** Problems met while measuring, each said once. */
const warned = new Set<string>();
function warnOnce(text: string): void {
  if (warned.has(text)) return;
  warned.add(text);
  progress(`soak: ${text}`);
}

async function scrapeProcess(name: string, port: number): Promise<ProcessSample | undefined> {
  const url = `http://127.0.0.1:${port}/metrics`;
  let page: string;
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(5000) });
    if (response.status !== 200) throw new Error(`HTTP ${response.status}`);
    page = await response.text();
  } catch (error) {
    warnOnce(`${name}'s ${url} did not answer (${(error as Error).message}): is the process still running? Its figures show as n/a`);
    return undefined;
  }
  const rss = metricValue(page, 'process_resident_memory_bytes');
  const heap = metricValue(page, 'nodejs_heap_size_used_bytes');
  const external = metricValue(page, 'nodejs_external_memory_bytes');
  const p99 = metricValue(page, 'nodejs_eventloop_lag_p99_seconds');
  const max = metricValue(page, 'nodejs_eventloop_lag_max_seconds');
  if (rss === undefined || heap === undefined || p99 === undefined || max === undefined) {
    warnOnce(
      `${name}'s ${url} lacks prom-client's default metrics (process_resident_memory_bytes, nodejs_eventloop_lag_*): its figures show as n/a`,
    );
  }
  return {
    rssMiB: round((rss ?? Number.NaN) / 2 ** 20, 1),
    heapMiB: round((heap ?? Number.NaN) / 2 ** 20, 1),
    externalMiB: round((external ?? Number.NaN) / 2 ** 20, 1),
    loopP99Ms: round((p99 ?? Number.NaN) * 1000, 1),
    loopMaxMs: round((max ?? Number.NaN) * 1000, 1),
  };
}

/** Resident memory of a process that has no /metrics (nats-server), from /proc. */
async function residentMiB(name: string, pid: number | undefined): Promise<number> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const kB = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1]);
    return round(kB / 1024, 1);
  } catch (error) {
    warnOnce(`no /proc/${pid}/status for ${name} (${(error as Error).message}): its memory shows as n/a`);
    return Number.NaN;
  }
}

/** Rows of every table of one database (schema_migrations aside). */
async function tableRows(client: pg.Client): Promise<Record<string, number>> {
  const { rows: tables } = await client.query<{ name: string }>(
    `SELECT table_name AS name FROM information_schema.tables
      WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> 'schema_migrations' ORDER BY table_name`,
  );
  if (tables.length === 0) return {};
  const { rows } = await client.query<{ name: string; rows: number }>(
    tables
      .map(({ name }) => `SELECT ${pg.escapeLiteral(name)} AS name, count(*)::bigint AS rows FROM ${pg.escapeIdentifier(name)}`)
      .join(' UNION ALL '),
  );
  return Object.fromEntries(rows.map((row) => [row.name, Number(row.rows)]));
}

interface StreamSample {
  messages: number;
  bytes: number;
  /** Durable consumers (the services'); ephemeral ones (KV watchers, the BFF's order feed) are only counted. */
  consumers: Record<string, { pending: number; ackPending: number }>;
  ephemeral: number;
}

async function streamSamples(nc: NatsConnection): Promise<Record<string, StreamSample>> {
  const jsm = await nc.jetstreamManager();
  const result: Record<string, StreamSample> = {};
  for (const stream of await jsm.streams.list().next()) {
    const consumers: StreamSample['consumers'] = {};
    let ephemeral = 0;
    for (const consumer of await jsm.consumers.list(stream.config.name).next()) {
      if (consumer.config.durable_name) consumers[consumer.name] = { pending: consumer.num_pending, ackPending: consumer.num_ack_pending };
      else ephemeral++;
    }
    result[stream.config.name] = { messages: stream.state.messages, bytes: stream.state.bytes, consumers, ephemeral };
  }
  return result;
}

interface Report {
  at: string;
  elapsedS: number;
  /** Seconds since the previous report. */
  windowS: number;
  orders: OrderBooks['window'];
  placedToConfirmedMs: { p50: number; p99: number };
  processes: Record<string, ProcessSample | { rssMiB: number }>;
  /** database (service name) -> table -> rows */
  tables: Record<string, Record<string, number>>;
  streams: Record<string, StreamSample>;
}

async function measure(
  shop: Shop,
  nc: NatsConnection,
  databases: Map<string, pg.Client>,
  elapsedS: number,
  windowS: number,
): Promise<Report> {
  const window = books.takeWindow();
  const processes: Report['processes'] = {};
  for (const [name, port] of shop.opsPorts) {
    processes[name] = (await scrapeProcess(name, port)) ?? {
      rssMiB: Number.NaN,
      heapMiB: Number.NaN,
      externalMiB: Number.NaN,
      loopP99Ms: Number.NaN,
      loopMaxMs: Number.NaN,
    };
  }
  processes['nats-server'] = { rssMiB: await residentMiB('nats-server', shop.pids().get('nats-server')) };
  const tables: Report['tables'] = {};
  for (const [name, client] of databases) {
    tables[name] = await tableRows(client).catch((error: Error) => {
      warnOnce(`could not count the rows of ${name}'s database (${error.message})`);
      return {};
    });
  }
  const streams = await streamSamples(nc).catch((error: Error) => {
    warnOnce(`could not read the streams (${error.message})`);
    return {};
  });
  return {
    at: new Date().toISOString(),
    elapsedS: round(elapsedS, 0),
    windowS: round(windowS, 0),
    orders: window.orders,
    placedToConfirmedMs: { p50: round(window.p50, 1), p99: round(window.p99, 1) },
    processes,
    tables,
    streams,
  };
}

function printReport(report: Report): void {
  const minutes = report.elapsedS / 60;
  const { orders, placedToConfirmedMs: latency } = report;
  let out = `\n=== soak ${fmt(minutes, 1)} of ${settings.minutes} min (${report.at}) ===\n`;
  out += `orders: ${orders.placed} placed (${fmt(orders.placed / report.windowS, 1)}/s), ${orders.confirmed} confirmed, ${orders.cancelled} cancelled, ${orders.errors} errors`;
  out += ` | placed->confirmed p50 ${fmt(latency.p50)} ms, p99 ${fmt(latency.p99)} ms\n`;
  out += `${table(
    ['process', 'RSS MiB', 'heap MiB', 'external MiB', 'loop p99 ms', 'loop max ms'],
    Object.entries(report.processes).map(([name, sample]) => [
      name,
      fmt(sample.rssMiB, 1),
      'heapMiB' in sample ? fmt(sample.heapMiB, 1) : '-',
      'externalMiB' in sample ? fmt(sample.externalMiB, 1) : '-',
      'loopP99Ms' in sample ? fmt(sample.loopP99Ms, 1) : '-',
      'loopMaxMs' in sample ? fmt(sample.loopMaxMs, 1) : '-',
    ]),
  )}\n`;
  out += `${table(
    ['database', 'rows by table'],
    Object.entries(report.tables).map(([name, rows]) => [
      name,
      Object.entries(rows)
        .map(([table, count]) => `${table} ${count}`)
        .join(', '),
    ]),
    2,
  )}\n`;
  // One row per durable consumer, its stream's figures on the first.
  const streamRows = Object.entries(report.streams).flatMap(([name, stream]) => {
    const figures = [String(stream.messages), fmt(stream.bytes / 2 ** 20, 1)];
    const consumers = Object.entries(stream.consumers);
    const ephemeral = stream.ephemeral > 0 ? ` (+${stream.ephemeral} ephemeral)` : '';
    if (consumers.length === 0) return [[name, `-${ephemeral}`, ...figures, '', '']];
    return consumers.map(([consumer, lag], i) =>
      i === 0
        ? [name, `${consumer}${ephemeral}`, ...figures, String(lag.pending), String(lag.ackPending)]
        : ['', consumer, '', '', String(lag.pending), String(lag.ackPending)],
    );
  });
  out += `${table(['stream', 'durable consumer', 'messages', 'MiB', 'pending', 'ack pending'], streamRows, 2)}\n`;
  process.stdout.write(out);
}

/** A process's heap or external figure; NaN for one without (nats-server). */
function figureOf(sample: Report['processes'][string] | undefined, figure: 'heapMiB' | 'externalMiB'): number {
  return sample && figure in sample ? (sample as ProcessSample)[figure] : Number.NaN;
}

/** Mean of `values` that are numbers. */
function mean(values: readonly number[]): number {
  const numbers = values.filter(Number.isFinite);
  return numbers.length === 0 ? Number.NaN : numbers.reduce((a, b) => a + b, 0) / numbers.length;
}

/** p99 placed->confirmed of the confirmations heard between `fromMs` and `toMs` of the load. */
function p99Between(fromMs: number, toMs: number): number {
  const latencies = new Latencies();
  for (const { atMs, ms } of books.confirmations) if (atMs >= fromMs && atMs <= toMs) latencies.add(ms);
  return latencies.percentile(99);
}

/** Each process's memory and p99 in the first and the last five minutes (or the first and last report). */
function summarise(reports: readonly Report[]) {
  const span = Math.max(1, Math.round(300 / settings.everyS));
  const take = Math.min(span, Math.max(1, Math.floor(reports.length / 2)));
  const first = reports.slice(0, take);
  const last = reports.slice(-take);
  const names = Object.keys(reports[0]?.processes ?? {});
  const memory = Object.fromEntries(
    names.map((name) => [
      name,
      {
        firstMiB: round(mean(first.map((r) => r.processes[name]?.rssMiB ?? Number.NaN)), 1),
        lastMiB: round(mean(last.map((r) => r.processes[name]?.rssMiB ?? Number.NaN)), 1),
        heapFirstMiB: round(mean(first.map((r) => figureOf(r.processes[name], 'heapMiB'))), 1),
        heapLastMiB: round(mean(last.map((r) => figureOf(r.processes[name], 'heapMiB'))), 1),
        externalFirstMiB: round(mean(first.map((r) => figureOf(r.processes[name], 'externalMiB'))), 1),
        externalLastMiB: round(mean(last.map((r) => figureOf(r.processes[name], 'externalMiB'))), 1),
      },
    ]),
  );
  const inboxRows = Object.fromEntries(Object.entries(reports.at(-1)?.tables ?? {}).map(([db, rows]) => [db, rows.inbox ?? 0]));
  return {
    window: { reports: take, seconds: take * settings.everyS },
    memory,
    p99Ms: {
      first: round(p99Between(0, (first.at(-1)?.elapsedS ?? 0) * 1000), 1),
      last: round(p99Between((last[0]!.elapsedS - last[0]!.windowS) * 1000, Number.POSITIVE_INFINITY), 1),
    },
    inboxRowsAtEnd: inboxRows,
  };
}

// --- The run ----------------------------------------------------------------------------------------------

const m = machine();
progress(`machine: ${describeMachine(m)}`);
progress(
  `soak: ${settings.minutes} min at ${settings.rate} orders/s, a report every ${settings.everyS} s; starting the shop (services and BFF as child processes, nats-server, SMTP sink)`,
);
const shop = await startShop({ bff: true, opsPorts: true, startTimeoutMs: 120_000 }).catch((error: Error) => {
  process.stderr.write(`soak: the shop did not start: ${error.message}\n`);
  process.exit(1);
});
const client = new GraphQLHttp(shop.bffUrl!, 512);
const nc = await connect({ servers: shop.natsUrl, noAsyncTraces: true });
const databases = new Map<string, pg.Client>();
const customers: Customer[] = [];
const status = new StatusLine(10_000);
const reports: Report[] = [];
let exitCode = 0;
try {
  for (const [name, url] of shop.databaseUrls) {
    // A PostgreSQL shared with others may be at max_connections for a while.
    const db = await pRetry(
      async () => {
        const candidate = new pg.Client({ connectionString: url });
        await candidate.connect().catch(async (error: Error) => {
          await candidate.end().catch(() => {});
          throw error;
        });
        return candidate;
      },
      {
        retries: 10,
        minTimeout: 1000,
        onFailedAttempt: ({ error }) => warnOnce(`connecting to ${name}'s database: ${error.message}; retrying`),
      },
    );
    databases.set(name, db);
  }
  const token = await adminToken(client);
  const prefix = `soak-${randomBytes(3).toString('hex')}`;
  const products = {
    inStock: await createProducts(client, token, 20, 1_000_000_000, prefix),
    soldOut: (await createProducts(client, token, 1, 0, `${prefix}-sold-out`))[0]!,
  };
  for (let i = 0; i < settings.customers; i++) {
    const { register } = await client.ok<{ register: { token: string } }>(REGISTER, {
      email: `soak-${i}-${randomBytes(4).toString('hex')}@soak.test`,
      name: `Soak ${i}`,
      password: 'soak-test-password',
    });
    customers.push({ token: register.token, subscriptions: await Subscriptions.open(shop.bffUrl!, register.token) });
  }
  progress(`soak: ${customers.length} customers, ${products.inStock.length} products; load starts`);

  const started = performance.now();
  loadStarted = started;
  const end = started + settings.minutes * 60_000;
  const inFlight = new Set<Promise<void>>();
  let nextReport = started + settings.everyS * 1000;
  let serial = 0;
  const measureNow = async () => {
    const elapsedS = (performance.now() - started) / 1000;
    const report = await measure(shop, nc, databases, elapsedS, elapsedS - (reports.at(-1)?.elapsedS ?? 0));
    reports.push(report);
    status.done();
    printReport(report);
  };
  // Arrivals on a fixed schedule whatever the shop answers (an open model), at most a settle time's worth in flight.
  const maxInFlight = Math.max(100, Math.ceil(settings.rate * settings.settleS));
  let skipped = 0;
  while (performance.now() < end) {
    const due = Math.floor(((performance.now() - started) / 1000) * settings.rate);
    for (; serial < due; serial++) {
      if (inFlight.size >= maxInFlight) {
        skipped++;
        continue;
      }
      const task: Promise<void> = placeAndFollow(client, customers[serial % customers.length]!, products, pickKind(settings.mix)).finally(
        () => inFlight.delete(task),
      );
      inFlight.add(task);
    }
    status.show(
      `soak ${fmt((performance.now() - started) / 60_000, 1)} min: ${books.total.placed} placed, ${books.total.confirmed} confirmed, ` +
        `${books.total.cancelled} cancelled, ${inFlight.size} in flight, ${books.total.errors} errors`,
    );
    if (performance.now() >= nextReport) {
      nextReport += settings.everyS * 1000;
      await measureNow();
    }
    await new Promise((resolve) => setTimeout(resolve, Math.max(1, Math.min(50, 500 / settings.rate))));
  }
  status.done();
  progress(`soak: load over; waiting for ${inFlight.size} orders in flight to end`);
  await Promise.all(inFlight);
  // The last report covers the run's last stretch, whatever its length.
  if (reports.length === 0 || (performance.now() - started) / 1000 - reports.at(-1)!.elapsedS >= 1) await measureNow();

  const summary = summarise(reports);
  let out = `\nsoak summary: ${settings.minutes} min at ${settings.rate} orders/s; first and last ${summary.window.seconds} s compared\n`;
  out += `orders: ${books.total.placed} placed, ${books.total.confirmed} confirmed, ${books.total.cancelled} cancelled, `;
  out += `${books.total.late} cancelled at their deadline, ${books.total.unsettled} not settled, ${books.total.unexpected} unexpected, ${books.total.errors} errors, ${skipped} not placed (over ${maxInFlight} in flight)\n`;
  out += `placed->confirmed p99: ${fmt(summary.p99Ms.first)} ms first, ${fmt(summary.p99Ms.last)} ms last\n`;
  out += `${table(
    ['process', 'RSS MiB first', 'RSS MiB last', 'heap MiB first', 'heap MiB last', 'external MiB first', 'external MiB last'],
    Object.entries(summary.memory).map(([name, memory]) => [
      name,
      fmt(memory.firstMiB, 1),
      fmt(memory.lastMiB, 1),
      fmt(memory.heapFirstMiB, 1),
      fmt(memory.heapLastMiB, 1),
      fmt(memory.externalFirstMiB, 1),
      fmt(memory.externalLastMiB, 1),
    ]),
  )}\n`;
  out += `inbox rows at the end: ${Object.entries(summary.inboxRowsAtEnd)
    .map(([db, rows]) => `${db} ${rows}`)
    .join(', ')}\n`;
  for (const [code, count] of books.errors) out += `error: ${code} x${count}\n`;
  for (const surprise of books.surprises) out += `unexpected: ${surprise}\n`;
  process.stdout.write(out);
  if (jsonFile) {
    await writeFile(
      jsonFile,
      `${JSON.stringify({ machine: m, settings, totals: books.total, errors: Object.fromEntries(books.errors), summary, reports }, null, 2)}\n`,
    );
  }
  if (books.total.unexpected > 0 || books.total.unsettled > 0) exitCode = 1;
} catch (error) {
  status.done();
  process.stderr.write(`soak: ${(error as Error).stack ?? error}\n`);
  exitCode = 1;
} finally {
  for (const customer of customers) customer.subscriptions.close();
  client.close();
  for (const db of databases.values()) await db.end().catch(() => {});
  await nc.close().catch(() => {});
  progress('soak: stopping the shop');
  await shop.stop();
}
process.exit(exitCode);
