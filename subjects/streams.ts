// The JetStream streams, one per domain plus the dead-letter stream. The kit
// creates or updates them at start; replicas come from configuration (1 for a
// single server, 3 in the compose cluster).
export interface StreamDefinition {
  readonly name: string;
  readonly subjects: readonly string[];
  readonly description: string;
  /** Limits retention: events stay for every consumer (and for replay) until they age out. */
  readonly maxAgeSeconds: number;
  readonly maxBytes: number;
  /** Window in which a repeated `Nats-Msg-Id` is dropped as a duplicate. */
  readonly duplicateWindowSeconds: number;
}

const DAY = 24 * 60 * 60;
const GiB = 1024 ** 3;

function domainStream(name: string, domain: string, description: string): StreamDefinition {
  return {
    name,
    subjects: [`${domain}.events.>`],
    description,
    maxAgeSeconds: 7 * DAY,
    maxBytes: 1 * GiB,
    duplicateWindowSeconds: 2 * 60,
  };
}

export const streams = {
  CUSTOMERS: domainStream('CUSTOMERS', 'customers', 'Customer account events'),
  ORDERS: domainStream('ORDERS', 'orders', 'Order lifecycle events'),
  INVENTORY: domainStream('INVENTORY', 'inventory', 'Stock reservation events'),
  PRODUCTS: domainStream('PRODUCTS', 'products', 'Catalog events: products updated and archived'),
  PAYMENTS: domainStream('PAYMENTS', 'payments', 'Payment events'),
  SHIPMENTS: domainStream('SHIPMENTS', 'shipments', 'Shipment events'),
  DLQ: {
    name: 'DLQ',
    subjects: ['dlq.>'],
    description: 'Dead letters: events a consumer gave up on, with the error, on dlq.<stream>.<consumer>',
    maxAgeSeconds: 30 * DAY,
    maxBytes: 1 * GiB,
    duplicateWindowSeconds: 2 * 60,
  },
} as const satisfies Record<string, StreamDefinition>;

/** Subject a dead letter of `consumer` (reading `stream`) is stored under. */
export function deadLetterSubject(stream: string, consumer: string): string {
  return `dlq.${stream}.${consumer}`;
}

/** Slack for the clocks of the NATS and PostgreSQL servers disagreeing (an inbox row is stamped by PostgreSQL). */
const CLOCK_SLACK_SECONDS = 60 * 60;

/**
 * How long after a consumer applied an event of `stream` a copy of it can
 * still reach the consumer, so how long its inbox must remember the id
 * (docs/decisions.md, "How long an inbox remembers"). A copy can come:
 *   - from the stream, while the message is in it: until it ages out,
 *     `maxAgeSeconds` after it was stored, which was before it was applied
 *     (max_bytes only ever removes messages sooner); a redelivery after a
 *     lost ack, a durable consumer deleted and created again (it delivers
 *     everything the stream holds) are all inside this;
 *   - from a dead letter replayed (npm run dlq -- replay): another consumer
 *     of the same subject gave up on it, at most `maxAgeSeconds` after it
 *     was stored, and the DLQ stream keeps the letter for its own max age;
 *   - from an outbox publishing again after its database failed between the
 *     publish and the delete: on the relay's next pass once the database
 *     answers, dropped inside the duplicate window, after a longer outage a
 *     new message; covered while that outage is shorter than the slack the
 *     DLQ's max age leaves.
 */
export function redeliveryHorizonSeconds(stream: StreamDefinition): number {
  return stream.maxAgeSeconds + streams.DLQ.maxAgeSeconds + CLOCK_SLACK_SECONDS;
}
