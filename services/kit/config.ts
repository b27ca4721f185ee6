// Configuration comes from environment variables, described by one schema per
// process and checked once at start: a bad value stops the process with a
// message naming the variable, instead of failing later somewhere else.
import { Type, type Static, type TObject, type TProperties, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';

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
  LOG_LEVEL: Type.Union(
    [
      Type.Literal('fatal'),
      Type.Literal('error'),
      Type.Literal('warn'),
      Type.Literal('info'),
      Type.Literal('debug'),
      Type.Literal('trace'),
      Type.Literal('silent'),
    ],
    { default: 'info' },
  ),
  STREAM_REPLICAS: Type.Integer({ minimum: 1, maximum: 5, default: 1 }),
  RPC_TIMEOUT_MS: Type.Integer({ minimum: 10, maximum: 120_000, default: 2000 }),
  SHUTDOWN_TIMEOUT_MS: Type.Integer({ minimum: 100, maximum: 600_000, default: 10_000 }),
  ZIPKIN_URL: Type.Optional(Type.String({ pattern: '^https?://', description: 'Zipkin v2 spans endpoint.' })),
  OPS_PORT: Type.Optional(
    Type.Integer({ minimum: 0, maximum: 65_535, description: 'Port of /metrics and /health/*; 0 picks a free one; unset, none is served.' }),
  ),
  OPS_HOST: Type.String({ minLength: 1, default: '127.0.0.1', description: 'Address the operations port listens on; 0.0.0.0 for all.' }),
};

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
  for (const key of Object.keys(properties)) {
    const value = env[key];
    if (value !== undefined && value !== '') raw[key] = value;
  }
  // TypeBox's conversion is lenient ("2.5" becomes 2); refuse such text first.
  const malformed = Object.entries(raw).flatMap(([name, text]) => {
    const expected = scalarType(properties[name]!);
    const ok = expected === 'integer' ? /^-?\d+$/.test(String(text).trim())
      : expected === 'number' ? /^-?\d+(\.\d+)?$/.test(String(text).trim())
      : expected === 'boolean' ? /^(true|false)$/.test(String(text).trim())
      : true;
    return ok ? [] : [`${name} (${JSON.stringify(text)}): expected ${expected === 'boolean' ? 'true or false' : `a plain ${expected}`}`];
  });
  const value = Value.Default(schema, Value.Convert(schema, raw));
  if (malformed.length === 0 && Value.Check(schema, value)) return value;
  const badNames = new Set(malformed.map((problem) => problem.split(' ')[0]));
  const invalid = [...Value.Errors(schema, value)].flatMap((error) => {
    const name = error.path.replace(/^\//, '').split('/')[0] || '(config)';
    if (badNames.has(name)) return []; // already explained above
    const given = raw[name] === undefined ? 'unset' : JSON.stringify(env[name]);
    return [`${name} (${given}): ${error.message}`];
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
