// The operations port of a process: a small plain HTTP server, apart from any
// API port, that an orchestrator and Prometheus can reach on every instance.
//
//   GET /metrics       Prometheus text format (metrics.ts)
//   GET /health/live   200 while the process runs and its event loop answers
//   GET /health/ready  200 when every check passes, else 503; the body names
//                      each check: {"status":"ready","checks":{"nats":"ok",...}}
//
// OPS_PORT sets the port (0: any free port, logged); unset, there is no
// operations server (the tests of single parts run without one).
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { JetStreamManager, NatsConnection } from 'nats';
import { allOperations } from '../../subjects/index.ts';
import type { Logger } from './log.ts';
import type { ProcessMetrics } from './metrics.ts';
import type { Pool } from './db.ts';

/** A readiness check: resolves when fine, throws (or times out) when not. */
export type ReadinessCheck = () => Promise<void>;

export interface OpsServerOptions {
  port: number;
  host: string;
  metrics: ProcessMetrics;
  checks: Record<string, ReadinessCheck>;
  log: Logger;
  /** Bound on each readiness check. */
  checkTimeoutMs?: number;
}

export interface OpsServer {
  readonly port: number;
  /** From now on /health/ready answers 503 (a graceful stop has begun). */
  draining(): void;
  close(): Promise<void>;
}

export async function startOpsServer(options: OpsServerOptions): Promise<OpsServer> {
  const timeoutMs = options.checkTimeoutMs ?? 2000;
  let stopping = false;

  const ready = async (): Promise<{ ok: boolean; checks: Record<string, string> }> => {
    const names = Object.keys(options.checks);
    const results = await Promise.all(
      names.map((name) =>
        withTimeout(options.checks[name]!(), timeoutMs).then(
          () => 'ok',
          (error: unknown) => (error instanceof Error ? error.message : String(error)) || 'failed',
        ),
      ),
    );
    const checks = Object.fromEntries(names.map((name, index) => [name, results[index]!]));
    if (stopping) checks.stopping = 'the process is stopping';
    return { ok: !stopping && results.every((result) => result === 'ok'), checks };
  };

  const handle = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const path = (request.url ?? '/').split('?')[0];
    if (request.method !== 'GET' && request.method !== 'HEAD') return send(response, 405, { error: 'method not allowed' });
    if (path === '/metrics') {
      const body = await options.metrics.text();
      response.writeHead(200, { 'content-type': options.metrics.contentType, 'cache-control': 'no-store' });
      response.end(body);
      return;
    }
    if (path === '/health/live') return send(response, 200, { status: 'live' });
    if (path === '/health/ready') {
      const { ok, checks } = await ready();
      if (!ok) options.log.info({ checks }, 'not ready');
      return send(response, ok ? 200 : 503, { status: ok ? 'ready' : 'not ready', checks });
    }
    return send(response, 404, { error: 'not found' });
  };

  const server = createServer((request, response) => {
    handle(request, response).catch((error: unknown) => {
      options.log.error({ err: error, url: request.url }, 'operations request failed');
      if (!response.headersSent) send(response, 500, { error: 'internal error' });
      else response.destroy();
    });
  });
  // Probes come every few seconds: do not hold idle sockets open past a stop.
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  options.log.info({ port, host: options.host }, 'operations server listening (/metrics, /health/live, /health/ready)');

  return {
    port,
    draining() {
      stopping = true;
    },
    close() {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function send(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
  response.end(JSON.stringify(body));
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------
// The usual checks

/** NATS: connected, and the server answers a ping. */
export function natsCheck(nc: NatsConnection): ReadinessCheck {
  let connected = true;
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === 'disconnect') connected = false;
      else if (status.type === 'reconnect') connected = true;
    }
  })().catch(() => {});
  return async () => {
    if (nc.isClosed()) throw new Error('connection closed');
    if (!connected) throw new Error('disconnected; reconnecting');
    await nc.flush();
  };
}

/** The service's database answers a query. */
export function databaseCheck(pool: Pool): ReadinessCheck {
  return async () => {
    await pool.query('SELECT 1');
  };
}

/** Every durable consumer of the service exists on the server and this instance is pulling from it. */
export function consumersCheck(
  jsm: JetStreamManager,
  consumers: readonly { readonly durable: string; readonly stream: string; readonly attached: boolean }[],
): ReadinessCheck {
  return async () => {
    const detached = consumers.filter((consumer) => !consumer.attached).map((consumer) => consumer.durable);
    if (detached.length > 0) throw new Error(`not pulling: ${detached.join(', ')}`);
    await Promise.all(consumers.map((consumer) => jsm.consumers.info(consumer.stream, consumer.durable)));
  };
}

// ---------------------------------------------------------------------------
// A service's operations: its scrape-time gauges, and the server when OPS_PORT is set

export interface ServiceOpsParts {
  name: string;
  nc: NatsConnection;
  jsm: JetStreamManager;
  pool: Pool;
  outbox: { backlog(): Promise<number> };
  consumers: readonly { readonly durable: string; readonly stream: string; readonly attached: boolean }[];
  client: { breakerState(subject: string): 'closed' | 'open' | 'halfOpen' };
  metrics: ProcessMetrics;
  log: Logger;
}

const BREAKER_VALUE = { closed: 0, halfOpen: 1, open: 2 } as const;

/** Registers the service's gauges and, when `settings.OPS_PORT` is set, serves them with its health. */
export async function startServiceOps(
  parts: ServiceOpsParts,
  settings: { OPS_PORT?: number | undefined; OPS_HOST?: string | undefined },
): Promise<OpsServer | undefined> {
  const { metrics, nc, jsm } = parts;
  const remote = allOperations.filter((operation) => operation.service !== parts.name).map((operation) => operation.subject);
  metrics.sampled('shop_outbox_backlog', 'Outbox rows waiting to be published.', [], async () => [
    { value: await withTimeout(parts.outbox.backlog(), 2000) },
  ]);
  const consumerInfos = () =>
    Promise.all(
      parts.consumers.map(async (consumer) => ({
        consumer,
        info: await withTimeout(jsm.consumers.info(consumer.stream, consumer.durable), 2000),
      })),
    );
  metrics.sampled(
    'shop_consumer_pending',
    'Events in the stream not yet delivered to the durable consumer (its lag).',
    ['consumer', 'stream'],
    async () =>
      (await consumerInfos()).map(({ consumer, info }) => ({
        labels: { consumer: consumer.durable, stream: consumer.stream },
        value: info.num_pending,
      })),
  );
  metrics.sampled(
    'shop_consumer_ack_pending',
    'Events delivered to the durable consumer and not yet acknowledged.',
    ['consumer', 'stream'],
    async () =>
      (await consumerInfos()).map(({ consumer, info }) => ({
        labels: { consumer: consumer.durable, stream: consumer.stream },
        value: info.num_ack_pending,
      })),
  );
  metrics.sampled(
    'shop_rpc_breaker_state',
    'Circuit breaker of calls to another service: 0 closed, 1 half-open, 2 open.',
    ['subject'],
    () => remote.map((subject) => ({ labels: { subject }, value: BREAKER_VALUE[parts.client.breakerState(subject)] })),
  );
  return startProcessOps(
    { nc, metrics, log: parts.log, checks: { database: databaseCheck(parts.pool), consumers: consumersCheck(jsm, parts.consumers) } },
    settings,
  );
}

/**
 * Any process (a service, the BFF): the NATS gauge and, when `settings.OPS_PORT`
 * is set, the operations server, ready when NATS and every check of `checks` pass.
 */
export async function startProcessOps(
  parts: { nc: NatsConnection; metrics: ProcessMetrics; log: Logger; checks: Record<string, ReadinessCheck> },
  settings: { OPS_PORT?: number | undefined; OPS_HOST?: string | undefined },
): Promise<OpsServer | undefined> {
  const nats = natsCheck(parts.nc);
  parts.metrics.sampled('shop_nats_connected', '1 while the NATS connection is up.', [], async () => [
    {
      value: await withTimeout(nats(), 2000).then(
        () => 1,
        () => 0,
      ),
    },
  ]);
  if (settings.OPS_PORT === undefined) return undefined;
  return startOpsServer({
    port: settings.OPS_PORT,
    host: settings.OPS_HOST ?? '127.0.0.1',
    metrics: parts.metrics,
    log: parts.log,
    checks: { nats, ...parts.checks },
  });
}
