// Publishes events straight into JetStream the way a service's outbox relay
// does: the one envelope {id, type, occurredAt, data}, `Nats-Msg-Id` = id.
import { randomUUID } from 'node:crypto';
import type { JetStreamClient, PubAck } from 'nats';
import type { DataOf, Envelope, EventContract } from '../../../subjects/index.ts';

export async function publishEvent<C extends EventContract>(
  js: JetStreamClient,
  contract: C,
  data: DataOf<C>,
  options: { id?: string; msgID?: string } = {},
): Promise<{ envelope: Envelope<DataOf<C>>; ack: PubAck }> {
  const envelope = { id: options.id ?? randomUUID(), type: contract.subject, occurredAt: new Date().toISOString(), data };
  const ack = await publishRaw(js, contract.subject, envelope, options.msgID ?? envelope.id);
  return { envelope, ack };
}

/** Any payload, for events that break their contract. */
export function publishRaw(js: JetStreamClient, subject: string, payload: unknown, msgID: string = randomUUID()): Promise<PubAck> {
  return js.publish(subject, Buffer.from(JSON.stringify(payload)), { msgID });
}
