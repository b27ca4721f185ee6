// A bounded, rate-limited order load for the chaos suite: places orders
// through orders.place at a steady rate (never more than `maxInFlight` at
// once), with a mix of lines, declining cards, scarce products and customers
// who cancel soon after ordering. It keeps the books the checks need: which
// orders were accepted (answered with an order), which were refused, and
// which calls ended without an answer (the order may or may not exist).
// Orders go through orders.place over NATS (rpcOrderDoor), or through another
// door (the BFF's GraphQL, test/cluster/bff-door.ts).
import { randomUUID } from 'node:crypto';
import { orders, type Order, type RequestOf } from '../../subjects/index.ts';
import { ServiceError, type RpcClient } from '../../services/kit/index.ts';

/**
 * Where orders are placed and cancelled. A refusal throws a ServiceError with
 * its code; anything else thrown is a call without an answer.
 */
export interface OrderDoor {
  place(input: RequestOf<typeof orders.place>): Promise<Pick<Order, 'id'>>;
  cancel(input: RequestOf<typeof orders.cancel>): Promise<unknown>;
}

/** orders.place and orders.cancel over NATS. */
export function rpcOrderDoor(client: RpcClient): OrderDoor {
  return {
    place: (input) => client.call(orders.place, input),
    cancel: (input) => client.call(orders.cancel, input),
  };
}

export interface LoadProduct {
  id: string;
}

export interface LoadOptions {
  orders: OrderDoor;
  customers: readonly string[];
  products: readonly LoadProduct[];
  random: () => number;
  /** Orders started per second. */
  ratePerSecond: number;
  maxInFlight: number;
  /** Share of accepted orders their customer cancels a moment later. */
  cancelShare: number;
  /** Share of orders paid with a card the simulator declines. */
  declineShare: number;
}

export class OrderLoad {
  /** Calls of orders.place made. */
  attempts = 0;
  /** Orders answered: id -> customer. */
  readonly accepted = new Map<string, string>();
  /** Refusals by code (the service answered: no order). */
  readonly refused = new Map<string, number>();
  /** Calls without an answer (timeout, service away): the order may exist. */
  unanswered = 0;
  readonly cancels = { asked: 0, done: 0, refused: 0, unanswered: 0 };
  readonly #options: LoadOptions;
  readonly #inFlight = new Set<Promise<void>>();
  #timer: NodeJS.Timeout | undefined;

  constructor(options: LoadOptions) {
    this.#options = options;
  }

  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(
      () => {
        if (this.#inFlight.size < this.#options.maxInFlight) this.#track(this.#placeOne());
      },
      Math.max(1, Math.round(1000 / this.#options.ratePerSecond)),
    );
  }

  /** Stops placing and waits for every call in flight (cancels included). */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
  }

  #track(work: Promise<void>): void {
    const task = work.finally(() => this.#inFlight.delete(task));
    this.#inFlight.add(task);
  }

  #pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.#options.random() * items.length)]!;
  }

  async #placeOne(): Promise<void> {
    const { orders: door, random } = this.#options;
    const customerId = this.#pick(this.#options.customers);
    const lines = new Map<string, number>();
    const count = 1 + Math.floor(random() * 3);
    while (lines.size < Math.min(count, this.#options.products.length)) {
      lines.set(this.#pick(this.#options.products).id, 1 + Math.floor(random() * 3));
    }
    const paymentToken = random() < this.#options.declineShare ? 'tok_decline' : 'tok_visa';
    this.attempts++;
    let order: Pick<Order, 'id'>;
    try {
      order = await door.place({
        idempotencyKey: randomUUID(),
        customerId,
        lines: [...lines].map(([productId, quantity]) => ({ productId, quantity })),
        paymentToken,
      });
    } catch (error) {
      const code = error instanceof ServiceError ? error.code : 'NO_ANSWER';
      if (code === 'TIMEOUT' || code === 'NO_ANSWER') this.unanswered++;
      else this.refused.set(code, (this.refused.get(code) ?? 0) + 1);
      return;
    }
    this.accepted.set(order.id, customerId);
    if (random() < this.#options.cancelShare) {
      // A moment later: sometimes still PENDING, sometimes CONFIRMED (then refunded).
      const delay = Math.floor(random() * 1500);
      this.#track(new Promise<void>((resolve) => setTimeout(resolve, delay)).then(() => this.#cancel(order.id, customerId)));
    }
  }

  async #cancel(id: string, customerId: string): Promise<void> {
    this.cancels.asked++;
    try {
      await this.#options.orders.cancel({ id, customerId, reason: 'changed my mind' });
      this.cancels.done++;
    } catch (error) {
      if (error instanceof ServiceError && !error.transient) this.cancels.refused++;
      else this.cancels.unanswered++;
    }
  }
}
