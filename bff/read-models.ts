// The BFF's read models: the catalog and customers' public profiles, each a
// replica in memory of its state bucket (replica.ts). Resolvers and loaders
// answer product and customer fields from them and ask the owning service
// only for what a replica does not hold (not caught up yet, or an item
// written a moment ago through another instance): the service stays the
// authority, the replica saves it the reads.
import type { NatsConnection } from 'nats';
import { customers, products, type CatalogPosition, type Customer, type Product } from '../subjects/index.ts';
import type { Logger, ProcessMetrics } from '../services/kit/index.ts';
import { Replica, type Versioned } from './replica.ts';

/** The catalog's order, as products.list pages it: by name, then id (PostgreSQL's C collation compares the same way). */
export function compareCatalog(a: CatalogPosition, b: CatalogPosition): number {
  if (a.name !== b.name) return a.name < b.name ? -1 : 1;
  if (a.id !== b.id) return a.id < b.id ? -1 : 1;
  return 0;
}

export interface ReadModels {
  catalog: Replica<Product, CatalogPosition>;
  profiles: Replica<Customer>;
}

export function createReadModels(nc: NatsConnection, log: Logger, replicas: number, metrics?: ProcessMetrics): ReadModels {
  const lag = (bucket: string) => (metrics ? (seconds: number) => metrics.readModelApplied(bucket, seconds) : undefined);
  return {
    catalog: new Replica<Product, CatalogPosition>(nc, products.catalog, {
      log,
      replicas,
      compare: compareCatalog,
      onLag: lag(products.catalog.bucket),
    }),
    profiles: new Replica<Customer>(nc, customers.profiles, { log, replicas, onLag: lag(customers.profiles.bucket) }),
  };
}

/** What every replica has, whatever it holds: for starting, stopping and readiness. */
export type AnyReplica = Pick<Replica<Versioned>, 'contract' | 'ready' | 'size' | 'start' | 'stop' | 'caughtUp'>;

export function allReplicas(models: ReadModels): AnyReplica[] {
  return [models.catalog, models.profiles];
}
