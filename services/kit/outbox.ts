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
import { headers as natsHeaders, type JetStreamClient, type KV, type NatsError, type PubAck } from 'nats';
import { context, propagation, ROOT_CONTEXT, type Context } from '@opentelemetry/api';
import { stateSubject, type DataOf, type Envelope, type EventContract, type StateContract, type StateOf } from '../../subjects/index.ts';
import { Transaction, withTransaction, type Pool, type Queryable } from './db.ts';
import type { Logger } from './log.ts';
import { SpanKind, currentTraceCarrier, injectTraceContext, withMessagingSpan } from './tracing.ts';

const CHANNEL = 'shop_outbox';

/** Subjects of state buckets (stateSubject): `$KV.<bucket>.<key>`. */
const STATE_SUBJECT_PREFIX = '$KV.';
/** JetStream's error code: a publish's expected last subject sequence was not the last. */
const JS_WRONG_LAST_SEQUENCE = 10071;
/** Reads and conditional puts of one state before the batch fails (and is retried whole by a later pass). */
const STATE_PUT_ATTEMPTS = 10;
/** State subjects whose last put a relay remembers (a few MB at most). */
const STATE_PUTS_KEPT = 20_000;

/** A state subject's last message as a relay knows it: its stream sequence (0: none) and version. */
export interface KnownState {
  seq: number;
  version: number;
}

/** A key's last state read, and a put conditional on it. */
export interface StateBucket {
  /** The key's last message: its sequence and version (0 and 0 when none; version 0 for a delete marker). */
  last(key: string): Promise<KnownState>;
  /** Puts `data` if the key's last sequence is `expectedSeq` (0: none); returns the new sequence. */
  put(key: string, data: Uint8Array, expectedSeq: number): Promise<number>;
}

/**
 * The KV API's get and put. kv.put takes no headers, so a state carries no
 * trace context and no Nats-Msg-Id; the conditional put is what keeps a
 * repeat out (it finds its own put there, reads it, and skips).
 */
function kvStateBucket(kv: KV): StateBucket {
  return {
    async last(key) {
      const entry = await kv.get(key);
      if (!entry) return { seq: 0, version: 0 };
      return { seq: entry.revision, version: entry.operation === 'PUT' && entry.length > 0 ? versionOf(entry.json<Envelope>()) : 0 };
    },
    put: (key, data, expectedSeq) => kv.put(key, data, { previousSeq: expectedSeq }),
  };
}

/** `$KV.<bucket>.<key>` taken apart. */
function stateKey(subject: string): { bucket: string; key: string } {
  const rest = subject.slice(STATE_SUBJECT_PREFIX.length);
  const dot = rest.indexOf('.');
  return { bucket: rest.slice(0, dot), key: rest.slice(dot + 1) };
}

/**
 * `rows` less the states a newer one of the same key in `rows` supersedes
 * (a product reserved by several transactions since the last pass): only
 * the newest is put, and puts of one key do not race each other.
 */
function withoutSupersededStates(rows: readonly OutboxRow[]): OutboxRow[] {
  const newest = new Map<string, OutboxRow>();
  for (const row of rows) {
    if (!row.subject.startsWith(STATE_SUBJECT_PREFIX)) continue;
    const held = newest.get(row.subject);
    if (!held || versionOf(row.payload) >= versionOf(held.payload)) newest.set(row.subject, row);
  }
  return rows.filter((row) => !row.subject.startsWith(STATE_SUBJECT_PREFIX) || newest.get(row.subject) === row);
}

/** The version of a state's envelope (0 when it has none). */
function versionOf(envelope: Envelope): number {
  return (envelope.data as StateItem | undefined)?.version ?? 0;
}

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
 * In a Transaction the rows go in just before COMMIT (tx.sendWithCommit).
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
  const values = [
    rows.map(({ envelope }) => envelope.id),
    rows.map(({ subject }) => subject),
    rows.map(({ envelope }) => JSON.stringify(envelope)),
    rows.map(({ carrier }) => JSON.stringify(carrier)),
  ];
  if (tx instanceof Transaction) {
    // Every write of the transaction joins one insert, sent at COMMIT.
    const pending = outboxInserts.get(tx);
    if (pending) {
      for (const [i, column] of pending.values.entries()) column.push(...values[i]!);
      return;
    }
    const insert = { text: OUTBOX_INSERT, values };
    outboxInserts.set(tx, insert);
    tx.sendWithCommit(insert);
    // This process's relays wake when (and only if) the transaction commits.
    for (const relay of relaysByPool.get(tx.pool) ?? []) tx.afterCommit(relay.wake);
  } else {
    // A transaction of the caller's own making: written now, relays woken through PostgreSQL.
    await tx.query(OUTBOX_INSERT, values);
    await tx.query(`SELECT pg_notify('${CHANNEL}', '')`);
  }
}

/** The outbox rows of several events, of one text whatever their number (prepared once per connection). */
const OUTBOX_INSERT = `INSERT INTO outbox (id, subject, payload, trace)
  SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::jsonb[]) ON CONFLICT (id) DO NOTHING`;

/** The outbox insert a Transaction sends at COMMIT, while more rows may join it. */
const outboxInserts = new WeakMap<Transaction, { text: string; values: string[][] }>();

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
  const taken = await tx.query<OutboxRow>(
    `DELETE FROM outbox WHERE seq IN
      (SELECT seq FROM outbox ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED)
      RETURNING seq, id, subject, payload, trace`,
    [batchSize],
  );
  const rows = taken.rows;
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
  /** The state buckets' KV views by name (#putState); each bound on first use. */
  readonly #kvs = new Map<string, Promise<StateBucket>>();
  /** This relay's last put of each state subject (recent ones): the sequence its next put expects. */
  readonly #lastPuts = new Map<string, KnownState>();
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
    const { taken, published } = await withTransaction(this.#pool, async (tx) => {
      const rows = await takeOutboxBatch(tx, this.#batchSize);
      const sent = withoutSupersededStates(rows);
      const acks = await Promise.all(sent.map((row) => this.#publish(row)));
      // A state superseded in the pass, or older than the bucket's, was taken but not put.
      return { taken: rows.length, published: sent.filter((_, i) => acks[i] !== undefined) };
    });
    for (const row of published) this.#metrics?.eventPublished(row.subject);
    return taken;
  }

  #publish(row: OutboxRow): Promise<PubAck | undefined> {
    const parent = propagation.extract(ROOT_CONTEXT, row.trace);
    return withMessagingSpan(row.subject, 'send', SpanKind.PRODUCER, parent, () => {
      const headers = natsHeaders();
      injectTraceContext(headers);
      const data = Buffer.from(JSON.stringify(row.payload));
      if (row.subject.startsWith(STATE_SUBJECT_PREFIX)) return this.#putState(row, data);
      return this.#js.publish(row.subject, data, { msgID: row.id, headers, timeout: 5000 });
    });
  }

  /**
   * An item's state (writeStates), put only over an older one: relays of
   * several instances may take two versions of one item in different passes
   * and publish them out of order, and a bucket keeps the last message it got.
   * Every put is conditional on the key's last sequence being the one
   * expected, so the bucket's version of a key only grows. The expected
   * sequence is the one this relay last put for the key (#lastPuts), else the
   * key's last message read from the bucket; a put
   * that finds another one there reads, and is skipped when that holds this
   * version or a newer one.
   */
  async #putState(row: OutboxRow, data: Buffer): Promise<PubAck | undefined> {
    const version = versionOf(row.payload);
    const key = stateKey(row.subject);
    const bucket = await this.#bucket(key.bucket);
    let known = this.#lastPuts.get(row.subject);
    for (let attempt = 1; ; attempt++) {
      known ??= await bucket.last(key.key);
      // What the bucket held is a floor: its version of a key never goes down.
      if (known.version >= version) return undefined;
      try {
        const seq = await bucket.put(key.key, data, known.seq);
        this.#rememberPut(row.subject, { seq, version });
        return { stream: `KV_${key.bucket}`, seq, duplicate: false, domain: '' };
      } catch (error) {
        if ((error as NatsError).api_error?.err_code !== JS_WRONG_LAST_SEQUENCE || attempt >= STATE_PUT_ATTEMPTS) throw error;
        this.#lastPuts.delete(row.subject);
        known = undefined;
      }
    }
  }

  /** The KV API's view of a bucket (bound, never created here: the service ensured it at start). */
  #bucket(name: string): Promise<StateBucket> {
    let bucket = this.#kvs.get(name);
    if (!bucket) {
      bucket = this.#js.views.kv(name, { bindOnly: true }).then(kvStateBucket);
      bucket.catch(() => this.#kvs.delete(name));
      this.#kvs.set(name, bucket);
    }
    return bucket;
  }

  /** Keeps the newest `STATE_PUTS_KEPT` puts, least recently put dropped first. */
  #rememberPut(subject: string, put: KnownState): void {
    this.#lastPuts.delete(subject);
    this.#lastPuts.set(subject, put);
    if (this.#lastPuts.size > STATE_PUTS_KEPT) this.#lastPuts.delete(this.#lastPuts.keys().next().value!);
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
