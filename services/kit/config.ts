// Configuration comes from environment variables, described by one schema per
// process and checked once at start: a bad value stops the process with a
// message naming the variable, instead of failing later somewhere else.
//
// A variable that replaces a live setting's default (LOG_LEVEL,
// RPC_TIMEOUT_MS, ORDER_DEADLINE_MS, PAYMENT_*, ...) is declared by that
// setting in subjects/settings.ts, and only there: a schema takes it with
// settingVariables(), and loadConfig reads it as the setting reads a value.
import { Type, type Static, type TObject, type TProperties, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { SETTING_KEYWORD, decodeSetting, settingByKey, settings, settingVariables, settingVariablesOf } from '../../subjects/index.ts';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/** Settings every service reads. Names are the environment variables. */
export const ServiceSettings = {
  // A value without a scheme (a typo, a bare word) would otherwise pass and leave the process retrying forever.
  NATS_URL: Type.String({
    default: 'nats://127.0.0.1:4222',
    pattern: '^\\s*(nats|tls)://[^\\s,]+(\\s*,\\s*(nats|tls)://[^\\s,]+)*\\s*$',
    description: 'Comma-separated NATS server URLs (nats:// or tls://).',
  }),
  NATS_USER: Type.Optional(Type.String({ minLength: 1 })),
  NATS_PASSWORD: Type.Optional(Type.String({ minLength: 1 })),
  DATABASE_URL: Type.Optional(
    Type.String({ pattern: '^postgres(ql)?://', description: "This service's database; defaults to shop_<service> on PG* settings." }),
  ),
  DATABASE_POOL_MAX: Type.Integer({
    minimum: 1,
    maximum: 100,
    default: 10,
    description: 'Connections of its pool at most (the outbox listener takes one more); many instances share max_connections.',
  }),
  // Every process's <name>.log_level reads LOG_LEVEL, with one schema: any one of them declares it.
  ...settingVariables(settings.logLevel.customers, settings.kit.rpcTimeoutMs),
  STREAM_REPLICAS: Type.Integer({ minimum: 1, maximum: 5, default: 1 }),
  SHUTDOWN_TIMEOUT_MS: Type.Integer({ minimum: 100, maximum: 600_000, default: 10_000 }),
  ZIPKIN_URL: Type.Optional(Type.String({ pattern: '^https?://', description: 'Zipkin v2 spans endpoint.' })),
  OPS_PORT: Type.Optional(
    Type.Integer({
      minimum: 0,
      maximum: 65_535,
      description: 'Port of /metrics and /health/*; 0 picks a free one; unset, none is served.',
    }),
  ),
  OPS_HOST: Type.String({ minLength: 1, default: '127.0.0.1', description: 'Address the operations port listens on; 0.0.0.0 for all.' }),
  INBOX_RETENTION_SECONDS: Type.Optional(
    Type.Integer({
      minimum: 1,
      description:
        "How long a consumer's inbox keeps an applied event's id; unset: as long as its stream can deliver a copy (subjects/streams.ts redeliveryHorizonSeconds).",
    }),
  ),
  INBOX_PRUNE_INTERVAL_MS: Type.Integer({
    minimum: 100,
    maximum: 24 * 60 * 60 * 1000,
    default: 60_000,
    description: 'Time between two passes of the inbox pruner.',
  }),
};

/**
 * The environment schema a service starts with: its own (`settings` of its
 * definition, ServiceSettings when it has none) plus the variables of the
 * live settings it reads, so a bad PAYMENT_DELAY_MS stops it at start.
 */
export function serviceSettingsSchema(definition: { name: string; settings?: TProperties | undefined }): TProperties {
  return { ...(definition.settings ?? ServiceSettings), ...settingVariablesOf(definition.name) };
}

/** The live setting a variable of a schema stands for (settingVariables), if any. */
function settingOf(schema: TSchema) {
  const key = (schema as Record<string, unknown>)[SETTING_KEYWORD];
  return typeof key === 'string' ? settingByKey(key) : undefined;
}

/** The JSON type a setting expects, looking through Optional. */
function scalarType(schema: TSchema): string | undefined {
  return typeof schema.type === 'string' ? schema.type : undefined;
}

/**
 * Reads `schema` from `env`: converts strings to numbers and booleans, fills
 * defaults, and throws a ConfigError naming every variable that is wrong.
 */
export function loadConfig<P extends TProperties>(
  properties: P,
  env: Record<string, string | undefined> = process.env,
): Static<TObject<P>> {
  const schema = Type.Object(properties);
  const raw: Record<string, unknown> = {};
  /** Live settings' values, decoded as the setting decodes them; kept apart from TypeBox's conversion and defaults. */
  const given = new Map<string, unknown>();
  const malformed: string[] = [];
  for (const key of Object.keys(properties)) {
    const value = env[key];
    if (value === undefined || value === '') continue;
    const setting = settingOf(properties[key]!);
    if (!setting) {
      raw[key] = value;
      continue;
    }
    // A live setting's variable reads as the setting reads the bucket: JSON, or a bare word for text.
    const decoded = decodeSetting(setting, value);
    if (decoded.ok) given.set(key, decoded.value);
    else malformed.push(`${key} (${JSON.stringify(value)}): ${decoded.reason}`);
  }
  // TypeBox's conversion is lenient ("2.5" becomes 2); refuse such text first.
  malformed.push(
    ...Object.entries(raw).flatMap(([name, text]) => {
      if (typeof text !== 'string') return [];
      const expected = scalarType(properties[name]!);
      const ok =
        expected === 'integer'
          ? /^-?\d+$/.test(String(text).trim())
          : expected === 'number'
            ? /^-?\d+(\.\d+)?$/.test(String(text).trim())
            : expected === 'boolean'
              ? /^(true|false)$/.test(String(text).trim())
              : true;
      return ok ? [] : [`${name} (${JSON.stringify(text)}): expected ${expected === 'boolean' ? 'true or false' : `a plain ${expected}`}`];
    }),
  );
  const value = Value.Default(schema, Value.Convert(schema, raw)) as Record<string, unknown>;
  // A setting's value is its variable's, whole, or its default (TypeBox's Default would merge an object default into it).
  for (const key of Object.keys(properties)) {
    const setting = settingOf(properties[key]!);
    if (setting) value[key] = given.has(key) ? given.get(key) : structuredClone(setting.default);
  }
  if (malformed.length === 0 && Value.Check(schema, value)) return value as Static<TObject<P>>;
  const badNames = new Set(malformed.map((problem) => problem.split(' ')[0]));
  const invalid = [...Value.Errors(schema, value)].flatMap((error) => {
    const name = error.path.replace(/^\//, '').split('/')[0] || '(config)';
    if (badNames.has(name)) return []; // already explained above
    const shown = env[name] === undefined || env[name] === '' ? 'unset' : JSON.stringify(env[name]);
    return [`${name} (${shown}): ${error.message}`];
  });
  const problems = [...malformed, ...invalid];
  const unique = [...new Set(problems)];
  throw new ConfigError(`Invalid configuration. Fix these environment variables:\n  ${unique.join('\n  ')}`);
}

/** loadConfig for a process's main: a bad setting prints what to fix and exits with EX_CONFIG (78). */
export function loadConfigOrExit<P extends TProperties>(properties: P): Static<TObject<P>> {
  try {
    return loadConfig(properties);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`${error.message}\n`);
    process.exit(78);
  }
}
