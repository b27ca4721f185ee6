// Dead letters: a message that breaks its contract (poison), or that failed
// on its last delivery, is stored on the DLQ stream with its payload, its
// headers and why, then terminated. `npm run dlq` lists and replays them.
import { headers as natsHeaders, type JetStreamClient, type JsMsg } from 'nats';
import { deadLetterSubject } from '../../../subjects/index.ts';

/** Headers a dead letter carries beside the original payload and headers. */
export const DeadLetterHeaders = {
  error: 'Shop-Dlq-Error',
  subject: 'Shop-Dlq-Subject',
  stream: 'Shop-Dlq-Stream',
  sequence: 'Shop-Dlq-Sequence',
  consumer: 'Shop-Dlq-Consumer',
  deliveries: 'Shop-Dlq-Deliveries',
} as const;

export type DeadLetterKind = 'poison' | 'failed';

/**
 * Stores `msg` (of `stream`, taken by `consumer`) on the DLQ stream with its
 * error, then terminates it. Throws, leaving `msg` unsettled, when the dead
 * letter could not be stored.
 */
export async function storeDeadLetter(
  js: JetStreamClient,
  msg: JsMsg,
  where: { stream: string; consumer: string },
  error: unknown,
  kind: DeadLetterKind,
): Promise<void> {
  const headers = natsHeaders();
  for (const [key, values] of msg.headers ?? []) {
    if (!key.startsWith('Nats-')) for (const value of values) headers.append(key, value);
  }
  const reason = `${kind}: ${error instanceof Error ? error.message : String(error)}`.replace(/[\r\n]+/g, ' ');
  headers.set(DeadLetterHeaders.error, reason.slice(0, 1000));
  headers.set(DeadLetterHeaders.subject, msg.subject);
  headers.set(DeadLetterHeaders.stream, where.stream);
  headers.set(DeadLetterHeaders.sequence, String(msg.seq));
  headers.set(DeadLetterHeaders.consumer, where.consumer);
  headers.set(DeadLetterHeaders.deliveries, String(msg.info.deliveryCount));
  // The DLQ drops a second copy of the same message (its msgID), should this run twice.
  await js.publish(deadLetterSubject(where.stream, where.consumer), msg.data, { msgID: `${where.consumer}:${msg.seq}`, headers });
  // nats-server 2.9 ignores term() with a reason: call it bare.
  msg.term();
}
