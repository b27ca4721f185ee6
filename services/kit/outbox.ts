// The outbox: an event is written to the `outbox` table in the same
// transaction as the state change, so it exists if and only if the change
// committed. The relay publishes it to JetStream with `msgID = event.id`
// (JetStream drops a repeat) and deletes the row. It wakes on commit through
// LISTEN/NOTIFY and also sweeps on a timer, so nothing waits on a lost wake-up.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { headers as natsHeaders, type JetStreamClient } from 'nats';
import { propagation, ROOT_CONTEXT } from '@opentelemetry/api';
import type { DataOf, Envelope, EventContract } from '../../subjects/index.ts';
import type { Pool, Queryable } from './db.ts';
import type { Logger } from './log.ts';
import { SpanKind, currentTraceCarrier, injectTraceContext, withMessagingSpan } from './tracing.ts';

const CHANNEL = 'shop_outbox';

/**
 * Writes `data` as an event of `contract` inside the caller's transaction.
 * Pass `id` to make the write idempotent by a natural key (a repeat is ignored).
 */
export async function writeEvent<C extends EventContract>(
  tx: Queryable,
  contract: C,
  data: DataOf<C>,
  id: string = randomUUID(),
): Promise<Envelope<DataOf<C>>> {
  contract.data.assert(data, `${contract.subject} event`);
  const envelope: Envelope<DataOf<C>> = { id, type: contract.subject, occurredAt: new Date().toISOString(), data };
  await tx.query(
    `INSERT INTO outbox (id, subject, payload, trace) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING`,
    [id, contract.subject, envelope, currentTraceCarrier()],
  );
  // Delivered to the relay when (and only if) the transaction commits.
  await tx.query(`SELECT pg_notify('${CHANNEL}', '')`);
  return envelope;
}

interface OutboxRow {
  seq: string;
  id: string;
  subject: string;
  payload: Envelope;
  trace: Record<string, string>;
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
    this.#batchSize = options.batchSize ?? 500;
    this.#metrics = options.metrics;
  }

  async start(): Promise<void> {
    await this.#listen();
    this.#sweeper = setInterval(() => this.wake(), this.#sweepMs);
    this.wake(); // publish what a previous run left behind
  }

  /** Publishes everything pending; concurrent wake-ups fold into one more pass. */
  wake(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = this.#drain().finally(() => {
      this.#running = undefined;
    });
  }

  /** Rows waiting to be published, for metrics and tests. */
  async backlog(): Promise<number> {
    const { rows } = await this.#pool.query<{ count: number }>('SELECT count(*)::int AS count FROM outbox');
    return rows[0]?.count ?? 0;
  }

  /** Stops waking, then publishes what is pending one last time. */
  async stop(): Promise<void> {
    this.#stopped = true;
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

  async #publishBatch(): Promise<number> {
    const tx = await this.#pool.connect();
    try {
      await tx.query('BEGIN');
      // SKIP LOCKED: instances of one service share the outbox without waiting on each other.
      const { rows } = await tx.query<OutboxRow>(
        'SELECT seq, id, subject, payload, trace FROM outbox ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED',
        [this.#batchSize],
      );
      if (rows.length > 0) {
        await Promise.all(rows.map((row) => this.#publish(row)));
        await tx.query('DELETE FROM outbox WHERE seq = ANY($1::bigint[])', [rows.map((row) => row.seq)]);
      }
      await tx.query('COMMIT');
      for (const row of rows) this.#metrics?.eventPublished(row.subject);
      return rows.length;
    } catch (error) {
      await tx.query('ROLLBACK').catch(() => {});
      throw error;
    } finally {
      tx.release();
    }
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
