// The shared service kit: what every service uses, in one small folder.
export { loadConfig, loadConfigOrExit, ConfigError, ServiceSettings, serviceSettingsSchema } from './config.ts';
export { createLogger, type Logger } from './log.ts';
export { ServiceError, toServiceError } from './errors.ts';
export { startTracing, stopTracing, currentTraceCarrier, traceHttpRoutes, tracedHttpServer } from './tracing.ts';
export { connectNats } from './nats.ts';
export {
  createPool,
  databaseUrl,
  ensureDatabase,
  migrate,
  withTransaction,
  preparedQueries,
  isUniqueViolation,
  type Pool,
  type Transaction,
  type Queryable,
} from './db.ts';
export { endpoint, serveEndpoints, type Endpoint, type RequestContext, type RpcServer } from './rpc-server.ts';
export { RpcClient, type RpcClientOptions, type CallOptions } from './rpc-client.ts';
export { ensureStreams, toStreamConfig } from './streams.ts';
export { writeEvent, writeEvents, writeStates, OutboxRelay, type EventToWrite } from './outbox.ts';
export { openStateBucket, stateStream } from './state.ts';
export {
  on,
  onBatch,
  startConsumer,
  leaderElectedSubject,
  defaultConsumerSettings,
  DeadLetterHeaders,
  type EventHandler,
  type EventContext,
  type Delivered,
  type HandlerOptions,
  type ConsumerSettings,
} from './consumer.ts';
export {
  runService,
  startService,
  stopOnSignals,
  type ServiceDefinition,
  type BackgroundTask,
  type ServiceContext,
  type RunningService,
  type KitSettings,
  type StartOptions,
} from './service.ts';
export { LiveSettings, openConfigBucket, putSetting, followLogLevel, type SettingSource, type SettingState } from './live-config.ts';
export { LiveRpcClient, UndeclaredCallError } from './live-rpc-client.ts';
export { explainStartFailure, natsProblem, portTaken } from './startup.ts';
export { ProcessMetrics, observeHttp, type EventOutcome, type RequestObserver, type AnswerFailure } from './metrics.ts';
export {
  startOpsServer,
  startServiceOps,
  startProcessOps,
  natsCheck,
  databaseCheck,
  consumersCheck,
  type OpsServer,
  type ReadinessCheck,
} from './ops.ts';
