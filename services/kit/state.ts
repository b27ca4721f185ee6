// The KV buckets of current state (read models, subjects' state contracts):
// the owning service writes them through its outbox (writeStates), readers
// follow them. Whoever starts first creates the bucket, with one history
// entry per key: a reader wants the newest state, not the past.
import type { KV, NatsConnection } from 'nats';
import type { StateContract } from '../../subjects/index.ts';

/** Opens the bucket of `contract`, creating it when absent. */
export function openStateBucket(nc: NatsConnection, contract: StateContract, replicas = 1): Promise<KV> {
  return nc.jetstream().views.kv(contract.bucket, { history: 1, replicas, description: contract.description });
}

/** The stream behind a bucket. */
export function stateStream(contract: StateContract): string {
  return `KV_${contract.bucket}`;
}
