// The outbox: an event is written to the `outbox` table in the same
// transaction as the state change, so it exists if and only if the change
// committed. The relay publishes it to JetStream with `msgID = event.id`
// (JetStream drops a repeat) and deletes the row. It wakes on commit and also
// sweeps on a timer, so nothing waits on a lost wake-up. The wake-up on commit
// is in-process when the transaction is withTransaction's (tx.afterCommit): a
// NOTIFY in every writing transaction would serialise the commits of the whole
// PostgreSQL server on its notification lock (bench/saga.ts showed the
// convoy). A transaction of the caller's own making (a pg client) still wakes
// the relays through LISTEN/NOTIFY.
import { createHash, randomUUID } from 'node:crypto';
import pg from 'pg';
import { headers as natsHeaders, type JetStreamClient } from 'nats';
import { context, propagation, ROOT_CONTEXT, type Context } from '@opentelemetry/api';
import { stateSubject, type DataOf, type Envelope, type EventContract, type StateContract, type StateOf } from '../../subjects/index.ts';
import { Transaction, withTransaction, type Pool, type Queryable } from './db.ts';
import type { Logger } from './log.ts';
import { SpanKind, currentTraceCarrier, injectTraceContext, withMessagingSpan } from './tracing.ts';

const { escapeLiteral } = pg;

const CHANNEL = 'shop_outbox';

/** The running relays of this process by the pool they read from: a commit on the pool wakes them. */
const relaysByPool = new Map<Pool, Set<OutboxRelay>>();

/**
 * Writes `data` as an event of `contract` inside the caller's transaction.
 * Pass `id` to make the write idempotent by a natural key (a repeat is ignored).
 */
export async function writeEvent<C extends EventContract>(
  tx: Transaction | Queryable,
  contract: C,
  data: DataOf<C>,
  id: string = randomUUID(),
): Promise<Envelope<DataOf<C>>> {
  return (await writeEvents(tx, [{ contract, data, id }]))[0] as Envelope<DataOf<C>>;
}

/** One event for writeEvents. */
export interface EventToWrite<C extends EventContract = EventContract> {
  contract: C;
  data: DataOf<C>;
  /** As writeEvent's `id`; a new id by default. */
  id?: string;
  /** The context whose trace the event carries (a batch handler: its event's `trace`); the active one by default. */
  trace?: Context;
}

/**
 * writeEvent for several events (a batch handler applying many at once).
 * In a Transaction the rows go in with COMMIT, in the same round trip
 * (tx.sendWithCommit): the outbox then costs a transaction nothing but bytes.
 */
export async function writeEvents(tx: Transaction | Queryable, events: readonly EventToWrite[]): Promise<Envelope[]> {
  if (events.length === 0) return [];
  const occurredAt = new Date().toISOString();
  const rows = events.map(({ contract: c, data, id = randomUUID(), trace }) => {
    const contract: EventContract = c;
    contract.data.assert(data, `${contract.subject} event`);
    const envelope: Envelope = { id, type: contract.subject, occurredAt, data };
    const carrier = trace ? context.with(trace, currentTraceCarrier) : currentTraceCarrier();
    return { subject: contract.subject, envelope, carrier };
  });
  await insertRows(tx, rows);
  return rows.map(({ envelope }) => envelope);
}

/** An item's state as a state contract holds it: its id (the key) and its version. */
type StateItem = { id: string; version?: number | undefined };

/**
 * Writes the current state of `items` to the bucket of `contract` inside the
 * caller's transaction (the relay puts each under `$KV.<bucket>.<id>`). The
 * outbox id is derived from bucket, id and version, so writing one version
 * twice publishes it once (also JetStream's duplicate window drops a repeat).
 */
export async function writeStates<C extends StateContract>(
  tx: Transaction | Queryable,
  contract: C,
  items: readonly (StateOf<C> & StateItem)[],
): Promise<void> {
  if (items.length === 0) return;
  const occurredAt = new Date().toISOString();
  const carrier = currentTraceCarrier();
  const rows = items.map((item) => {
    contract.value.assert(item, `${contract.bucket} state`);
    if (!Number.isSafeInteger(item.version)) throw new Error(`${contract.bucket} state of ${item.id} has no version`);
    const id = stateEventId(contract.bucket, item.id, item.version!);
    return { subject: stateSubject(contract, item.id), envelope: { id, type: contract.bucket, occurredAt, data: item }, carrier };
  });
  await insertRows(tx, rows);
}

/** A UUID (the outbox's id type) named by bucket, key and version: the same state, the same id. */
function stateEventId(bucket: string, key: string, version: number): string {
  const hex = createHash('sha256').update(`${bucket}\0${key}\0${version}`).digest('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-5${hex.slice(13, 16)}-8${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

async function insertRows(
  tx: Transaction | Queryable,
  rows: readonly { subject: string; envelope: Envelope; carrier: Record<string, string> }[],
): Promise<void> {
  const values = rows.map(
    ({ subject, envelope, carrier }) =>
      `(${escapeLiteral(envelope.id)}, ${escapeLiteral(subject)}, ${escapeLiteral(JSON.stringify(envelope))}, ${escapeLiteral(JSON.stringify(carrier))})`,
  );
  const insert = `INSERT INTO outbox (id, subject, payload, trace) VALUES ${values.join(', ')} ON CONFLICT (id) DO NOTHING`;
  if (tx instanceof Transaction) {
    tx.sendWithCommit(insert);
    // This process's relays wake when (and only if) the transaction commits.
    for (const relay of relaysByPool.get(tx.pool) ?? []) tx.afterCommit(relay.wake);
  } else {
    // A transaction of the caller's own making: written now, relays woken through PostgreSQL.
    await tx.query(insert);
    await tx.query(`SELECT pg_notify('${CHANNEL}', '')`);
  }
}

export interface OutboxRow {
  seq: string;
  id: string;
  subject: string;
  payload: Envelope;
  trace: Record<string, string>;
}

/**
 * The relay's claim, as the first statement of `tx`: up to `batchSize` rows,
 * deleted once `tx` commits, in the order they were written. Exported for
 * bench/saga-bound.ts, which replays the saga's SQL without NATS.
 */
export async function takeOutboxBatch(tx: Transaction, batchSize: number): Promise<OutboxRow[]> {
  // With BEGIN in one round trip.
  const taken = await tx.beginWith(`DELETE FROM outbox WHERE seq IN
    (SELECT seq FROM outbox ORDER BY seq LIMIT ${batchSize} FOR UPDATE SKIP LOCKED)
    RETURNING seq, id, subject, payload, trace`);
  const rows = taken.rows as OutboxRow[];
  // In the order they were written: publishes leave on one connection in array order.
  return rows.sort((a, b) => Number(a.seq) - Number(b.seq));
}

export interface OutboxRelayOptions {
  sweepMs?: number;
  batchSize?: number;
  /** Told of every event published (metrics.ts). */
  metrics?: { eventPublished(subject: string): void };
}

export class OutboxRelay {
  readonly #pool: Pool;
  readonly #js: JetStreamClient;
  readonly #log: Logger;
  readonly #databaseUrl: string;
  readonly #sweepMs: number;
  readonly #batchSize: number;
  readonly #metrics: OutboxRelayOptions['metrics'];
  #listener: pg.Client | undefined;
  #sweeper: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #again = false;
  #stopped = false;

  constructor(pool: Pool, databaseUrl: string, js: JetStreamClient, log: Logger, options: OutboxRelayOptions = {}) {
    this.#pool = pool;
    this.#databaseUrl = databaseUrl;
    this.#js = js;
    this.#log = log.child({ component: 'outbox' });
    this.#sweepMs = options.sweepMs ?? 1000;
    this.#batchSize = Math.max(1, Math.trunc(options.batchSize ?? 500));
    this.#metrics = options.metrics;
  }

  async start(): Promise<void> {
    const relays = relaysByPool.get(this.#pool) ?? new Set();
    relaysByPool.set(this.#pool, relays);
    relays.add(this);
    await this.#listen();
    this.#sweeper = setInterval(() => this.wake(), this.#sweepMs);
    this.wake(); // publish what a previous run left behind
  }

  /**
   * Publishes everything pending; concurrent wake-ups fold into one more
   * pass. One function for the relay's life (a transaction's afterCommit
   * runs it once however many events the transaction wrote).
   */
  readonly wake = (): void => {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = this.#drain().finally(() => {
      this.#running = undefined;
    });
  };

  /** Rows waiting to be published, for metrics and tests. */
  async backlog(): Promise<number> {
    const { rows } = await this.#pool.query<{ count: number }>('SELECT count(*)::int AS count FROM outbox');
    return rows[0]?.count ?? 0;
  }

  /** Stops waking, then publishes what is pending one last time. */
  async stop(): Promise<void> {
    this.#stopped = true;
    const relays = relaysByPool.get(this.#pool);
    relays?.delete(this);
    if (relays?.size === 0) relaysByPool.delete(this.#pool);
    clearInterval(this.#sweeper);
    await this.#running;
    await this.#publishPending().catch((error) => this.#log.warn({ err: error }, 'final outbox flush failed'));
    await this.#listener?.end().catch(() => {});
  }

  async #drain(): Promise<void> {
    do {
      this.#again = false;
      try {
        await this.#publishPending();
      } catch (error) {
        // NATS or the database is away: the rows stay, the next sweep retries.
        this.#log.warn({ err: error }, 'outbox publish failed; will retry');
        return;
      }
    } while (this.#again && !this.#stopped);
  }

  async #publishPending(): Promise<void> {
    while ((await this.#publishBatch()) === this.#batchSize) {
      // a full batch: there may be more
    }
  }

  /**
   * One pass: takes up to a batch of rows (deleted, but only once the
   * transaction commits; SKIP LOCKED lets instances of one service share the
   * outbox without waiting on each other), publishes them, commits. A failed
   * publish rolls the deletion back and the rows wait for the next pass.
   */
  async #publishBatch(): Promise<number> {
    const published = await withTransaction(this.#pool, async (tx) => {
      const rows = await takeOutboxBatch(tx, this.#batchSize);
      await Promise.all(rows.map((row) => this.#publish(row)));
      return rows;
    });
    for (const row of published) this.#metrics?.eventPublished(row.subject);
    return published.length;
  }

  #publish(row: OutboxRow): Promise<unknown> {
    const parent = propagation.extract(ROOT_CONTEXT, row.trace);
    return withMessagingSpan(row.subject, 'send', SpanKind.PRODUCER, parent, () => {
      const headers = natsHeaders();
      injectTraceContext(headers);
      return this.#js.publish(row.subject, Buffer.from(JSON.stringify(row.payload)), {
        msgID: row.id,
        headers,
        timeout: 5000,
      });
    });
  }

  async #listen(): Promise<void> {
    if (this.#stopped) return;
    const listener = new pg.Client({ connectionString: this.#databaseUrl });
    listener.on('notification', () => this.wake());
    listener.on('error', (error) => {
      this.#log.warn({ err: error }, 'outbox listener lost; sweeping until it is back');
      this.#listener = undefined;
      listener.end().catch(() => {});
      setTimeout(() => this.#listen().catch(() => {}), 1000).unref();
    });
    try {
      await listener.connect();
      await listener.query(`LISTEN ${CHANNEL}`);
      this.#listener = listener;
    } catch (error) {
      this.#log.warn({ err: error }, 'outbox listener could not connect; retrying');
      listener.end().catch(() => {});
      setTimeout(() => this.#listen().catch(() => {}), 1000).unref();
    }
  }
}
