// A service process, assembled: database (created and migrated), NATS,
// streams, the RPC client, the endpoints, the outbox relay and the event
// consumers, and a stop that undoes it all in order. Each service's app.ts
// says *what* it serves and consumes; this file says *how*.
import pRetry from 'p-retry';
import type { TProperties } from '@sinclair/typebox';
import type { JetStreamClient, JetStreamManager, NatsConnection } from 'nats';
import {
  redeliveryHorizonSeconds,
  streams,
  type EventContract,
  type RpcContract,
  type StateContract,
  type StreamDefinition,
} from '../../subjects/index.ts';
import { type ConsumerSettings, type EventHandler, type RunningConsumer, defaultConsumerSettings, startConsumer } from './consumer.ts';
import { InboxPruner, type PruneTarget } from './consumer/inbox-pruner.ts';
import { createPool, databaseUrl, ensureDatabase, migrate, type Pool } from './db.ts';
import { loadConfigOrExit, serviceSettingsSchema } from './config.ts';
import { createLogger, type Logger } from './log.ts';
import { followLogLevel, LiveSettings } from './live-config.ts';
import { LiveRpcClient } from './live-rpc-client.ts';
import { connectNats, type NatsSettings } from './nats.ts';
import { OutboxRelay, type OutboxRelayOptions } from './outbox.ts';
import { ProcessMetrics } from './metrics.ts';
import { startServiceOps, type OpsServer } from './ops.ts';
import { stopTracing } from './tracing.ts';
import type { RpcClient, RpcClientOptions } from './rpc-client.ts';
import { serveEndpoints, type Endpoint, type RpcServer } from './rpc-server.ts';
import { ensureStreams } from './streams.ts';
import { openStateBucket } from './state.ts';
import { explainStartFailure, natsProblem } from './startup.ts';

/** What a service's handlers get: its own database, the bus, and a client for other services. */
export interface ServiceContext {
  name: string;
  log: Logger;
  pool: Pool;
  /** The URL `pool` connects to, for a component that needs a connection of its own. */
  databaseUrl: string;
  nc: NatsConnection;
  js: JetStreamClient;
  client: RpcClient;
  /** The live settings (subjects/settings.ts) as they are now; they follow the `config` bucket. */
  settings: LiveSettings;
  /** This process's metrics, for series of the service's own (ProcessMetrics.histogram). */
  metrics: ProcessMetrics;
}

/** A service's app.ts: its name, its events, and the handlers built from its context. */
export interface ServiceDefinition<Settings = unknown> {
  /** The micro service name, also the domain of its subjects (`customers`). */
  name: string;
  version: string;
  description: string;
  /** Folder of this service's numbered .sql migrations. */
  migrations: string;
  /** Events this service writes to its outbox. */
  emits: readonly EventContract[];
  /** State buckets (read models) this service writes through its outbox (writeStates); none when absent. */
  states?: readonly StateContract[];
  /**
   * Requests this service makes to others. Its client refuses any other
   * (UndeclaredCallError); the AsyncAPI document and nats.conf's test read
   * this list. None when absent.
   */
  calls?: readonly RpcContract[];
  /**
   * Its environment schema (loadConfig): ServiceSettings plus its own
   * variables; ServiceSettings when absent. runService adds the variables of
   * the live settings it reads (subjects/settings.ts), declared there.
   */
  settings?: TProperties;
  build(
    context: ServiceContext,
    settings: Settings,
  ): {
    endpoints: readonly Endpoint[];
    consumers: readonly EventHandler[];
    /** Loops of the service's own (sweepers, senders), started last and stopped before the outbox. */
    background?: readonly BackgroundTask[];
  };
}

/** A loop a service runs beside its endpoints and consumers, e.g. a deadline sweeper. */
export interface BackgroundTask {
  name: string;
  start(): void | Promise<void>;
  /** Stops taking new work and finishes what it holds. */
  stop(): Promise<void>;
}

export interface KitSettings extends NatsSettings {
  DATABASE_URL?: string | undefined;
  DATABASE_POOL_MAX: number;
  STREAM_REPLICAS: number;
  RPC_TIMEOUT_MS: number;
  SHUTDOWN_TIMEOUT_MS: number;
  /** The operations port (/metrics, /health/*); unset: none. */
  OPS_PORT?: number | undefined;
  OPS_HOST?: string | undefined;
  /** How long an inbox keeps an event's id; unset: its stream's redelivery horizon. */
  INBOX_RETENTION_SECONDS?: number | undefined;
  INBOX_PRUNE_INTERVAL_MS?: number | undefined;
}

export interface StartOptions {
  consumer?: Partial<ConsumerSettings>;
  outbox?: OutboxRelayOptions;
  client?: Partial<RpcClientOptions>;
  /** Database name override (tests give each run its own). */
  databaseUrl?: string;
}

export interface RunningService {
  readonly context: ServiceContext;
  readonly server: RpcServer;
  readonly outbox: OutboxRelay;
  readonly consumers: readonly RunningConsumer[];
  readonly inboxPruner: InboxPruner;
  readonly metrics: ProcessMetrics;
  /** The operations server, when OPS_PORT is set. */
  readonly ops: OpsServer | undefined;
  /** Graceful stop: no new work, finish in-flight, drain NATS, close the pool. */
  stop(): Promise<void>;
}

export async function startService<Settings>(
  definition: ServiceDefinition<Settings>,
  settings: Settings & KitSettings,
  log: Logger,
  options: StartOptions = {},
): Promise<RunningService> {
  const url = options.databaseUrl ?? databaseUrl(definition.name, settings.DATABASE_URL);
  await ensureDatabase(url, log);
  const pool = createPool(url, settings.DATABASE_POOL_MAX);
  await migrate(pool, definition.name, definition.migrations, log);

  const nc = await connectNats(definition.name, settings, log);
  const jsm: JetStreamManager = await nc.jetstreamManager();
  const js = nc.jetstream();
  const live = await LiveSettings.open(nc, definition.name, {
    log,
    environment: settings as unknown as Record<string, unknown>,
    replicas: settings.STREAM_REPLICAS,
  });
  followLogLevel(live, log);
  const client: RpcClient = new LiveRpcClient(nc, live, options.client, definition.calls ?? []);
  const metrics = new ProcessMetrics(definition.name, { processMetrics: settings.OPS_PORT !== undefined });
  const context: ServiceContext = { name: definition.name, log, pool, databaseUrl: url, nc, js, client, settings: live, metrics };
  const { endpoints, consumers, background = [] } = definition.build(context, settings);

  // Instances starting together on a fresh cluster race to create replicated streams; retry the loser.
  await pRetry(() => ensureStreams(jsm, streamsTouched(definition.emits, consumers), settings.STREAM_REPLICAS, log), {
    retries: 5,
    minTimeout: 500,
    onFailedAttempt: ({ error, retriesLeft }) => log.warn({ err: error, retriesLeft }, 'stream setup failed; retrying'),
  });

  for (const contract of definition.states ?? []) {
    await pRetry(() => openStateBucket(nc, contract, settings.STREAM_REPLICAS), {
      retries: 5,
      minTimeout: 500,
      onFailedAttempt: ({ error, retriesLeft }) => log.warn({ err: error, retriesLeft }, 'state bucket setup failed; retrying'),
    });
  }

  const outbox = new OutboxRelay(pool, url, js, log, { metrics, ...options.outbox });
  await outbox.start();
  const consumerSettings = { ...defaultConsumerSettings, ...options.consumer };
  const running = await Promise.all(
    consumers.map((handler) => startConsumer(definition.name, handler, { nc, js, jsm, pool, log, metrics }, consumerSettings)),
  );
  const inboxPruner = new InboxPruner(pool, pruneTargets(running, settings, log), log, {
    intervalMs: settings.INBOX_PRUNE_INTERVAL_MS ?? 60_000,
  });
  inboxPruner.start();
  const server = await serveEndpoints(nc, definition, endpoints, log, metrics.requestAnswered);
  for (const task of background) await task.start();
  const ops = await startServiceOps({ name: definition.name, nc, jsm, pool, outbox, consumers: running, client, metrics, log }, settings);
  log.info({ endpoints: endpoints.length, consumers: running.length }, 'service started');

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      const grace = settings.SHUTDOWN_TIMEOUT_MS;
      log.info('service stopping');
      ops?.draining();
      await server.stop(grace);
      await Promise.all(running.map((consumer) => consumer.stop(grace)));
      await Promise.all(background.map((task) => task.stop()));
      await inboxPruner.stop();
      await outbox.stop();
      client.close();
      await live.stop();
      await nc.drain().catch(() => {});
      await pool.end();
      await ops?.close();
      log.info('service stopped');
    })());

  return { context, server, outbox, consumers: running, inboxPruner, metrics, ops, stop };
}

/**
 * Each consumer's inbox horizon: INBOX_RETENTION_SECONDS, or as long as its
 * stream can deliver a copy of an event. A setting shorter than that is
 * allowed (tests, a soak) but said at start: a copy arriving later is applied again.
 */
function pruneTargets(consumers: readonly RunningConsumer[], settings: KitSettings, log: Logger): PruneTarget[] {
  return consumers.map(({ durable, stream }) => {
    const safe = redeliveryHorizonSeconds(streamDefinition(stream));
    const chosen = settings.INBOX_RETENTION_SECONDS ?? safe;
    if (chosen < safe) {
      log.warn(
        { consumer: durable, stream, retentionSeconds: chosen, redeliveryHorizonSeconds: safe },
        'INBOX_RETENTION_SECONDS is shorter than the stream can redeliver: an event delivered again after it would be applied again',
      );
    }
    return { consumer: durable, horizonSeconds: chosen };
  });
}

/** The streams a service writes to or reads from, plus DLQ for its dead letters. */
function streamsTouched(emits: readonly EventContract[], consumers: readonly EventHandler[]): StreamDefinition[] {
  const names = new Set<string>([...emits.map((e) => e.stream), ...consumers.map((c) => c.contract.stream), 'DLQ']);
  return [...names].map(streamDefinition);
}

function streamDefinition(name: string): StreamDefinition {
  const definition = (streams as Record<string, StreamDefinition>)[name];
  if (!definition) throw new Error(`no stream definition named ${name} in subjects/streams.ts`);
  return definition;
}

/**
 * A service's whole process, what its main.ts runs: reads its settings from
 * the environment (a bad one: what to fix, and exit 78), makes its logger,
 * starts it, and stops it gracefully on SIGTERM or SIGINT. A start that
 * cannot succeed (no PostgreSQL, its ops port taken) ends in one line saying
 * what to do, and exit 1; while no NATS server answers, it says so and waits.
 */
export async function runService<Settings>(definition: ServiceDefinition<Settings>): Promise<RunningService> {
  const settings = loadConfigOrExit(serviceSettingsSchema(definition)) as unknown as Settings & KitSettings & { LOG_LEVEL: string };
  const log = createLogger(definition.name, settings.LOG_LEVEL as Parameters<typeof createLogger>[1]);
  // The connection waits for NATS as long as it takes; first say why nothing happens.
  void natsProblem(settings.NATS_URL).then((problem) => problem && log.warn(`${problem}; waiting for it`));
  let running: RunningService;
  try {
    running = await startService(definition, settings, log);
  } catch (error) {
    const reason = explainStartFailure(error, {
      databaseUrl: databaseUrl(definition.name, settings.DATABASE_URL),
      opsPort: settings.OPS_PORT,
    });
    if (!reason) throw error;
    process.stderr.write(`${reason}\n`);
    process.exit(1);
  }
  stopOnSignals(running.stop, log);
  return running;
}

/** Runs `stop` once on SIGTERM or SIGINT, then exits; a second signal exits at once. */
export function stopOnSignals(stop: () => Promise<void>, log: Logger): void {
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) process.exit(1);
    signalled = true;
    log.info({ signal }, 'signal received');
    // The spans still in the exporter's batch go out before the process ends.
    stop().then(
      () =>
        stopTracing()
          .catch(() => {})
          .then(() => process.exit(0)),
      (error) => {
        log.error({ err: error }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
