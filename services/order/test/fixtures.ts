// What the order service's tests share: a NATS server, the real customer and
// product services for the lookups, the order service under test, a client,
// and helpers to publish saga events and read the ORDERS stream.
import { randomUUID } from 'node:crypto';
import { connect, type JetStreamClient, type JetStreamManager, type NatsConnection } from 'nats';
import {
  customers,
  orders,
  products,
  type Customer,
  type EnvelopeOf,
  type EventContract,
  type DataOf,
  type Money,
  type Product,
} from '../../../subjects/index.ts';
import { RpcClient, type RunningService } from '../../kit/index.ts';
import { dropTestDatabases, startNats, startTestService, waitFor, type TestNats } from '../../../test/harness.ts';
import { CustomerSettings, customerService } from '../../customer/app.ts';
import { ProductSettings, productService } from '../../product/app.ts';
import { ShippingSettings, shippingService } from '../../shipping/app.ts';
import { OrderSettings, orderService } from '../app.ts';

export interface World {
  nats: TestNats;
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  client: RpcClient;
  services: RunningService[];
  /** The first order service instance. */
  order: RunningService & { databaseUrl: string };
  /** Every order service instance. */
  orderInstances: RunningService[];
  stop(): Promise<void>;
}

export async function startWorld(options: { orderEnv?: Record<string, string>; orderInstances?: number } = {}): Promise<World> {
  const nats = await startNats();
  const services: RunningService[] = [];
  try {
    services.push(await startTestService(customerService, nats, { settings: CustomerSettings }));
    services.push(await startTestService(productService, nats, { settings: ProductSettings }));
    // Cancelling a confirmed order holds its shipment first: the shipping service answers that.
    services.push(await startTestService(shippingService, nats, { settings: ShippingSettings }));
    const order = await startTestService(orderService, nats, { settings: OrderSettings, env: options.orderEnv ?? {} });
    services.push(order);
    const orderInstances: RunningService[] = [order];
    // Further instances share the first one's database, as instances of one service do.
    for (let i = 1; i < (options.orderInstances ?? 1); i++) {
      const instance = await startTestService(orderService, nats, {
        settings: OrderSettings,
        env: options.orderEnv ?? {},
        databaseUrl: order.databaseUrl,
      });
      services.push(instance);
      orderInstances.push(instance);
    }
    const nc = await connect({ servers: nats.url, noAsyncTraces: true });
    const client = new RpcClient(nc, { timeoutMs: 5000 });
    return {
      nats,
      nc,
      js: nc.jetstream(),
      jsm: await nc.jetstreamManager(),
      client,
      services,
      order,
      orderInstances,
      async stop() {
        client.close();
        await nc.drain();
        for (const service of services.reverse()) await service.stop();
        await nats.cleanup();
        await dropTestDatabases();
      },
    };
  } catch (error) {
    for (const service of services.reverse()) await service.stop().catch(() => {});
    await nats.cleanup();
    await dropTestDatabases();
    throw error;
  }
}

export async function registerCustomer(client: RpcClient, name = 'Ada'): Promise<Customer> {
  return client.call(customers.register, { email: `${randomUUID()}@example.com`, name, password: 'correct horse' });
}

export async function createProduct(client: RpcClient, price: Money, stock = 1000): Promise<Product> {
  const sku = `SKU-${randomUUID().slice(0, 8)}`;
  return client.call(products.create, { sku, name: `Thing ${sku}`, price, initialStock: stock });
}

export async function placeOrder(world: World, customerId: string, productIds: string[]) {
  return world.client.call(orders.place, {
    idempotencyKey: randomUUID(),
    customerId,
    lines: productIds.map((productId) => ({ productId, quantity: 1 })),
    paymentToken: 'tok_visa',
  });
}

/**
 * Every event of `contract` in its stream, oldest first, optionally only
 * those `filter` accepts. The outbox relay publishes after the commit, so
 * first wait until the order service's outbox is empty: every event of a
 * change the test has seen is in the stream by then.
 */
export async function streamEvents<C extends EventContract>(
  world: World,
  contract: C,
  filter: (data: DataOf<C>) => boolean = () => true,
): Promise<EnvelopeOf<C>[]> {
  await waitFor(
    async () => {
      const backlogs = await Promise.all(world.orderInstances.map((instance) => instance.outbox.backlog()));
      return backlogs.every((count) => count === 0);
    },
    { what: 'the order outbox to be published' },
  );
  const jsm = world.jsm;
  const info = await jsm.streams.info(contract.stream);
  const found: EnvelopeOf<C>[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const message = await jsm.streams.getMessage(contract.stream, { seq });
    if (message.subject !== contract.subject) continue;
    const envelope = message.json<EnvelopeOf<C>>();
    if (filter(envelope.data)) found.push(envelope);
  }
  return found;
}

/**
 * Publishes an event as another service's outbox would, and waits until the
 * order service's durable consumer has acknowledged it (and all before it),
 * so a test can then assert that it changed something, or nothing.
 * `msgId` differs from the envelope id to get past JetStream's duplicate window.
 */
export async function publishAndSettle<C extends EventContract>(
  world: World,
  contract: C,
  envelope: EnvelopeOf<C>,
  durable: string,
  msgId: string = envelope.id,
): Promise<void> {
  const ack = await world.js.publish(contract.subject, JSON.stringify(envelope), { msgID: msgId });
  await waitFor(
    async () => {
      const info = await world.jsm.consumers.info(contract.stream, durable);
      return info.ack_floor.stream_seq >= ack.seq && info.num_pending === 0 && info.num_ack_pending === 0;
    },
    { what: `${durable} to handle ${contract.subject} #${ack.seq}` },
  );
}

export function envelopeOf<C extends EventContract>(contract: C, data: DataOf<C>, id: string = randomUUID()): EnvelopeOf<C> {
  return { id, type: contract.subject, occurredAt: new Date().toISOString(), data };
}

export async function waitForStatus(world: World, id: string, status: string) {
  return waitFor(
    async () => {
      const order = await world.client.call(orders.get, { id });
      return order.status === status ? order : undefined;
    },
    { what: `order ${id} to be ${status}` },
  );
}
