// The inbox only needs an event's id while a copy of the event can still
// reach its consumer (redeliveryHorizonSeconds in subjects/streams.ts says
// how long that is for each stream). The pruner deletes older rows: every
// interval, in small batches of autocommitted DELETEs (each holds its locks
// for a moment only, so consumers' transactions never queue behind it),
// skipping rows another instance's pruner holds (SKIP LOCKED), so every
// instance of a service may run one.
import type { Pool } from '../db.ts';
import type { Logger } from '../log.ts';

/** A consumer's inbox and how long it keeps an event's id. */
export interface PruneTarget {
  consumer: string;
  horizonSeconds: number;
}

export interface InboxPrunerOptions {
  /** Time between two passes (each instance waits half to one and a half of it, so instances spread out). */
  intervalMs: number;
  /** Rows per DELETE. */
  batchSize?: number;
  /** Pause between two full batches, leaving the database to the consumers. */
  pauseMs?: number;
}

/** Deletes up to `batchSize` rows of `consumer` handled more than `horizonSeconds` ago; returns how many. */
export async function pruneInboxBatch(pool: Pool, { consumer, horizonSeconds }: PruneTarget, batchSize: number): Promise<number> {
  const { rowCount } = await pool.query(
    `DELETE FROM inbox WHERE (consumer, event_id) IN (
       SELECT consumer, event_id FROM inbox
        WHERE consumer = $1 AND handled_at < now() - make_interval(secs => $2)
        ORDER BY handled_at LIMIT $3
          FOR UPDATE SKIP LOCKED)`,
    [consumer, horizonSeconds, batchSize],
  );
  return rowCount ?? 0;
}

export class InboxPruner {
  readonly #pool: Pool;
  readonly #targets: readonly PruneTarget[];
  readonly #log: Logger;
  readonly #intervalMs: number;
  readonly #batchSize: number;
  readonly #pauseMs: number;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<number> | undefined;
  #stopped = false;

  constructor(pool: Pool, targets: readonly PruneTarget[], log: Logger, options: InboxPrunerOptions) {
    this.#pool = pool;
    this.#targets = targets;
    this.#log = log.child({ component: 'inbox-pruner' });
    this.#intervalMs = options.intervalMs;
    this.#batchSize = Math.max(1, Math.trunc(options.batchSize ?? 1000));
    this.#pauseMs = options.pauseMs ?? 20;
  }

  start(): void {
    if (this.#targets.length > 0) this.#schedule();
  }

  /** One pass over every consumer's inbox, until each has no row past its horizon; returns the rows deleted. */
  pruneNow(): Promise<number> {
    this.#running ??= this.#pass().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  /** Stops scheduling and waits for the batch in hand. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running?.catch(() => {});
  }

  #schedule(): void {
    if (this.#stopped) return;
    const delay = this.#intervalMs * (0.5 + Math.random());
    this.#timer = setTimeout(() => {
      this.pruneNow()
        .catch((error) => this.#log.warn({ err: error }, 'inbox pruning failed; will try again'))
        .finally(() => this.#schedule());
    }, delay);
    this.#timer.unref();
  }

  async #pass(): Promise<number> {
    const started = performance.now();
    let total = 0;
    for (const target of this.#targets) {
      let deleted: number;
      do {
        if (this.#stopped) return total;
        deleted = await pruneInboxBatch(this.#pool, target, this.#batchSize);
        total += deleted;
        if (deleted === this.#batchSize) await new Promise((resolve) => setTimeout(resolve, this.#pauseMs));
      } while (deleted === this.#batchSize);
    }
    if (total > 0) this.#log.info({ rows: total, ms: Math.round(performance.now() - started) }, 'inbox pruned');
    return total;
  }
}
