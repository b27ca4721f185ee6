// The whole shop for BFF tests: a nats-server of its own, the services
// in this process on fresh databases, an SMTP sink for the notification
// service, and the BFF listening on a random port. Plus small clients:
// GraphQL over HTTP (fetch) and over WebSocket (ws, graphql-transport-ws).
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';
import WebSocket from 'ws';
import type { TProperties } from '@sinclair/typebox';
import { connect, type NatsConnection } from 'nats';
import { createLogger, loadConfig, type RunningService, type ServiceDefinition } from '../../services/kit/index.ts';
import { CustomerSettings, customerService } from '../../services/customer/app.ts';
import { ProductSettings, productService } from '../../services/product/app.ts';
import { OrderSettings, orderService } from '../../services/order/app.ts';
import { PaymentSettings, paymentService } from '../../services/payment/app.ts';
import { NotificationSettings, notificationService } from '../../services/notification/app.ts';
import { ShippingSettings, shippingService } from '../../services/shipping/app.ts';
import { dropTestDatabases, startNats, startTestService, waitFor, type TestNats } from '../../test/harness.ts';
import type { ServiceName } from '../../subjects/index.ts';
import { BffSettings, build, type Bff } from '../app.ts';
import { allReplicas } from '../read-models.ts';

export const ADMIN_EMAIL = 'admin@shop.test';
export const JWT_SECRET = 'test-secret-test-secret-test-secret-0123';

export type { ServiceName };

interface ServiceSpec {
  definition: ServiceDefinition<never>;
  settings: TProperties;
  env: Record<string, string>;
}

export interface Stack {
  nats: TestNats;
  bff: Bff;
  url: string;
  running: Map<ServiceName, RunningService & { databaseUrl: string }>;
  /** Graceful stop of one service (its database is kept for startService). */
  stopService(name: ServiceName): Promise<void>;
  /** Starts a stopped service again on the database it had. */
  startService(name: ServiceName): Promise<void>;
  /** Another BFF on the same services, with other settings (e.g. a tiny rate limit). */
  startBff(env?: Record<string, string>): Promise<{ bff: Bff; url: string; nc: NatsConnection }>;
  close(): Promise<void>;
}

export async function startStack(options: { bffEnv?: Record<string, string> } = {}): Promise<Stack> {
  const nats = await startNats();
  const smtp = await startSmtpSink();
  const specs: Record<ServiceName, ServiceSpec> = {
    customers: { definition: customerService as never, settings: CustomerSettings, env: { ADMIN_EMAILS: ADMIN_EMAIL } },
    products: { definition: productService as never, settings: ProductSettings, env: {} },
    orders: { definition: orderService as never, settings: OrderSettings, env: { ORDER_DEADLINE_MS: '60000' } },
    payments: { definition: paymentService as never, settings: PaymentSettings, env: {} },
    notifications: {
      definition: notificationService as never,
      settings: NotificationSettings,
      env: { SMTP_HOST: '127.0.0.1', SMTP_PORT: String(smtp.port), NOTIFY_RETRY_BASE_MS: '50' },
    },
    // Quick steps, so a test sees an order shipped and delivered; not so quick that a cancel right after the confirmation is too late.
    shipments: {
      definition: shippingService as never,
      settings: ShippingSettings,
      env: { SHIPPING_SHIP_AFTER_MS: '5000', SHIPPING_DELIVER_AFTER_MS: '1000', SHIPPING_POLL_MS: '100' },
    },
  };
  const running = new Map<ServiceName, RunningService & { databaseUrl: string }>();
  const databases = new Map<ServiceName, string>();
  const start = async (name: ServiceName) => {
    const spec = specs[name];
    const databaseUrl = databases.get(name);
    const service = await startTestService(spec.definition, nats, {
      settings: spec.settings,
      env: spec.env,
      ...(databaseUrl ? { databaseUrl } : {}),
    });
    databases.set(name, service.databaseUrl);
    running.set(name, service);
  };
  const bffs: { bff: Bff; nc: NatsConnection }[] = [];
  const close = async () => {
    for (const { bff, nc } of bffs) {
      await bff.close();
      await nc.drain().catch(() => {});
    }
    await Promise.all([...running.values()].map((service) => service.stop()));
    await smtp.close();
    await nats.cleanup();
    await dropTestDatabases();
  };
  const startBff = async (env: Record<string, string> = {}) => {
    const settings = loadConfig(BffSettings, {
      NATS_URL: nats.url,
      JWT_SECRET,
      BFF_PORT: '0',
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
      ...options.bffEnv,
      ...env,
    });
    const log = createLogger('bff', settings.LOG_LEVEL);
    const nc = await connect({ servers: nats.url, name: 'bff', noAsyncTraces: true });
    // Short breaker window so a stopped service is noticed, and noticed gone, within a test. A stopped
    // service is refused at once (no responders): the timeout only bounds slow answers, and registering
    // hashes a password, which takes over a second on a loaded machine.
    const bff = await build({ nc, log, settings, client: { timeoutMs: 5000, breaker: { resetTimeoutMs: 500 } } });
    bffs.push({ bff, nc });
    await bff.listen({ port: 0, host: '127.0.0.1' });
    await waitFor(() => bff.feed.ready, { what: 'the order feed to read' });
    await waitFor(() => allReplicas(bff.readModels).every((replica) => replica.ready), { what: 'the read models to catch up' });
    return { bff, nc, url: `http://127.0.0.1:${(bff.server.address() as AddressInfo).port}` };
  };
  let first: Awaited<ReturnType<typeof startBff>>;
  try {
    // Every start settled before any failure is reported, so close() finds every service that did start.
    const starts = await Promise.allSettled((Object.keys(specs) as ServiceName[]).map(start));
    for (const result of starts) if (result.status === 'rejected') throw result.reason;
    first = await startBff();
  } catch (error) {
    // A stack half started (PostgreSQL out of connections, say) would keep the test file running forever.
    await close().catch(() => {});
    throw error;
  }

  return {
    nats,
    bff: first.bff,
    url: first.url,
    running,
    startBff,
    async stopService(name) {
      await running.get(name)?.stop();
      running.delete(name);
    },
    startService: start,
    close,
  };
}

/** An SMTP server that accepts every email and keeps nothing. */
async function startSmtpSink(): Promise<{ port: number; close(): Promise<void> }> {
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onData(stream, _session, callback) {
      stream.resume();
      stream.on('end', () => callback());
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

// --- GraphQL over HTTP ---------------------------------------------------------------------------

export interface GqlError {
  message: string;
  path?: (string | number)[];
  extensions: { code: string; [key: string]: unknown };
}

export interface GqlResponse<T = Record<string, any>> {
  status: number;
  data: T | null;
  errors?: GqlError[];
}

export async function gql<T = Record<string, any>>(
  url: string,
  query: string,
  variables: Record<string, unknown> = {},
  token?: string,
): Promise<GqlResponse<T>> {
  const response = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await response.json()) as { data?: T | null; errors?: GqlError[] };
  return { status: response.status, data: body.data ?? null, ...(body.errors ? { errors: body.errors } : {}) };
}

/** The data of a response that must have no errors. */
export async function ok<T = Record<string, any>>(
  url: string,
  query: string,
  variables: Record<string, unknown> = {},
  token?: string,
): Promise<T> {
  const response = await gql<T>(url, query, variables, token);
  if (response.errors || response.status !== 200) {
    throw new Error(`GraphQL failed (${response.status}): ${JSON.stringify(response.errors)}`);
  }
  return response.data!;
}

// --- GraphQL over WebSocket (graphql-transport-ws) -----------------------------------------------

export interface WsMessage {
  type: string;
  id?: string;
  payload?: any;
}

export interface WsClient {
  /** Every message received so far, in order. */
  messages: WsMessage[];
  send(message: WsMessage): void;
  /** Waits for a message matching `match` (past or future). */
  waitFor(match: (message: WsMessage) => boolean, what: string): Promise<WsMessage>;
  close(): Promise<void>;
}

export async function openWs(url: string, token?: string): Promise<WsClient> {
  const socket = new WebSocket(`${url.replace(/^http/, 'ws')}/graphql`, 'graphql-transport-ws');
  const messages: WsMessage[] = [];
  socket.on('message', (data) => messages.push(JSON.parse(String(data)) as WsMessage));
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  const client: WsClient = {
    messages,
    send: (message) => socket.send(JSON.stringify(message)),
    waitFor: (match, what) => waitFor(() => messages.find(match), { what, timeoutMs: 15_000 }),
    close: async () => {
      if (socket.readyState === WebSocket.CLOSED) return;
      const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
      socket.close();
      await closed;
    },
  };
  client.send({ type: 'connection_init', payload: token ? { authorization: `Bearer ${token}` } : {} });
  await client.waitFor((m) => m.type === 'connection_ack' || m.type === 'connection_error', 'connection_ack');
  return client;
}

export { waitFor };
