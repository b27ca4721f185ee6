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
