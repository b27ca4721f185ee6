// The BFF's side of the shop: the NATS connection it was given, its live
// settings (the `config` bucket), the RPC client every resolver calls the
// services with, the order feed behind subscriptions, and the read models
// (the catalog and customers' profiles in memory). Decorated on the
// root instance, so every other plugin and route reads them from `app`.
// The feed and the read models start once the server is ready; closing the
// server stops them, the client and the settings (the connection belongs to the caller).
import fp from 'fastify-plugin';
import type { NatsConnection } from 'nats';
import {
  LiveRpcClient,
  LiveSettings,
  followLogLevel,
  type Logger,
  type ProcessMetrics,
  type RpcClient,
  type RpcClientOptions,
} from '../../services/kit/index.ts';
import { registry } from '../../subjects/index.ts';
import type { BffConfig } from '../settings.ts';
import { OrderFeed, type OrderUpdate } from '../feed.ts';
import { allReplicas, createReadModels, type ReadModels } from '../read-models.ts';

declare module 'fastify' {
  interface FastifyInstance {
    nats: NatsConnection;
    /** The BFF's live settings (rate limit, RPC client, log level), following the `config` bucket. */
    liveSettings: LiveSettings;
    rpc: RpcClient;
    feed: OrderFeed;
    /** The catalog and customers' profiles in memory (read-models.ts). */
    readModels: ReadModels;
  }
}

export interface ShopOptions {
  nc: NatsConnection;
  log: Logger;
  /** The BFF's settings from the environment: the live settings' values until the bucket says otherwise. */
  settings: BffConfig;
  /** Overrides for the RPC client (tests shorten timeouts and breaker windows). */
  client?: Partial<RpcClientOptions> | undefined;
  /** Where the read models' lag is recorded; none in tests. */
  metrics?: ProcessMetrics | undefined;
}

export default fp<ShopOptions>(
  async (app, { nc, log, settings, client: clientOptions, metrics }) => {
    const replicas = settings.STREAM_REPLICAS;
    const liveSettings = await LiveSettings.open(nc, 'bff', { log, environment: settings, replicas });
    followLogLevel(liveSettings, log);
    // Only the requests the registry declares for the BFF may leave it.
    const rpc = new LiveRpcClient(nc, liveSettings, clientOptions, registry.bff.calls);
    // Updates reach subscribers through mercurius's pubsub (plugins/graphql.ts), there by the time one arrives.
    const feed = new OrderFeed(
      nc,
      rpc,
      log,
      (topic: string, update: OrderUpdate) => void app.graphql.pubsub.publish({ topic, payload: update }),
      {
        replicas,
      },
    );

    app.decorate('nats', nc);
    app.decorate('liveSettings', liveSettings);
    app.decorate('rpc', rpc);
    app.decorate('feed', feed);
    const readModels = createReadModels(nc, log, replicas, metrics);
    app.decorate('readModels', readModels);

    app.addHook('onReady', async () => {
      feed.start();
      for (const replica of allReplicas(readModels)) replica.start();
    });
    app.addHook('onClose', async () => {
      await feed.stop();
      await Promise.all(allReplicas(readModels).map((replica) => replica.stop()));
      rpc.close();
      await liveSettings.stop();
    });
  },
  { name: 'shop', fastify: '5.x' },
);
