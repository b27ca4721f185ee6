// Messaging helpers shared by the tests of every service: raw and typed
// requests, publishing events as another service's outbox would, and reading
// what landed in a stream.
import { randomUUID } from 'node:crypto';
import { headers as natsHeaders, type JetStreamClient, type JetStreamManager, type NatsConnection, type PubAck } from 'nats';
import { ERROR_CODE_HEADER, type DataOf, type Envelope, type EventContract } from '../subjects/index.ts';
import { RpcClient, ServiceError, type Queryable } from '../services/kit/index.ts';

/** Sends raw bytes to a subject, as a careless client might; returns our error code (if any) and the body. */
export async function rawRequest(
  nc: NatsConnection,
  subject: string,
  payload: string,
): Promise<{ code: string | undefined; status: string | undefined; body: unknown }> {
  const reply = await nc.request(subject, Buffer.from(payload), { timeout: 5000 });
  let body: unknown;
  try {
    body = JSON.parse(reply.string());
  } catch {
    body = reply.string();
  }
  return {
    code: reply.headers?.get(ERROR_CODE_HEADER) || undefined,
    status: reply.headers?.get('Nats-Service-Error-Code') || undefined,
    body,
  };
}

export function typedClient(nc: NatsConnection): RpcClient {
  return new RpcClient(nc, { timeoutMs: 5000 });
}

/** For assert.rejects: the error is a ServiceError with `code`. */
export function withCode(code: string) {
  return (error: unknown) => error instanceof ServiceError && error.code === code;
}

/**
 * Publishes an event the way an outbox relay does: the envelope
 * {id, type, occurredAt, data} and `Nats-Msg-Id` = envelope id, unless
 * `msgId` says otherwise (to get a redelivery past JetStream's duplicate window).
 */
export async function publishEvent<C extends EventContract>(
  js: JetStreamClient,
  contract: C,
  data: DataOf<C>,
  options: { id?: string; msgId?: string } = {},
): Promise<PubAck & { envelope: Envelope<DataOf<C>> }> {
  contract.data.assert(data, `${contract.subject} test event`);
  const envelope: Envelope<DataOf<C>> = {
    id: options.id ?? randomUUID(),
    type: contract.subject,
    occurredAt: new Date().toISOString(),
    data,
  };
  const ack = await js.publish(contract.subject, Buffer.from(JSON.stringify(envelope)), {
    msgID: options.msgId ?? envelope.id,
    headers: natsHeaders(),
  });
  return Object.assign(ack, { envelope });
}

/** Resolves once the durable consumer has acknowledged everything up to `seq` of its stream. */
export async function consumedUpTo(jsm: JetStreamManager, stream: string, durable: string, seq: number): Promise<boolean> {
  const info = await jsm.consumers.info(stream, durable);
  return info.ack_floor.stream_seq >= seq;
}

/** How many events of each subject a stream holds. */
export async function countBySubject(jsm: JetStreamManager, stream: string): Promise<Record<string, number>> {
  const info = await jsm.streams.info(stream, { subjects_filter: '>' });
  return info.state.subjects ?? {};
}

/** Every event stored in `stream` (small test streams only). */
export async function readEvents(jsm: JetStreamManager, stream: string): Promise<Envelope<Record<string, unknown>>[]> {
  const { state } = await jsm.streams.info(stream);
  const events: Envelope<Record<string, unknown>>[] = [];
  for (let seq = state.first_seq; seq <= state.last_seq && state.messages > 0; seq++) {
    const stored = await jsm.streams.getMessage(stream, { seq });
    events.push(stored.json<Envelope<Record<string, unknown>>>());
  }
  return events;
}

/** Events of one order, optionally of one type. */
export function eventsOf(events: readonly Envelope<Record<string, unknown>>[], orderId: string, type?: string) {
  return events.filter((event) => event.data.orderId === orderId && (type === undefined || event.type === type));
}

/** A fingerprint of a whole table, to show that a refused request changed nothing. */
export async function tableFingerprint(db: Queryable, table: string): Promise<string> {
  const { rows } = await db.query<{ fingerprint: string }>(
    `SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') AS fingerprint FROM ${table} t`,
  );
  return rows[0]!.fingerprint;
}
