// Placing orders through the BFF and following them to their end over its
// orderUpdated subscription (graphql-transport-ws): what `npm run load`'s
// shoppers and `npm run soak` share.
import WebSocket from 'ws';

/** The kinds of order: paid, paid with a card the simulator declines, asking for more than is in stock. */
export type Kind = 'ok' | 'decline' | 'oos';
export const KINDS: readonly Kind[] = ['ok', 'decline', 'oos'];

export function parseMix(text: string): Record<Kind, number> {
  const mix: Record<Kind, number> = { ok: 0, decline: 0, oos: 0 };
  for (const part of text.split(',')) {
    const [name, weight] = part.split('=').map((piece) => piece.trim());
    if (!KINDS.includes(name as Kind) || !Number.isFinite(Number(weight)) || Number(weight) < 0) {
      throw new Error(`--mix takes ok=N,decline=N,oos=N; not "${part}"`);
    }
    mix[name as Kind] = Number(weight);
  }
  if (KINDS.every((kind) => mix[kind] === 0)) throw new Error('--mix: at least one weight must be above 0');
  return mix;
}

/** A kind drawn by the weights of `mix`. */
export function pickKind(mix: Record<Kind, number>): Kind {
  const total = KINDS.reduce((sum, kind) => sum + mix[kind], 0);
  let roll = Math.random() * total;
  for (const kind of KINDS) {
    roll -= mix[kind];
    if (roll < 0) return kind;
  }
  return 'ok';
}

/** How an order of each kind ends, as `STATUS` or `CANCELLED <reason>`. */
export const expectedOutcome: Record<Kind, string> = {
  ok: 'CONFIRMED',
  decline: 'CANCELLED PAYMENT_DECLINED',
  oos: 'CANCELLED OUT_OF_STOCK',
};

export const PLACE_ORDER = `mutation ($lines: [OrderLineInput!]!, $token: String!) {
  placeOrder(lines: $lines, paymentToken: $token) { id status total { amount currency } }
}`;
export const ORDER_UPDATED = `subscription ($id: ID!) { orderUpdated(id: $id) { id status cancelReason } }`;

export interface OrderState {
  id: string;
  status: 'PENDING' | 'CONFIRMED' | 'CANCELLED';
  cancelReason: string | null;
}

/** One graphql-transport-ws connection per shopper, carrying the subscriptions of all their orders. */
export class Subscriptions {
  readonly #socket: WebSocket;
  readonly #handlers = new Map<string, (message: { type: string; payload?: any }) => void>();
  #next = 0;

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.on('message', (raw) => {
      const message = JSON.parse(String(raw)) as { id?: string; type: string; payload?: unknown };
      if (message.type === 'ping') socket.send(JSON.stringify({ type: 'pong' }));
      if (message.id) this.#handlers.get(message.id)?.(message);
    });
  }

  static async open(baseUrl: string, token: string): Promise<Subscriptions> {
    const socket = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}/graphql`, 'graphql-transport-ws');
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('error', reject);
    });
    const acked = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no connection_ack')), 10_000);
      socket.on('message', (raw) => {
        const type = (JSON.parse(String(raw)) as { type: string }).type;
        if (type === 'connection_ack') {
          clearTimeout(timer);
          resolve();
        } else if (type === 'connection_error') {
          clearTimeout(timer);
          reject(new Error('connection_error'));
        }
      });
      socket.once('close', () => reject(new Error('socket closed')));
    });
    socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } }));
    await acked;
    return new Subscriptions(socket);
  }

  /** Follows an order until CONFIRMED or CANCELLED; rejects on an error or after `timeoutMs`. */
  untilSettled(orderId: string, timeoutMs: number): Promise<OrderState> {
    const id = String(++this.#next);
    return new Promise<OrderState>((resolve, reject) => {
      const done = (settle: () => void, complete: boolean) => {
        clearTimeout(timer);
        this.#handlers.delete(id);
        if (complete && this.#socket.readyState === WebSocket.OPEN) this.#socket.send(JSON.stringify({ id, type: 'complete' }));
        settle();
      };
      const timer = setTimeout(
        () => done(() => reject(Object.assign(new Error('not settled in time'), { code: 'UNSETTLED' })), true),
        timeoutMs,
      );
      this.#handlers.set(id, (message) => {
        if (message.type === 'next') {
          const order = message.payload?.data?.orderUpdated as OrderState | undefined;
          if (message.payload?.errors) {
            const code = message.payload.errors[0]?.extensions?.code ?? 'SUBSCRIPTION_ERROR';
            done(() => reject(Object.assign(new Error(code), { code })), true);
          } else if (order && order.status !== 'PENDING') {
            done(() => resolve(order), order.status !== 'CANCELLED');
          }
        } else if (message.type === 'error') {
          const code = message.payload?.[0]?.extensions?.code ?? 'SUBSCRIPTION_ERROR';
          done(() => reject(Object.assign(new Error(code), { code })), false);
        } else if (message.type === 'complete') {
          done(() => reject(Object.assign(new Error('completed before settling'), { code: 'COMPLETED_EARLY' })), false);
        }
      });
      this.#socket.send(JSON.stringify({ id, type: 'subscribe', payload: { query: ORDER_UPDATED, variables: { id: orderId } } }));
    });
  }

  close(): void {
    this.#socket.close();
  }
}
