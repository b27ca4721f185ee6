// The BFF, wired: fastify + mercurius over the services' contracts. `build`
// takes a NATS connection and returns the fastify instance unstarted (main
// listens; tests listen on port 0). Closing the instance stops the order feed,
// the RPC client and the live settings; the connection belongs to the caller.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import mercurius from 'mercurius';
import rateLimit from '@fastify/rate-limit';
import { NoSchemaIntrospectionCustomRule, type GraphQLError } from 'graphql';
import { Type, type Static, type TObject } from '@sinclair/typebox';
import { RequestStrategy, type NatsConnection } from 'nats';
import { context as otelContext, propagation, trace, SpanKind, SpanStatusCode } from '@opentelemetry/api';
import {
  LiveRpcClient,
  LiveSettings,
  ServiceSettings,
  followLogLevel,
  type Logger,
  type RpcClientOptions,
} from '../services/kit/index.ts';
import { settings as live, type Order } from '../subjects/index.ts';
import { maxFieldsRule } from './limits.ts';
import { TTL_PATTERN, rateLimitKey, readBearer, registerAuth } from './auth.ts';
import { formatErrors } from './errors.ts';
import { OrderFeed } from './feed.ts';
import { makeLoaders } from './loaders.ts';
import { makeResolvers } from './resolvers.ts';

// The BFF has no database: the kit's settings without DATABASE_URL.
const { DATABASE_URL: _noDatabase, ...natsSettings } = ServiceSettings;

export const BffSettings = {
  ...natsSettings,
  BFF_PORT: Type.Integer({ minimum: 0, maximum: 65_535, default: 4000, description: 'HTTP port of the API and storefront.' }),
  BFF_HOST: Type.String({ minLength: 1, default: 'localhost', description: 'Address to listen on; 0.0.0.0 or :: for all.' }),
  JWT_SECRET: Type.String({ minLength: 32, description: 'HS256 signing secret, at least 32 characters. Required.' }),
  JWT_TTL: Type.String({ pattern: TTL_PATTERN, default: '1h', description: 'Token lifetime: seconds, or 15m, 1h, 7d.' }),
  RATE_LIMIT_MAX: Type.Integer({ minimum: 1, default: 300, description: 'Requests per window per user (or per IP without a token).' }),
  RATE_LIMIT_WINDOW_MS: Type.Integer({ minimum: 100, default: 60_000 }),
  GRAPHQL_DEV: Type.Boolean({ default: false, description: 'Serve GraphiQL at /graphiql and allow introspection.' }),
  GRAPHQL_DEPTH_LIMIT: Type.Integer({ minimum: 2, maximum: 50, default: 8, description: 'Deepest query accepted.' }),
  GRAPHQL_MAX_FIELDS: Type.Integer({ minimum: 10, maximum: 10_000, default: 300, description: 'Most fields (aliases and fragments counted) one operation may select.' }),
};
export type BffConfig = Static<TObject<typeof BffSettings>>;

/** The micro services /health/ready expects to answer $SRV.PING. */
export const REQUIRED_SERVICES = ['customers', 'products', 'orders', 'payments', 'notifications'] as const;

export interface BffDeps {
  nc: NatsConnection;
  log: Logger;
  settings: BffConfig;
  /** Overrides for the RPC client (tests shorten timeouts and breaker windows). */
  client?: Partial<RpcClientOptions>;
}

export interface Bff extends FastifyInstance {
  feed: OrderFeed;
  /** The BFF's live settings (rate limit, RPC client, log level), following the `config` bucket. */
  liveSettings: LiveSettings;
}

const PUBLIC_DIR = join(import.meta.dirname, 'public');
const STATIC_FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
};

export async function build({ nc, log, settings, client: clientOptions }: BffDeps): Promise<Bff> {
  const app = Fastify({ loggerInstance: log }) as unknown as FastifyInstance;
  // What an operator may change while the BFF runs comes from the `config` bucket (subjects/settings.ts).
  const liveSettings = await LiveSettings.open(nc, 'bff', { log, environment: settings, replicas: settings.STREAM_REPLICAS });
  followLogLevel(liveSettings, log);
  const client = new LiveRpcClient(nc, liveSettings, clientOptions);
  const feed = new OrderFeed(
    nc,
    client,
    log,
    (topic: string, order: Order) => void app.graphql.pubsub.publish({ topic, payload: order }),
    { replicas: settings.STREAM_REPLICAS },
  );

  traceRequests(app);
  await registerAuth(app, settings);
  await app.register(rateLimit, {
    global: true,
    // Read per request: a change of bff.rate_limit_max / bff.rate_limit_window_ms applies to the next one.
    max: () => liveSettings.get(live.bff.rateLimitMax),
    timeWindow: () => liveSettings.get(live.bff.rateLimitWindowMs),
    keyGenerator: rateLimitKey,
  });

  await app.register(mercurius, {
    schema: await readFile(join(import.meta.dirname, 'schema.graphql'), 'utf8'),
    resolvers: makeResolvers({ app, client, feed }) as never,
    loaders: makeLoaders(client) as never,
    jit: 1,
    queryDepth: settings.GRAPHQL_DEPTH_LIMIT,
    graphiql: settings.GRAPHQL_DEV,
    validationRules: [
      maxFieldsRule(settings.GRAPHQL_MAX_FIELDS),
      ...(settings.GRAPHQL_DEV ? [] : [NoSchemaIntrospectionCustomRule]),
    ],
    context: (request) => ({ auth: request.auth }),
    subscription: {
      // Browsers cannot set headers on a WebSocket: the token rides in connection_init.
      onConnect: ({ payload }: { payload?: Record<string, unknown> }) => {
        const headers = (payload?.headers ?? payload ?? {}) as Record<string, unknown>;
        const header = headers.authorization ?? headers.Authorization;
        return header === undefined ? {} : { auth: readBearer(app, header) };
      },
      keepAlive: 30_000,
    },
    errorFormatter: (execution) =>
      formatErrors(execution as typeof execution & { errors: readonly GraphQLError[] }, app.log),
  });

  // Health and the storefront: plain JSON errors of their own, not GraphQL ones.
  await app.register(async (scope) => {
    scope.setErrorHandler((error: { statusCode?: number; message: string }, _request, reply) => {
      const status = error.statusCode ?? 500;
      if (status >= 500) scope.log.error({ err: error }, 'request failed');
      void reply.code(status).send({ error: status >= 500 ? 'internal error' : error.message });
    });
    scope.get('/health/live', { config: { rateLimit: false } }, async () => ({ status: 'live' }));
    scope.get('/health/ready', { config: { rateLimit: false } }, async (_request, reply) => {
      const checks = await readiness(nc, feed);
      const ready = checks.nats && checks.orderFeed && Object.values(checks.services).every(Boolean);
      return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', checks });
    });
    const files = await loadStatic();
    for (const [url, { body, type }] of files) {
      scope.get(url, async (_request, reply) =>
        reply
          .type(type)
          .header('cache-control', 'no-cache')
          .header('x-content-type-options', 'nosniff')
          .header(
            'content-security-policy',
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'",
          )
          .send(body),
      );
    }
  });

  app.addHook('onReady', async () => feed.start());
  app.addHook('onClose', async () => {
    await feed.stop();
    client.close();
    await liveSettings.stop();
  });
  return Object.assign(app, { feed, liveSettings });
}

async function readiness(nc: NatsConnection, feed: OrderFeed) {
  const services = Object.fromEntries(REQUIRED_SERVICES.map((name) => [name, false])) as Record<string, boolean>;
  let nats = false;
  try {
    await withTimeout(nc.flush(), 1000);
    nats = !nc.isClosed();
  } catch {
    // reported as nats: false
  }
  if (nats) {
    try {
      const replies = await nc.services
        .client({ strategy: RequestStrategy.JitterTimer, maxWait: 1500, jitter: 200 })
        .ping();
      for await (const identity of replies) if (identity.name in services) services[identity.name] = true;
    } catch {
      // no responders: every service stays false
    }
  }
  return { nats, orderFeed: feed.ready, services };
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('timed out')), ms))),
  ]).finally(() => clearTimeout(timer));
}

async function loadStatic(): Promise<Map<string, { body: Buffer; type: string }>> {
  const files = new Map<string, { body: Buffer; type: string }>();
  for (const [url, { file, type }] of Object.entries(STATIC_FILES)) {
    files.set(url, { body: await readFile(join(PUBLIC_DIR, file)), type });
  }
  return files;
}

/**
 * A server span per GraphQL request, continuing a caller's `traceparent`; the
 * rest of the request runs inside it, so every NATS call it makes is a child.
 */
function traceRequests(app: FastifyInstance): void {
  const tracer = trace.getTracer('shop-bff');
  const spans = new WeakMap<object, ReturnType<typeof tracer.startSpan>>();
  app.addHook('onRequest', (request, _reply, done) => {
    if (!request.url.startsWith('/graphql')) return done();
    const parent = propagation.extract(otelContext.active(), request.headers);
    const span = tracer.startSpan(`${request.method} /graphql`, { kind: SpanKind.SERVER }, parent);
    spans.set(request, span);
    otelContext.with(trace.setSpan(parent, span), done);
  });
  app.addHook('onResponse', async (request, reply) => {
    const span = spans.get(request);
    if (!span) return;
    span.setAttribute('http.response.status_code', reply.statusCode);
    if (reply.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
    span.end();
  });
}
