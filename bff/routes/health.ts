// Probes: /health/live answers while the process runs; /health/ready once
// NATS answers, the order feed reads, the read models have caught up with
// their buckets, and every service of the registry
// (subjects/services.ts) answers a $SRV.PING. Never rate limited.
import type { FastifyInstance } from 'fastify';
import { RequestStrategy, type NatsConnection } from 'nats';
import { SERVICES } from '../../subjects/index.ts';
import type { OrderFeed } from '../feed.ts';
import { allReplicas, type ReadModels } from '../read-models.ts';

export default async function healthRoutes(app: FastifyInstance): Promise<void> {
  app.get('/health/live', { config: { rateLimit: false } }, async () => ({ status: 'live' }));

  app.get('/health/ready', { config: { rateLimit: false } }, async (_request, reply) => {
    const checks = await readiness(app.nats, app.feed, app.readModels);
    const ready =
      checks.nats && checks.orderFeed && Object.values(checks.readModels).every(Boolean) && Object.values(checks.services).every(Boolean);
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', checks });
  });
}

async function readiness(nc: NatsConnection, feed: OrderFeed, models: ReadModels) {
  const services: Record<string, boolean> = Object.fromEntries(SERVICES.map((name) => [name, false]));
  let nats = false;
  try {
    await withTimeout(nc.flush(), 1000);
    nats = !nc.isClosed();
  } catch {
    // reported as nats: false
  }
  if (nats) {
    try {
      const replies = await nc.services.client({ strategy: RequestStrategy.JitterTimer, maxWait: 1500, jitter: 200 }).ping();
      for await (const identity of replies) if (identity.name in services) services[identity.name] = true;
    } catch {
      // no responders: every service stays false
    }
  }
  const readModels = Object.fromEntries(allReplicas(models).map((replica) => [replica.contract.bucket, replica.ready]));
  return { nats, orderFeed: feed.ready, readModels, services };
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('timed out')), ms)))]).finally(
    () => clearTimeout(timer),
  );
}
