// The BFF, wired: fastify + mercurius over the services' contracts, laid out
// as fastify/demo lays out an app: plugins/ set up what every route shares,
// routes/ serve the plain HTTP pages, each in a file of its own, registered
// below in the order they depend on each other. `build` takes a NATS
// connection and returns the fastify instance unstarted (main.ts listens;
// tests listen on port 0 or inject). Closing the instance stops the order
// feed, the RPC client and the live settings; the connection belongs to the
// caller. docs/bff.md walks through it.
import Fastify, { LogController, type FastifyInstance } from 'fastify';
import type { NatsConnection } from 'nats';
import { traceHttpRoutes, tracedHttpServer, type Logger, type ProcessMetrics, type RpcClientOptions } from '../services/kit/index.ts';
import authPlugin from './plugins/auth.ts';
import graphqlPlugin from './plugins/graphql.ts';
import httpErrorsPlugin from './plugins/http-errors.ts';
import metricsPlugin from './plugins/metrics.ts';
import rateLimitPlugin from './plugins/rate-limit.ts';
import shopPlugin from './plugins/shop.ts';
import devMailRoutes from './routes/dev-mail.ts';
import healthRoutes from './routes/health.ts';
import storefrontRoutes from './routes/storefront.ts';
import type { BffConfig } from './settings.ts';

export { BffSettings, type BffConfig } from './settings.ts';

export interface BffDeps {
  nc: NatsConnection;
  log: Logger;
  settings: BffConfig;
  /** Overrides for the RPC client (tests shorten timeouts and breaker windows). */
  client?: Partial<RpcClientOptions>;
  /** Where HTTP requests are counted (main.ts serves them on the operations port); none in tests. */
  metrics?: ProcessMetrics;
}

/** The BFF's fastify instance; `feed` and `liveSettings` (plugins/shop.ts) are there for tests and main. */
export type Bff = FastifyInstance;

export async function build({ nc, log, settings, client, metrics }: BffDeps): Promise<Bff> {
  const app = Fastify({
    loggerInstance: log,
    // fastify's two lines per request ("incoming request", "request completed") only at debug or
    // trace: at info they cost a catalog page more CPU than its GraphQL (docs/bff.md). Errors are
    // logged either way (plugins/http-errors.ts, errors.ts); the level is live (followLogLevel).
    logController: new LogController({ disableRequestLogging: () => !log.isLevelEnabled('debug') }),
    // Each request runs in a trace (kit/tracing.ts), named by its route (`POST /graphql`).
    serverFactory: tracedHttpServer,
  }) as unknown as FastifyInstance;
  traceHttpRoutes(app);

  // What every route shares, each plugin after those it uses.
  await app.register(metricsPlugin, { metrics });
  await app.register(httpErrorsPlugin);
  await app.register(shopPlugin, { nc, log, settings, client, metrics });
  await app.register(authPlugin, settings);
  await app.register(rateLimitPlugin);
  await app.register(graphqlPlugin, settings);

  // The routes besides /graphql.
  await app.register(healthRoutes);
  await app.register(storefrontRoutes);
  if (settings.DEV_MAIL_DIR) await app.register(devMailRoutes, { folder: settings.DEV_MAIL_DIR });
  return app;
}
