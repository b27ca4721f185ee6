// Live settings: the values of subjects/settings.ts as they are right now.
// Each value starts as its default, replaced by its environment variable when
// set, replaced by the key in the NATS KV bucket `config` when present. The
// process watches the bucket and applies a change at once: `get()` returns the
// new value and `onChange()` listeners run. A value that breaks its schema is
// refused (a warning with the reason) and the current one stays; deleting a key
// goes back to the environment or the default.
import pRetry from 'p-retry';
import type { KV, KvEntry, NatsConnection, QueuedIterator } from 'nats';
import {
  CONFIG_BUCKET,
  CONFIG_HISTORY,
  checkSetting,
  decodeSetting,
  encodeSetting,
  settingByKey,
  settingsOf,
  type SettingContract,
  type ValueOf,
} from '../../subjects/index.ts';
import { ConfigError } from './config.ts';
import type { Logger } from './log.ts';

export type SettingSource = 'bucket' | 'environment' | 'default';

export interface SettingState {
  value: unknown;
  source: SettingSource;
  /** The bucket revision the value came from. */
  revision?: number;
}

export interface LiveSettingsOptions {
  log: Logger;
  /**
   * Start values by environment variable name: the process's loaded settings
   * (typed) take precedence over `process.env` (text).
   */
  environment?: Record<string, unknown>;
  /** Replicas of the bucket when this process creates it. */
  replicas?: number;
}

type Listener = (value: unknown, previous: unknown) => void;

/** Opens the bucket, creating it when absent (the first process to start makes it). */
export async function openConfigBucket(nc: NatsConnection, replicas = 1): Promise<KV> {
  return nc.jetstream().views.kv(CONFIG_BUCKET, {
    history: CONFIG_HISTORY,
    replicas,
    description: 'Live settings of the shop (subjects/settings.ts); npm run config -- ls',
  });
}

/** Validates `value` for `contract` and writes it; throws ConfigError, writing nothing, when it does not fit. */
export async function putSetting<S extends SettingContract>(kv: KV, contract: S, value: unknown): Promise<number> {
  const checked = checkSetting(contract, value);
  if (!checked.ok) throw new ConfigError(checked.reason);
  return kv.put(contract.key, encodeSetting(checked.value));
}

export class LiveSettings {
  readonly process: string;
  readonly #log: Logger;
  readonly #contracts: Map<string, SettingContract>;
  /** Environment or default: what a key falls back to when it leaves the bucket. */
  readonly #base = new Map<string, SettingState>();
  readonly #current = new Map<string, SettingState>();
  readonly #listeners = new Map<string, Set<Listener>>();
  #watch: QueuedIterator<KvEntry> | undefined;
  #watching: Promise<void> | undefined;

  private constructor(process: string, options: LiveSettingsOptions) {
    this.process = process;
    this.#log = options.log.child({ component: 'live-settings' });
    this.#contracts = new Map(settingsOf(process).map((contract) => [contract.key, contract]));
    const problems: string[] = [];
    for (const contract of this.#contracts.values()) {
      const start = startValue(contract, options.environment ?? {});
      if ('problem' in start) problems.push(start.problem);
      else this.#base.set(contract.key, start);
    }
    if (problems.length > 0) {
      throw new ConfigError(`Invalid configuration. Fix these environment variables:\n  ${problems.join('\n  ')}`);
    }
    for (const [key, state] of this.#base) this.#current.set(key, state);
  }

  /** Settings from the environment and defaults only, never changing (tools, tests of one part). */
  static fixed(process: string, options: LiveSettingsOptions): LiveSettings {
    return new LiveSettings(process, options);
  }

  /** Reads the bucket's current values for `process`, then keeps following the bucket until `stop()`. */
  static async open(nc: NatsConnection, process: string, options: LiveSettingsOptions): Promise<LiveSettings> {
    const live = new LiveSettings(process, options);
    // Processes starting together on a fresh cluster race to create the replicated bucket; retry the loser.
    const kv = await pRetry(() => openConfigBucket(nc, options.replicas), {
      retries: 5,
      minTimeout: 500,
      onFailedAttempt: ({ error, retriesLeft }) => live.#log.warn({ err: error, retriesLeft }, 'config bucket setup failed; retrying'),
    });
    const { state } = await (await nc.jetstreamManager()).streams.info(`KV_${CONFIG_BUCKET}`);
    // Current values first, so the process starts with them; then every change after that point.
    for (const key of live.#contracts.keys()) {
      const entry = await kv.get(key);
      if (entry) live.#apply(entry, true);
    }
    live.#watch = await kv.watch({ resumeFromRevision: state.last_seq + 1 });
    live.#watching = live.#follow(live.#watch);
    return live;
  }

  /** The value of `contract` now. */
  get<S extends SettingContract>(contract: S): ValueOf<S> {
    return this.#state(contract).value as ValueOf<S>;
  }

  /** Where the current value of `contract` comes from. */
  state(contract: SettingContract): Readonly<SettingState> {
    return { ...this.#state(contract) };
  }

  /** Calls `listener` after every change of `contract` (not now); returns the unsubscribe. */
  onChange<S extends SettingContract>(contract: S, listener: (value: ValueOf<S>, previous: ValueOf<S>) => void): () => void {
    this.#state(contract);
    const listeners = this.#listeners.get(contract.key) ?? new Set();
    this.#listeners.set(contract.key, listeners);
    const entry = listener as Listener;
    listeners.add(entry);
    return () => listeners.delete(entry);
  }

  /** Stops following the bucket; values stay as they are. */
  async stop(): Promise<void> {
    this.#watch?.stop();
    await this.#watching;
  }

  #state(contract: SettingContract): SettingState {
    const state = this.#current.get(contract.key);
    if (!state) {
      throw new Error(`${this.process} does not read the setting ${contract.key}: add it to its readers in subjects/settings.ts`);
    }
    return state;
  }

  async #follow(watch: QueuedIterator<KvEntry>): Promise<void> {
    try {
      for await (const entry of watch) this.#apply(entry, false);
    } catch (error) {
      this.#log.error({ err: error }, 'stopped following the config bucket; settings keep their current values');
    }
  }

  #apply(entry: KvEntry, starting: boolean): void {
    const contract = this.#contracts.get(entry.key);
    if (!contract) {
      if (!settingByKey(entry.key)) {
        this.#log.warn({ key: entry.key, revision: entry.revision }, 'unknown key in the config bucket, ignored (npm run config -- ls)');
      }
      return;
    }
    const previous = this.#current.get(contract.key)!;
    // The start reads each key directly; the watch may bring the same revision again.
    if (previous.revision !== undefined && entry.revision <= previous.revision) return;
    let next: SettingState;
    if (entry.operation === 'PUT') {
      const decoded = decodeSetting(contract, entry.string());
      if (!decoded.ok) {
        this.#log.warn(
          { key: contract.key, revision: entry.revision, reason: decoded.reason, kept: previous.value },
          'setting refused: invalid value; the current one stays',
        );
        return;
      }
      next = { value: decoded.value, source: 'bucket', revision: entry.revision };
    } else {
      next = { ...this.#base.get(contract.key)!, revision: entry.revision };
    }
    this.#current.set(contract.key, next);
    if (sameValue(previous.value, next.value)) return;
    this.#log.info(
      { key: contract.key, value: next.value, previous: previous.value, source: next.source, revision: entry.revision },
      starting ? 'setting from the config bucket' : 'setting changed',
    );
    for (const listener of this.#listeners.get(contract.key) ?? []) {
      try {
        listener(next.value, previous.value);
      } catch (error) {
        this.#log.error({ err: error, key: contract.key }, 'applying a setting change failed');
      }
    }
  }
}

/** The environment's value of `contract`, or its default; a problem when the environment's value breaks the schema. */
function startValue(contract: SettingContract, environment: Record<string, unknown>): SettingState | { problem: string } {
  if (!contract.env) return { value: contract.default, source: 'default' };
  const given = environment[contract.env] ?? process.env[contract.env];
  if (given === undefined || given === '') return { value: contract.default, source: 'default' };
  const checked = typeof given === 'string' ? decodeSetting(contract, given) : checkSetting(contract, given);
  if (!checked.ok) return { problem: `${contract.env} (${JSON.stringify(given)}): ${checked.reason}` };
  return { value: checked.value, source: 'environment' };
}

function sameValue(a: unknown, b: unknown): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}

/** Keeps `log`'s level at `<process>.log_level`; child loggers follow (they inherit the level unless given one). */
export function followLogLevel(live: LiveSettings, log: Logger): void {
  const contract = settingByKey(`${live.process}.log_level`);
  if (!contract) return;
  const apply = (level: unknown) => {
    log.level = level as string;
  };
  apply(live.get(contract));
  live.onChange(contract, apply);
}
