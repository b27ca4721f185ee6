// Publishes events straight into JetStream the way a service's outbox relay
// does (test/messaging.ts), in the shape these tests read: {envelope, ack}.
import { randomUUID } from 'node:crypto';
import type { JetStreamClient, PubAck } from 'nats';
import type { DataOf, Envelope, EventContract } from '../../../subjects/index.ts';
import { publishEvent as publishShared } from '../../../test/messaging.ts';

export async function publishEvent<C extends EventContract>(
  js: JetStreamClient,
  contract: C,
  data: DataOf<C>,
  options: { id?: string; msgID?: string } = {},
): Promise<{ envelope: Envelope<DataOf<C>>; ack: PubAck }> {
  const { envelope, ...ack } = await publishShared(js, contract, data, { id: options.id, msgId: options.msgID });
  return { envelope, ack };
}

/** Any payload, for events that break their contract. */
export function publishRaw(js: JetStreamClient, subject: string, payload: unknown, msgID: string = randomUUID()): Promise<PubAck> {
  return js.publish(subject, Buffer.from(JSON.stringify(payload)), { msgID });
}
