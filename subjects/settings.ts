// The live settings: what an operator may change while the shop runs. Each
// one is a key of the NATS KV bucket `config` with a typed schema, a default,
// and the environment variable that overrides the default at start. The
// bucket overrides both: a value written there applies at once in every
// process that reads it (see services/kit/live-config.ts), and deleting the
// key falls back to the environment or the default.
//
// Values are JSON in the bucket (`500`, `0.25`, `"debug"`, `{"tok_x":"…"}`);
// a bare word such as `debug` is also read as a string, so
// `nats kv put config orders.log_level debug` works as well as
// `npm run config -- set orders.log_level debug`.
//
// Connection settings (URLs, credentials) are not here: they stay in the
// environment only.
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { checker, type Checker, type ViolationIssue } from './contract.ts';
// Every process reads live settings: the registry's list.
import { PROCESSES, type ProcessName } from './services.ts';

/** The bucket every process watches. */
export const CONFIG_BUCKET = 'config';
/** Revisions kept per key: what `npm run config -- history` can show. */
export const CONFIG_HISTORY = 20;

export interface SettingContract<T extends TSchema = TSchema, E extends string = string> {
  readonly kind: 'setting';
  /** The key in the bucket: lower-case dot-separated tokens, `<area>.<name>`. */
  readonly key: string;
  readonly description: string;
  readonly value: Checker<T>;
  readonly default: Static<T>;
  /**
   * Environment variable that replaces the default at start (the bucket still
   * wins). Declared here only: a process's environment schema takes it from
   * here (settingVariables), never declares it again.
   */
  readonly env: E | undefined;
  /** The processes that apply it live. */
  readonly readers: readonly ProcessName[];
}

export type ValueOf<S> = S extends SettingContract<infer T> ? Static<T> : never;

const KEY = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$/;

export function setting<T extends TSchema, const E extends string = never>(definition: {
  key: string;
  description: string;
  schema: T;
  default: Static<T>;
  env?: E;
  readers: readonly ProcessName[];
}): SettingContract<T, E> {
  if (!KEY.test(definition.key)) throw new Error(`setting key ${definition.key} is not <area>.<name> in lower case`);
  const value: Checker<T> = checker(definition.schema);
  // A default that breaks its own schema is a bug of this file: fail at import.
  value.assert(definition.default, `default of ${definition.key}`);
  return {
    kind: 'setting',
    key: definition.key,
    description: definition.description,
    value,
    default: definition.default,
    env: definition.env,
    readers: definition.readers,
  };
}

const LogLevel = Type.Union(
  [
    Type.Literal('fatal'),
    Type.Literal('error'),
    Type.Literal('warn'),
    Type.Literal('info'),
    Type.Literal('debug'),
    Type.Literal('trace'),
    Type.Literal('silent'),
  ],
  { description: 'pino level: fatal, error, warn, info, debug, trace or silent.' },
);

function logLevel(process: ProcessName) {
  return setting({
    key: `${process}.log_level`,
    description: `Log level of ${process === 'bff' ? 'the BFF' : `the ${process} service`}.`,
    schema: LogLevel,
    default: 'info',
    env: 'LOG_LEVEL',
    readers: [process],
  });
}

export const settings = {
  payments: {
    declineTokens: setting({
      key: 'payments.decline_tokens',
      description: 'Simulator: card tokens that are declined, each with the reason given.',
      schema: Type.Record(Type.String({ minLength: 1, maxLength: 100 }), Type.String({ minLength: 1, maxLength: 200 }), {
        maxProperties: 100,
        description: 'Object of token -> decline reason, e.g. {"tok_decline": "card declined"}.',
      }),
      default: { tok_decline: 'card declined', tok_insufficient_funds: 'insufficient funds' },
      env: 'PAYMENT_DECLINE_TOKENS',
      readers: ['payments'],
    }),
    amountLimit: setting({
      key: 'payments.amount_limit',
      description: 'Simulator: charges above this many minor units are declined ("amount over limit").',
      schema: Type.Integer({ minimum: 0, maximum: 1_000_000_000_00 }),
      default: 100_000_000,
      env: 'PAYMENT_AMOUNT_LIMIT',
      readers: ['payments'],
    }),
    failureRate: setting({
      key: 'payments.failure_rate',
      description: 'Simulator: probability (0..1) that a provider call fails with a transient error.',
      schema: Type.Number({ minimum: 0, maximum: 1 }),
      default: 0,
      env: 'PAYMENT_FAILURE_RATE',
      readers: ['payments'],
    }),
    failFirstAttempts: setting({
      key: 'payments.fail_first_attempts',
      description: 'Simulator: the first N calls with each idempotency key fail with a transient error.',
      schema: Type.Integer({ minimum: 0, maximum: 1000 }),
      default: 0,
      env: 'PAYMENT_FAIL_FIRST_ATTEMPTS',
      readers: ['payments'],
    }),
    delayMs: setting({
      key: 'payments.delay_ms',
      description: 'Simulator: latency added to every provider call, in milliseconds.',
      // Well under the consumers' ack wait, so a slow provider is never mistaken for a lost message.
      schema: Type.Integer({ minimum: 0, maximum: 10_000 }),
      default: 0,
      env: 'PAYMENT_DELAY_MS',
      readers: ['payments'],
    }),
  },
  shipments: {
    shipAfterMs: setting({
      key: 'shipments.ship_after_ms',
      description: 'Carrier simulator: time from the label to the pickup (SHIPPED), in milliseconds (shipments created from now on).',
      schema: Type.Integer({ minimum: 0, maximum: 7 * 24 * 60 * 60 * 1000 }),
      default: 5000,
      env: 'SHIPPING_SHIP_AFTER_MS',
      readers: ['shipments'],
    }),
    deliverAfterMs: setting({
      key: 'shipments.deliver_after_ms',
      description: 'Carrier simulator: time from the pickup to the delivery (DELIVERED), in milliseconds (shipments shipped from now on).',
      schema: Type.Integer({ minimum: 0, maximum: 7 * 24 * 60 * 60 * 1000 }),
      default: 10_000,
      env: 'SHIPPING_DELIVER_AFTER_MS',
      readers: ['shipments'],
    }),
    failureRate: setting({
      key: 'shipments.failure_rate',
      description: 'Carrier simulator: probability (0..1) that a carrier call fails with a transient error (retried).',
      schema: Type.Number({ minimum: 0, maximum: 1 }),
      default: 0,
      env: 'SHIPPING_FAILURE_RATE',
      readers: ['shipments'],
    }),
    failFirstAttempts: setting({
      key: 'shipments.fail_first_attempts',
      description: 'Carrier simulator: the first N calls of each step of each shipment fail with a transient error.',
      schema: Type.Integer({ minimum: 0, maximum: 1000 }),
      default: 0,
      env: 'SHIPPING_FAIL_FIRST_ATTEMPTS',
      readers: ['shipments'],
    }),
    carrierDelayMs: setting({
      key: 'shipments.carrier_delay_ms',
      description: 'Carrier simulator: latency added to every carrier call, in milliseconds.',
      schema: Type.Integer({ minimum: 0, maximum: 30_000 }),
      default: 0,
      env: 'SHIPPING_CARRIER_DELAY_MS',
      readers: ['shipments'],
    }),
  },
  orders: {
    deadlineMs: setting({
      key: 'orders.deadline_ms',
      description: 'How long a new PENDING order waits for stock and payment before it is cancelled (orders placed from now on).',
      schema: Type.Integer({ minimum: 100, maximum: 24 * 60 * 60 * 1000 }),
      default: 30_000,
      env: 'ORDER_DEADLINE_MS',
      readers: ['orders'],
    }),
  },
  bff: {
    rateLimitMax: setting({
      key: 'bff.rate_limit_max',
      description: 'Requests per window per user (or per IP without a token) before the BFF answers 429.',
      schema: Type.Integer({ minimum: 1, maximum: 1_000_000 }),
      default: 300,
      env: 'RATE_LIMIT_MAX',
      readers: ['bff'],
    }),
    rateLimitWindowMs: setting({
      key: 'bff.rate_limit_window_ms',
      description: 'Length of the rate-limit window in milliseconds (windows already open keep their length).',
      schema: Type.Integer({ minimum: 100, maximum: 24 * 60 * 60 * 1000 }),
      default: 60_000,
      env: 'RATE_LIMIT_WINDOW_MS',
      readers: ['bff'],
    }),
  },
  kit: {
    rpcTimeoutMs: setting({
      key: 'kit.rpc_timeout_ms',
      description: 'Bound on one attempt of a request to another service, in milliseconds.',
      schema: Type.Integer({ minimum: 10, maximum: 120_000 }),
      default: 2000,
      env: 'RPC_TIMEOUT_MS',
      readers: PROCESSES,
    }),
    rpcRetries: setting({
      key: 'kit.rpc_retries',
      description: 'Further attempts of an idempotent request after a timeout or an absent service.',
      schema: Type.Integer({ minimum: 0, maximum: 10 }),
      default: 2,
      env: 'RPC_RETRIES',
      readers: PROCESSES,
    }),
    breakerErrorPercentage: setting({
      key: 'kit.breaker_error_percentage',
      description: 'Share of failed requests (percent, over 10 s) that opens the circuit of a remote operation.',
      schema: Type.Integer({ minimum: 1, maximum: 100 }),
      default: 50,
      env: 'BREAKER_ERROR_PERCENTAGE',
      readers: PROCESSES,
    }),
    breakerVolumeThreshold: setting({
      key: 'kit.breaker_volume_threshold',
      description: 'Requests in the window before a circuit may open.',
      schema: Type.Integer({ minimum: 1, maximum: 10_000 }),
      default: 5,
      env: 'BREAKER_VOLUME_THRESHOLD',
      readers: PROCESSES,
    }),
    breakerResetMs: setting({
      key: 'kit.breaker_reset_ms',
      description: 'How long an open circuit fails fast before letting one request through, in milliseconds.',
      schema: Type.Integer({ minimum: 100, maximum: 600_000 }),
      default: 5000,
      env: 'BREAKER_RESET_MS',
      readers: PROCESSES,
    }),
  },
  features: {
    ordersAccepting: setting({
      key: 'features.orders_accepting',
      description: 'Feature flag: false pauses ordering (orders.place answers SERVICE_UNAVAILABLE); the rest keeps working.',
      schema: Type.Boolean(),
      default: true,
      env: 'FEATURE_ORDERS_ACCEPTING',
      readers: ['orders'],
    }),
  },
  logLevel: Object.fromEntries(PROCESSES.map((name) => [name, logLevel(name)])) as Record<ProcessName, ReturnType<typeof logLevel>>,
} as const;

/** Every live setting, for tooling (the config CLI, AsyncAPI, tests). */
export const allSettings: readonly SettingContract[] = Object.values(settings).flatMap(
  (group) => Object.values(group) as SettingContract[],
);

/** The setting stored under `key`, if there is one. */
export function settingByKey(key: string): SettingContract | undefined {
  return allSettings.find((candidate) => candidate.key === key);
}

/** The settings `process` applies live. */
export function settingsOf(process: ProcessName | string): SettingContract[] {
  return allSettings.filter((candidate) => (candidate.readers as readonly string[]).includes(process));
}

/** Marks a variable of an environment schema as a live setting's (settingVariables): loadConfig decodes it as the setting does. */
export const SETTING_KEYWORD = 'x-setting';

type VariablesOf<C extends SettingContract<TSchema, string>> = {
  [S in C as NonNullable<S['env']>]: S extends SettingContract<infer T, string> ? T : never;
};

/**
 * The environment variables of `contracts`, as properties of an environment
 * schema (loadConfig): each one the setting's own schema with its default,
 * marked with the setting's key, so the variable is declared in one place
 * (the setting) and read the same way at start and from the bucket.
 */
export function settingVariables<const C extends readonly SettingContract<TSchema, string>[]>(...contracts: C): VariablesOf<C[number]> {
  const variables: Record<string, TSchema> = {};
  for (const contract of contracts) {
    if (!contract.env) throw new Error(`setting ${contract.key} has no environment variable`);
    variables[contract.env] = {
      ...contract.value.schema,
      default: contract.default,
      description: `${contract.description} Live setting ${contract.key}.`,
      [SETTING_KEYWORD]: contract.key,
    };
  }
  return variables as VariablesOf<C[number]>;
}

/** The variables of every live setting `process` reads that has one (its environment schema adds them at start). */
export function settingVariablesOf(process: ProcessName | string): Record<string, TSchema> {
  return settingVariables(...settingsOf(process).filter((contract) => contract.env !== undefined));
}

export type Decoded<T = unknown> = { ok: true; value: T } | { ok: false; reason: string };

/** Decodes one value as stored in the bucket or typed by an operator: JSON, or a bare word for a string. */
export function decodeSetting<S extends SettingContract>(contract: S, text: string): Decoded<ValueOf<S>> {
  const trimmed = text.trim();
  let parsed: { value: unknown } | undefined;
  try {
    parsed = { value: JSON.parse(trimmed) };
  } catch {
    parsed = undefined;
  }
  if (parsed && contract.value.check(parsed.value)) return { ok: true, value: parsed.value as ValueOf<S> };
  // `debug` typed without quotes is the string "debug" when the setting takes a string.
  if (contract.value.check(trimmed)) return { ok: true, value: trimmed as ValueOf<S> };
  return { ok: false, reason: explain(contract, parsed ? parsed.value : trimmed, text) };
}

/** Checks an already-typed value (e.g. from a service's environment settings). */
export function checkSetting<S extends SettingContract>(contract: S, value: unknown): Decoded<ValueOf<S>> {
  if (contract.value.check(value)) return { ok: true, value: value as ValueOf<S> };
  return { ok: false, reason: explain(contract, value, JSON.stringify(value) ?? String(value)) };
}

/** How a value is written to the bucket. */
export function encodeSetting(value: unknown): string {
  return JSON.stringify(value);
}

function explain(contract: SettingContract, value: unknown, given: string): string {
  const issues: ViolationIssue[] = [];
  try {
    contract.value.assert(value, contract.key);
  } catch (error) {
    issues.push(...((error as { issues?: ViolationIssue[] }).issues ?? []));
  }
  const first = issues[0];
  const where = first?.path ? ` at ${first.path}` : '';
  const shown = given.length > 80 ? `${given.slice(0, 77)}...` : given;
  return `${contract.key}: ${first?.message ?? 'invalid value'}${where} (given ${JSON.stringify(shown)})`;
}
