// The dispatcher: the loop that moves shipments through the carrier. Its queue
// is the shipments table (next_step_at), so it survives any crash: a row is
// leased before the carrier is called (claimDue) and moved on, with its
// event, in one transaction afterwards (one for all the rows of a claim whose
// carrier call succeeded: a transaction per batch, not per parcel); a process
// that dies in between leaves the row due again when the lease runs out, and the carrier's calls
// are idempotent (the tracking number comes from the shipment id). Every
// instance runs one; SKIP LOCKED gives each row to one of them.
//
// A held row (a cancellation under way) is not shipped; when its hold runs
// out without the cancellation arriving, the dispatcher asks the order
// service what became of the order and cancels or releases it.
import { orders, shipments, type Order } from '../../subjects/index.ts';
import {
  ServiceError,
  withTransaction,
  writeEvent,
  writeEvents,
  type BackgroundTask,
  type EventToWrite,
  type Logger,
  type Pool,
  type RpcClient,
} from '../kit/index.ts';
import type { CarrierSimulator } from './carrier.ts';
import { settleCancellation, shipmentRef } from './events.ts';
import { advance, claimDue, dequeue, hold, lockById, markRetry, release, type DueShipment, type Move } from './store.ts';

export interface DispatcherOptions {
  /** How long a claimed row stays with this process before another may take it. */
  leaseMs: number;
  /** How often to look at the queue when not woken. */
  pollMs: number;
  /** Wait after the first failed step; doubles after each further one, at most maxRetryDelayMs. */
  retryBaseMs: number;
  maxRetryDelayMs?: number;
  /** How long a hold waits for its cancellation before the order service is asked. */
  holdMs: number;
  /** Read at each step (live settings). */
  readonly shipAfterMs: number;
  readonly deliverAfterMs: number;
  /** Rows taken per claim (each gets its own carrier call, side by side; their steps commit together). */
  batch?: number;
}

export class ShipmentDispatcher implements BackgroundTask {
  readonly name = 'shipment-dispatcher';
  readonly #pool: Pool;
  readonly #carrier: CarrierSimulator;
  readonly #client: RpcClient;
  readonly #log: Logger;
  readonly #options: DispatcherOptions;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #again = false;
  #stopped = false;

  constructor(pool: Pool, carrier: CarrierSimulator, client: RpcClient, log: Logger, options: DispatcherOptions) {
    this.#pool = pool;
    this.#carrier = carrier;
    this.#client = client;
    this.#log = log.child({ component: 'dispatcher' });
    this.#options = options;
  }

  start(): void {
    this.wake(); // whatever a previous run left due
  }

  /** Works the queue until nothing is due, then sleeps pollMs; a wake-up during a pass adds one more. */
  wake(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    clearTimeout(this.#timer);
    this.#running = this.#drain()
      // The database may be away for a moment; the next pass tries again.
      .catch((error: unknown) => this.#log.warn({ err: error }, 'dispatch pass failed; will retry'))
      .finally(() => {
        this.#running = undefined;
        if (this.#stopped) return;
        this.#timer = setTimeout(() => this.wake(), this.#options.pollMs);
      });
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
  }

  async #drain(): Promise<void> {
    const batch = this.#options.batch ?? 32;
    for (;;) {
      this.#again = false;
      const due = await claimDue(this.#pool, this.#options.leaseMs, batch);
      const moves = await Promise.all(due.map((row) => this.#step(row)));
      await this.#advance(due, moves);
      if ((due.length < batch && !this.#again) || this.#stopped) return;
    }
  }

  /**
   * One step of one leased row: the carrier's call, and the move it makes
   * (committed by #advance), if any. A failure is recorded on the row, to be
   * tried again after a back-off.
   */
  async #step(row: DueShipment): Promise<Move | undefined> {
    try {
      if (row.held_at) await this.#checkHold(row, this.#logOf(row));
      else if (row.status === 'LABEL_CREATED') {
        const { trackingNumber } = await this.#carrier.pickUp({ shipmentId: row.id, failedAttempts: row.step_attempts });
        const nextStepMs = this.#options.deliverAfterMs;
        return { id: row.id, from: 'LABEL_CREATED', to: 'SHIPPED', note: `picked up by ${row.carrier}`, trackingNumber, nextStepMs };
      } else if (row.status === 'SHIPPED') {
        await this.#carrier.deliver({ shipmentId: row.id, failedAttempts: row.step_attempts });
        return { id: row.id, from: 'SHIPPED', to: 'DELIVERED', note: 'delivered', trackingNumber: row.tracking_number!, nextStepMs: null };
      } else await dequeue(this.#pool, row.id);
    } catch (error) {
      await this.#retryLater(row, error);
    }
    return undefined;
  }

  /** The moves of the carrier's calls that succeeded, with their events, in one transaction. */
  async #advance(due: readonly DueShipment[], moves: readonly (Move | undefined)[]): Promise<void> {
    const made = moves.filter((move) => move !== undefined);
    if (made.length === 0) return;
    try {
      await withTransaction(this.#pool, async (tx) => {
        const moved = new Map((await advance(tx, made)).map((row) => [row.id, row]));
        const events: EventToWrite[] = [];
        for (const move of made) {
          const row = moved.get(move.id);
          const log = this.#logOf(row ?? due.find((claimed) => claimed.id === move.id)!);
          // Held (or cancelled) since it was claimed: the hold won, the parcel stays.
          if (!row) {
            if (move.to === 'SHIPPED') log.info('shipment held since it was claimed; not shipped');
            continue;
          }
          const ref = { ...shipmentRef(row), trackingNumber: move.trackingNumber };
          if (move.to === 'SHIPPED') {
            events.push({ contract: shipments.shipped, data: ref });
            log.info({ trackingNumber: move.trackingNumber }, 'shipment shipped');
          } else {
            events.push({ contract: shipments.delivered, data: ref });
            log.info('shipment delivered');
          }
        }
        await writeEvents(tx, events);
      });
    } catch (error) {
      // Nothing moved: each row is tried again (its carrier calls are idempotent).
      await Promise.all(made.map((move) => this.#retryLater(due.find((row) => row.id === move.id)!, error)));
    }
  }

  async #retryLater(row: DueShipment, error: unknown): Promise<void> {
    const delay = Math.min(this.#options.retryBaseMs * 2 ** row.step_attempts, this.#options.maxRetryDelayMs ?? 60_000);
    this.#logOf(row).warn({ err: error, attempt: row.step_attempts + 1, retryInMs: delay }, 'shipment step failed; will retry');
    await markRetry(this.#pool, row.id, row.held_at !== null, error instanceof Error ? error.message : String(error), delay).catch(() => {
      // The lease brings it back anyway.
    });
  }

  #logOf(row: DueShipment): Logger {
    return this.#log.child({ shipmentId: row.id, orderId: row.order_id });
  }

  /** A hold outlived its wait: the order service says whether the order was cancelled after all. */
  async #checkHold(row: DueShipment, log: Logger): Promise<void> {
    // No such order (only the order service may hold, so never in practice): nothing to ship either.
    const order: Pick<Order, 'status'> = await this.#client.call(orders.get, { id: row.order_id }).catch((error: unknown) => {
      if (error instanceof ServiceError && error.code === 'ORDER_NOT_FOUND') return { status: 'CANCELLED' as const };
      throw error;
    });
    await withTransaction(this.#pool, async (tx) => {
      const current = await lockById(tx, row.id);
      if (!current?.held_at) return; // the cancellation came meanwhile
      if (order.status === 'CANCELLED') return settleCancellation(tx, current, log);
      if (order.status === 'PENDING') return hold(tx, current.id, this.#options.holdMs);
      const released = await release(tx, current, this.#options.shipAfterMs);
      // A tombstone brought back is the order's shipment from now on: it is announced like a new one.
      if (current.status === 'CANCELLED') await writeEvent(tx, shipments.created, shipmentRef(released));
      log.warn({ status: released.status }, 'hold released: the order was not cancelled');
    });
  }
}
