// `npm run config -- <command>`: read and change the live settings in the
// NATS KV bucket `config` (subjects/settings.ts). Every running process picks
// a change up at once. A value is checked against its schema before it is
// written; nothing invalid reaches the bucket through here.
//
//   npm run config -- ls                      every setting: value in the bucket, default, env variable, who reads it
//   npm run config -- get <key>               one setting in full
//   npm run config -- set <key> <value>       check, then write (JSON, or a bare word for text)
//   npm run config -- unset <key>             delete: processes fall back to their environment or the default
//   npm run config -- history <key>           every kept revision, oldest first
//   add --json to ls, get or history for machine-readable output
//
// Connects like the services do: NATS_URL, NATS_USER, NATS_PASSWORD.
import { connect, type KV, type KvEntry, type NatsConnection } from 'nats';
import type { TSchema } from '@sinclair/typebox';
import { CONFIG_BUCKET, PROCESSES, allSettings, decodeSetting, settingByKey, type SettingContract } from '../subjects/index.ts';
import { ConfigError, loadConfig, ServiceSettings } from '../services/kit/config.ts';
import { openConfigBucket, putSetting } from '../services/kit/live-config.ts';

const USAGE = `usage: npm run config -- <command>
  ls                      every setting, its value in the bucket, default, environment variable, readers
  get <key>               one setting: value, where it comes from, what it accepts
  set <key> <value>       check the value, then write it (JSON, or a bare word for text)
  unset <key>             delete the key: processes go back to their environment value or the default
  history <key>           the kept revisions of a key, oldest first
Options: --json (ls, get, history). Connects to NATS_URL (default nats://127.0.0.1:4222).`;

/** A failure the user can act on: printed without a stack, with what to do next. */
class UsageError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 2) {
    super(message);
    this.exitCode = exitCode;
  }
}

interface Options {
  json: boolean;
}

async function main(argv: string[]): Promise<void> {
  const json = argv.includes('--json');
  const args = argv.filter((arg) => arg !== '--json');
  const [command, key, ...rest] = args;
  if (!command || command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(`${USAGE}\n`);
    if (!command) process.exitCode = 2;
    return;
  }
  const options: Options = { json };
  const commands: Record<string, () => Promise<void>> = {
    ls: () => withBucket(false, (kv) => list(kv, options)),
    get: () => withBucket(false, (kv) => get(kv, needSetting(key, 'get'), options)),
    set: () => {
      const contract = needSetting(key, 'set');
      if (rest.length === 0) throw new UsageError(`set needs a value: npm run config -- set ${contract.key} <value>\n${accepts(contract)}`);
      return withBucket(true, (kv) => set(kv!, contract, rest.join(' ')));
    },
    unset: () => withBucket(true, (kv) => unset(kv!, needSetting(key, 'unset'))),
    history: () => withBucket(false, (kv) => history(kv, needSetting(key, 'history'), options)),
  };
  const run = commands[command];
  if (!run) throw new UsageError(`unknown command "${command}"\n${USAGE}`);
  await run();
}

function needSetting(key: string | undefined, command: string): SettingContract {
  if (!key) throw new UsageError(`${command} needs a key; npm run config -- ls lists them`);
  const contract = settingByKey(key);
  if (contract) return contract;
  const area = key.split('.')[0];
  const near = allSettings.filter((candidate) => candidate.key.startsWith(`${area}.`)).map((candidate) => candidate.key);
  throw new UsageError(
    `unknown key "${key}". ${near.length > 0 ? `Keys of ${area}: ${near.join(', ')}.` : 'npm run config -- ls lists every key.'}`,
  );
}

/** Runs `work` with the bucket; `undefined` when it does not exist yet and `create` is false. */
async function withBucket(create: boolean, work: (kv: KV | undefined) => Promise<void>): Promise<void> {
  let env: { NATS_URL: string; NATS_USER?: string | undefined; NATS_PASSWORD?: string | undefined; STREAM_REPLICAS: number };
  try {
    env = loadConfig({
      NATS_URL: ServiceSettings.NATS_URL,
      NATS_USER: ServiceSettings.NATS_USER,
      NATS_PASSWORD: ServiceSettings.NATS_PASSWORD,
      STREAM_REPLICAS: ServiceSettings.STREAM_REPLICAS,
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers: env.NATS_URL.split(',').map((url) => url.trim()),
      name: 'config-cli',
      ...(env.NATS_USER ? { user: env.NATS_USER, pass: env.NATS_PASSWORD ?? '' } : {}),
      timeout: 5000,
      noAsyncTraces: true,
    });
  } catch (error) {
    throw new UsageError(
      `cannot reach NATS at ${env.NATS_URL} (${(error as Error).message}). Start it (docker compose up nats) or set NATS_URL.`,
      1,
    );
  }
  try {
    let kv: KV | undefined;
    if (create) kv = await openConfigBucket(nc, env.STREAM_REPLICAS);
    else if (await bucketExists(nc)) kv = await nc.jetstream().views.kv(CONFIG_BUCKET, { bindOnly: true });
    await work(kv);
  } finally {
    await nc.close();
  }
}

async function bucketExists(nc: NatsConnection): Promise<boolean> {
  try {
    await (await nc.jetstreamManager()).streams.info(`KV_${CONFIG_BUCKET}`);
    return true;
  } catch (error) {
    if ((error as Error).message === 'stream not found') return false;
    throw error;
  }
}

// ---------------------------------------------------------------------------
// Commands

interface Row {
  key: string;
  /** What the bucket holds (decoded), or undefined. */
  value?: unknown;
  /** The bucket holds something the processes refuse; they keep their previous value. */
  invalid?: string;
  raw?: string;
  revision?: number;
  updated?: string;
  default: unknown;
  env: string | null;
  readers: readonly string[];
  description: string;
}

async function row(kv: KV | undefined, contract: SettingContract): Promise<Row> {
  const base: Row = {
    key: contract.key,
    default: contract.default,
    env: contract.env ?? null,
    readers: contract.readers,
    description: contract.description,
  };
  const entry = kv ? await kv.get(contract.key) : null;
  if (entry?.operation !== 'PUT') return base;
  const decoded = decodeSetting(contract, entry.string());
  return {
    ...base,
    ...(decoded.ok ? { value: decoded.value } : { invalid: decoded.reason, raw: entry.string() }),
    revision: entry.revision,
    updated: entry.created.toISOString(),
  };
}

async function list(kv: KV | undefined, { json }: Options): Promise<void> {
  const rows = await Promise.all(allSettings.map((contract) => row(kv, contract)));
  if (json) return print(JSON.stringify(rows, null, 2));
  const table = [
    ['KEY', 'VALUE (bucket)', 'DEFAULT', 'ENV', 'READ BY'],
    ...rows.map((r) => [
      r.key,
      r.invalid !== undefined ? `${r.raw} (INVALID, ignored)` : r.value === undefined ? '-' : show(r.value),
      show(r.default),
      r.env ?? '',
      r.readers.length === PROCESSES.length ? 'every process' : r.readers.join(','),
    ]),
  ];
  const widths = table[0]!.map((_, column) => Math.min(48, Math.max(...table.map((line) => line[column]!.length))));
  for (const line of table) {
    print(line.map((cell, column) => (column === line.length - 1 ? cell : clip(cell, widths[column]!).padEnd(widths[column]!))).join('  '));
  }
  print(`\n"-": not in the bucket; each process uses its environment variable, else the default.`);
  if (!kv) print(`The bucket "${CONFIG_BUCKET}" does not exist yet: services create it at start, and set creates it.`);
}

async function get(kv: KV | undefined, contract: SettingContract, { json }: Options): Promise<void> {
  const r = await row(kv, contract);
  if (json) return print(JSON.stringify(r, null, 2));
  print(`${contract.key}: ${contract.description}`);
  if (r.invalid !== undefined) {
    print(`  bucket:   ${r.raw}  INVALID (revision ${r.revision}): ${r.invalid}`);
    print(`            processes ignore it and keep their previous value; set a valid one or unset it.`);
  } else if (r.value !== undefined) {
    print(`  value:    ${show(r.value)}  (bucket, revision ${r.revision}, ${r.updated})`);
  } else {
    print(`  value:    not in the bucket: each process uses ${contract.env ? `${contract.env} if set, else ` : ''}the default`);
  }
  print(`  default:  ${show(contract.default)}`);
  if (contract.env) print(`  env:      ${contract.env} (read at start)`);
  print(`  read by:  ${contract.readers.join(', ')}`);
  print(`  accepts:  ${describe(contract.value.schema)}`);
}

async function set(kv: KV, contract: SettingContract, text: string): Promise<void> {
  const decoded = decodeSetting(contract, text);
  if (!decoded.ok) throw new UsageError(`refused, nothing written: ${decoded.reason}\n${accepts(contract)}`, 1);
  const previous = await kv.get(contract.key);
  const revision = await putSetting(kv, contract, decoded.value);
  const was = previous?.operation === 'PUT' ? previous.string() : 'not set';
  print(`${contract.key} = ${show(decoded.value)} (revision ${revision}; was ${was}). Processes reading it apply it now.`);
}

async function unset(kv: KV, contract: SettingContract): Promise<void> {
  const previous = await kv.get(contract.key);
  if (previous?.operation !== 'PUT') {
    print(`${contract.key} is not in the bucket; nothing to do.`);
    return;
  }
  await kv.delete(contract.key);
  print(
    `${contract.key} removed (was ${previous.string()}). Processes go back to ${contract.env ? `${contract.env} or ` : ''}the default ${show(contract.default)}.`,
  );
}

async function history(kv: KV | undefined, contract: SettingContract, { json }: Options): Promise<void> {
  const entries: KvEntry[] = [];
  if (kv) for await (const entry of await kv.history({ key: contract.key })) entries.push(entry);
  const rows = entries.map((entry) => {
    const text = entry.operation === 'PUT' ? entry.string() : undefined;
    const decoded = text === undefined ? undefined : decodeSetting(contract, text);
    return {
      revision: entry.revision,
      time: entry.created.toISOString(),
      operation: entry.operation,
      ...(text === undefined ? {} : { value: text }),
      ...(decoded && !decoded.ok ? { refused: decoded.reason } : {}),
    };
  });
  if (json) return print(JSON.stringify(rows, null, 2));
  if (rows.length === 0) {
    print(`${contract.key} has no revisions in the bucket: it was never set (or was purged).`);
    return;
  }
  for (const r of rows) {
    const what = r.operation === 'PUT' ? r.value! : r.operation === 'DEL' ? '(unset)' : '(purged)';
    print(`${String(r.revision).padStart(6)}  ${r.time}  ${what}${r.refused ? `  <- refused by the processes: ${r.refused}` : ''}`);
  }
}

// ---------------------------------------------------------------------------
// Output

function print(line: string): void {
  process.stdout.write(`${line}\n`);
}

function show(value: unknown): string {
  return JSON.stringify(value);
}

function clip(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, width - 3)}...`;
}

function accepts(contract: SettingContract): string {
  return `${contract.key} accepts ${describe(contract.value.schema)}; e.g. npm run config -- set ${contract.key} ${example(contract)}`;
}

function example(contract: SettingContract): string {
  const text = show(contract.default);
  return typeof contract.default === 'string' ? (contract.default as string) : /^[\w.-]+$/.test(text) ? text : `'${text}'`;
}

/** A short reading of a schema: type and bounds, or the allowed words. */
function describe(schema: TSchema): string {
  if (Array.isArray(schema.anyOf)) return `one of ${schema.anyOf.map((option: TSchema) => option.const).join(', ')}`;
  const bounds = [
    schema.minimum !== undefined ? `>= ${schema.minimum}` : '',
    schema.maximum !== undefined ? `<= ${schema.maximum}` : '',
  ].filter(Boolean);
  switch (schema.type) {
    case 'integer':
      return `an integer${bounds.length > 0 ? ` ${bounds.join(' and ')}` : ''}`;
    case 'number':
      return `a number${bounds.length > 0 ? ` ${bounds.join(' and ')}` : ''}`;
    case 'boolean':
      return 'true or false';
    case 'string':
      return 'text';
    case 'object':
      return `a JSON object${schema.description ? ` (${schema.description})` : ''}`;
    default:
      return JSON.stringify(schema);
  }
}

main(process.argv.slice(2)).catch((error: unknown) => {
  if (error instanceof UsageError) {
    process.stderr.write(`${error.message}\n`);
    process.exitCode = error.exitCode;
  } else if (error instanceof ConfigError) {
    process.stderr.write(`refused, nothing written: ${error.message}\n`);
    process.exitCode = 1;
  } else {
    process.stderr.write(`config: ${(error as Error).stack ?? String(error)}\n`);
    process.exitCode = 1;
  }
});
