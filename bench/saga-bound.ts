// The saga's database bound, for bench:saga: the SQL that orders cost across
// the five databases, run straight from one process with many orders in
// flight: no NATS, no service processes, no JSON over the wire.
//
// The statements are the services' own: each service's definition is built
// (app.ts build()) on fresh databases, as startService does, but what NATS
// would carry is handed over in memory:
//   - a call (orders.place asking customers.get and products.getMany, the
//     notification consumer asking customers.getMany) runs the callee's
//     endpoint in this process;
//   - each database's outbox is emptied by the relay's own statement
//     (takeOutboxBatch) and every event handed to the consumers of its
//     subject, which apply it through the kit's inbox (applyOnce) in batches
//     of the handler's own size, as the consumer runner does;
//   - the notification sender's SQL runs without SMTP (claimDue, then
//     markSent for each email, as the sender records each one the moment the
//     SMTP server accepts it); the service's own sender is stopped;
//   - the shipping dispatcher runs as the service runs it, woken by its
//     consumer: carrier steps, their events and emails, as in the saga.
// An order counts once orders.events.confirmed leaves the order database's
// outbox, the moment the saga bench's subscription would hear it.
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { ROOT_CONTEXT } from '@opentelemetry/api';
import { SERVICES, customers, orders, products, registry, type Envelope } from '../subjects/index.ts';
import {
  LiveSettings,
  createLogger,
  createPool,
  ensureDatabase,
  loadConfig,
  migrate,
  serviceSettingsSchema,
  withTransaction,
  type Endpoint,
  type EventHandler,
  type Pool,
  type RpcClient,
} from '../services/kit/index.ts';
import { applyOnce } from '../services/kit/consumer/inbox.ts';
import { serviceDefinition } from '../services/kit/definitions.ts';
import { ProcessMetrics } from '../services/kit/metrics.ts';
import { takeOutboxBatch } from '../services/kit/outbox.ts';
import { claimDue, markSent } from '../services/notification/store.ts';
import { dropTestDatabases, testDatabaseUrl } from '../test/harness.ts';
import { cpuSnapshot, cpuUsed, fmt, progress, round } from '../scripts/lib/measure.ts';

export interface BoundSettings {
  seconds: number;
  inflight: number;
  products: number;
  customers: number;
}

export interface BoundResult {
  confirmedPerSecond: number;
  confirmed: number;
  seconds: number;
  /** Transactions that failed (their events were tried again one by one). */
  failures: number;
  /** CPU milliseconds per confirmed order: PostgreSQL's backends of the five databases, and this process. */
  cpuMsPerOrder: { postgres: number; process: number };
}

/** Most transactions one handler runs at once (the kit's consumers run concurrency / batch). */
const HANDLER_CONCURRENCY = 4;
const RELAY_BATCH = 100;

interface Service {
  name: string;
  pool: Pool;
  consumers: readonly EventHandler[];
  stop: () => Promise<void>;
}

export async function runDatabaseBound(settings: BoundSettings): Promise<BoundResult> {
  const log = createLogger('saga-bound', 'silent');
  const endpoints = new Map<string, Endpoint>();
  // In-process calls: the callee's endpoint, as its service would answer over NATS.
  const client = {
    call: (contract: { subject: string }, input: unknown) => endpoints.get(contract.subject)!.handle(input as never, { log }),
    close() {},
  } as unknown as RpcClient;

  const services: Service[] = [];
  const databaseUrls: string[] = [];
  const bySubject = new Map<string, { service: Service; handler: EventHandler }[]>();
  let failures = 0;
  const confirmed = new Map<string, () => void>();

  // Each database's relay: takes outbox rows and hands their events on; a wake during a pass runs another.
  const relays = new Map<string, { running: boolean; again: boolean }>();
  const wake = (service: Service) => {
    const relay = relays.get(service.name)!;
    if (relay.running) {
      relay.again = true;
      return;
    }
    relay.running = true;
    void (async () => {
      do {
        relay.again = false;
        for (;;) {
          const rows = await withTransaction(service.pool, (tx) => takeOutboxBatch(tx, RELAY_BATCH));
          for (const row of rows) deliver(row.subject, row.payload);
          if (rows.length < RELAY_BATCH) break;
        }
      } while (relay.again);
    })()
      // Only at the end, when the pools close under a pass: nothing is waiting for it then.
      .catch(() => {})
      .finally(() => {
        relay.running = false;
      });
  };

  // Each handler's queue, taken in batches of its size.
  const queues = new Map<EventHandler, { events: Envelope[]; running: number }>();
  const deliver = (subject: string, event: Envelope) => {
    if (subject === orders.confirmed.subject) {
      const orderId = (event.data as { orderId: string }).orderId;
      confirmed.get(orderId)?.();
      confirmed.delete(orderId);
    }
    for (const { service, handler } of bySubject.get(subject) ?? []) {
      const queue = queues.get(handler)!;
      queue.events.push(event);
      run(service, handler);
    }
  };
  const run = (service: Service, handler: EventHandler) => {
    const queue = queues.get(handler)!;
    while (queue.events.length > 0 && queue.running < HANDLER_CONCURRENCY) {
      const batch = queue.events.splice(0, handler.batch).map((event) => ({ event, delivery: 1, trace: ROOT_CONTEXT }));
      queue.running++;
      const apply = (deliveries: typeof batch) =>
        applyOnce(service.pool, `${service.name}-${handler.name}`, deliveries, (fresh, tx) => handler.apply(fresh as never, tx, log));
      void apply(batch)
        .catch(async () => {
          // As the consumer runner does: a failed batch is applied again one event at a time.
          failures++;
          for (const delivery of batch) await apply([delivery]).catch(() => failures++);
        })
        .finally(() => {
          queue.running--;
          wake(service);
          if (service.name === 'notifications') send(service);
          run(service, handler);
        });
    }
  };

  // The notification sender's SQL: claim what is due, record each email sent on its own.
  let sending = false;
  const send = (service: Service) => {
    if (sending) return;
    sending = true;
    void (async () => {
      for (;;) {
        const { rows } = await claimDue(service.pool, 300_000, 64);
        if (rows.length === 0) break;
        await Promise.all(rows.map((row) => markSent(service.pool, row.id)));
      }
    })()
      .catch(() => {})
      .finally(() => {
        sending = false;
      });
  };

  try {
    for (const name of SERVICES) {
      const definition = await serviceDefinition(registry[name]);
      const databaseUrl = testDatabaseUrl(`bound_${name}`);
      databaseUrls.push(databaseUrl);
      const config = loadConfig(serviceSettingsSchema(definition), {
        DATABASE_URL: databaseUrl,
        NATS_URL: 'nats://127.0.0.1:4222',
        LOG_LEVEL: 'silent',
      }) as Record<string, unknown>;
      await ensureDatabase(databaseUrl, log);
      const pool = createPool(databaseUrl);
      await migrate(pool, definition.name, definition.migrations, log);
      const live = LiveSettings.fixed(definition.name, { log, environment: config });
      const built = definition.build(
        {
          name: definition.name,
          log,
          pool,
          databaseUrl,
          nc: undefined as never,
          js: undefined as never,
          client,
          settings: live,
          metrics: new ProcessMetrics(definition.name),
        },
        config,
      );
      // The notification sender's SQL is replayed below without SMTP (send); left as built, the
      // consumers' wake-ups would run it too, against an SMTP server that is not there.
      const background = built.background ?? [];
      for (const part of background) if (part.name === 'notification-sender') await part.stop();
      const service: Service = {
        name: definition.name,
        pool,
        consumers: built.consumers ?? [],
        stop: async () => {
          // The payment provider, and the shipping dispatcher the consumers woke (as in the saga); their timers would hold the process.
          for (const part of background) if (part.name !== 'notification-sender') await part.stop();
          await pool.end();
        },
      };
      services.push(service);
      relays.set(service.name, { running: false, again: false });
      for (const endpoint of built.endpoints ?? []) endpoints.set(endpoint.contract.subject, endpoint);
      for (const handler of service.consumers) {
        queues.set(handler, { events: [], running: 0 });
        const list = bySubject.get(handler.contract.subject) ?? [];
        list.push({ service, handler });
        bySubject.set(handler.contract.subject, list);
      }
    }
    const call = <T>(subject: string, input: unknown) => endpoints.get(subject)!.handle(input as never, { log }) as Promise<T>;

    const catalog: string[] = [];
    for (let i = 0; i < settings.products; i++) {
      const product = await call<{ id: string }>(products.create.subject, {
        sku: `bound-${i}`,
        name: `Bound product ${i}`,
        price: { amount: 100 + i, currency: 'EUR' },
        initialStock: 1_000_000_000,
      });
      catalog.push(product.id);
    }
    const shoppers: string[] = [];
    for (let i = 0; i < settings.customers; i++) {
      const customer = await call<{ id: string }>(customers.register.subject, {
        email: `bound-${i}@bench.test`,
        name: `Bound shopper ${i}`,
        password: 'bench-password',
      });
      shoppers.push(customer.id);
    }

    const orderService = services.find((service) => service.name === 'orders')!;
    let next = 0;
    let done = 0;
    let inWindow = 0;
    // The same orders as the saga bench: 1 to 3 lines of its catalog.
    const placeOne = async (windowEnd: number) => {
      const n = next++;
      const first = (n * 7) % catalog.length;
      const lines = Array.from({ length: 1 + (n % 3) }, (_, k) => ({
        productId: catalog[(first + k * 37) % catalog.length]!,
        quantity: 1 + (k % 2),
      }));
      const order = await call<{ id: string }>(orders.place.subject, {
        idempotencyKey: randomUUID(),
        customerId: shoppers[n % shoppers.length]!,
        lines,
        paymentToken: 'tok_bench_ok',
      });
      const heard = new Promise<void>((resolve) => confirmed.set(order.id, resolve));
      wake(orderService);
      await heard;
      done++;
      if (performance.now() <= windowEnd) inWindow++;
    };
    const closedLoop = async (seconds: number) => {
      const end = performance.now() + seconds * 1000;
      await Promise.all(
        Array.from({ length: settings.inflight }, async () => {
          while (performance.now() < end) await placeOne(end);
        }),
      ).catch((error: unknown) => {
        progress(`bound: an order failed: ${(error as Error).stack}`);
        throw error;
      });
    };
    progress(`bound: warm-up, then ${settings.seconds}s with ${settings.inflight} orders in flight`);
    await closedLoop(Math.min(5, settings.seconds));
    done = 0;
    inWindow = 0;
    const postgres = {
      url: databaseUrls[0]!,
      databases: databaseUrls.map((url) => decodeURIComponent(new URL(url).pathname.slice(1))),
    };
    const before = await cpuSnapshot(new Map(), postgres);
    const started = performance.now();
    await closedLoop(settings.seconds);
    const cpu = cpuUsed(before, await cpuSnapshot(new Map(), postgres));
    const seconds = settings.seconds;
    const perOrder = (used: number | undefined) => round(((used ?? Number.NaN) * 1000) / Math.max(1, done), 3);
    const result = {
      confirmedPerSecond: round(inWindow / seconds, 1),
      confirmed: done,
      seconds,
      failures,
      cpuMsPerOrder: { postgres: perOrder(cpu.postgres), process: perOrder(cpu.bench) },
    };
    progress(
      `bound: ${fmt(result.confirmedPerSecond)} confirmed/s (${done} confirmed in ${fmt((performance.now() - started) / 1000, 1)} s)`,
    );
    return result;
  } finally {
    // Let the last relays and handlers finish before the pools close.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    for (const service of services) await service.stop().catch(() => {});
    await dropTestDatabases().catch(() => {});
  }
}
