// Test helpers of the payment service: put events into JetStream the way an
// outbox relay does (envelope + Nats-Msg-Id), read streams back, and look
// into the simulator's books.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import type { JetStreamClient, JetStreamManager, PubAck } from 'nats';
import type { inventory, orders, DataOf, Envelope, EventContract } from '../../../subjects/index.ts';
import { waitFor } from '../../../test/harness.ts';
import { publishEvent as publishShared } from '../../../test/messaging.ts';

export const CHARGE_CONSUMER = 'payments-charge-reserved';
export const REFUND_CONSUMER = 'payments-refund-cancelled';

/** Publishes `data` as an event of `contract` (test/messaging.ts); `envelopeId` repeats an event, `msgId` overrides the Nats-Msg-Id. */
export async function publishEvent<C extends EventContract>(
  js: JetStreamClient,
  contract: C,
  data: DataOf<C>,
  options: { envelopeId?: string; msgId?: string } = {},
): Promise<{ envelope: Envelope<DataOf<C>>; ack: PubAck }> {
  const { envelope, ...ack } = await publishShared(js, contract, data, { id: options.envelopeId, msgId: options.msgId });
  return { envelope, ack };
}

/** Publishes anything on `subject` (for poison tests). */
export async function publishRaw(js: JetStreamClient, subject: string, payload: unknown): Promise<PubAck> {
  return js.publish(subject, JSON.stringify(payload), { msgID: randomUUID() });
}

export function reservedData(
  orderId: string,
  token: string,
  amount: number,
  customerId: string = randomUUID(),
): DataOf<typeof inventory.reserved> {
  return {
    orderId,
    customerId,
    lines: [{ productId: randomUUID(), quantity: 2 }],
    payment: { token, amount: { amount, currency: 'EUR' } },
  };
}

export function cancelledData(
  orderId: string,
  customerId: string = randomUUID(),
  previousStatus: 'PENDING' | 'CONFIRMED' = 'CONFIRMED',
): DataOf<typeof orders.cancelled> {
  return {
    orderId,
    customerId,
    reasonCode: previousStatus === 'PENDING' ? 'DEADLINE_EXCEEDED' : 'CUSTOMER_CANCELLED',
    reason: 'test cancellation',
    previousStatus,
    total: { amount: 1, currency: 'EUR' },
  };
}

/** Waits until `durable` has settled (acked, or given up on) every message up to `seq`. */
export async function waitSettled(jsm: JetStreamManager, stream: string, durable: string, seq: number): Promise<void> {
  await waitFor(
    async () => {
      const info = await jsm.consumers.info(stream, durable);
      return info.ack_floor.stream_seq >= seq && info.num_ack_pending === 0;
    },
    { what: `${durable} to settle up to ${stream} #${seq}` },
  );
}

export interface StoredEvent {
  subject: string;
  seq: number;
  envelope: Envelope<Record<string, unknown>>;
  headers: Record<string, string>;
}

/** Every message in `stream`, oldest first (test streams are small). */
export async function readStream(jsm: JetStreamManager, stream: string): Promise<StoredEvent[]> {
  const info = await jsm.streams.info(stream);
  const events: StoredEvent[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const msg = await jsm.streams.getMessage(stream, { seq });
    const headers: Record<string, string> = {};
    for (const [key, values] of msg.header ?? []) headers[key] = values.join(',');
    events.push({ subject: msg.subject, seq: msg.seq, envelope: msg.json(), headers });
  }
  return events;
}

/** Payment events about one order, as `subject` names. */
export async function paymentEventsFor(jsm: JetStreamManager, orderId: string): Promise<StoredEvent[]> {
  return (await readStream(jsm, 'PAYMENTS')).filter((event) => event.envelope.data.orderId === orderId);
}

export interface LedgerEntry {
  idempotency_key: string;
  operation: 'charge' | 'refund';
  amount: number;
  outcome: string;
  reason: string | null;
  reference: string | null;
  charge_reference: string | null;
}

/** The simulator's books, seen from outside (as a test may look at a provider's dashboard). */
export class SimulatorBooks {
  readonly pool: pg.Pool;
  constructor(databaseUrl: string) {
    this.pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  }
  async entries(idempotencyKey: string): Promise<LedgerEntry[]> {
    const { rows } = await this.pool.query<LedgerEntry>(
      `SELECT idempotency_key, operation, amount::int AS amount, outcome, reason, reference, charge_reference
         FROM simulator_ledger WHERE idempotency_key = $1`,
      [idempotencyKey],
    );
    return rows;
  }
  /** Ledger rows about an order: its charge and its refund. */
  async forOrder(orderId: string): Promise<LedgerEntry[]> {
    return [...(await this.entries(orderId)), ...(await this.entries(`refund:${orderId}`))];
  }
  /** How often the provider was asked with this key, failed calls included. */
  async calls(idempotencyKey: string): Promise<number> {
    const { rows } = await this.pool.query<{ calls: number }>('SELECT calls FROM simulator_calls WHERE idempotency_key = $1', [
      idempotencyKey,
    ]);
    return rows[0]?.calls ?? 0;
  }
  close(): Promise<void> {
    return this.pool.end();
  }
}
