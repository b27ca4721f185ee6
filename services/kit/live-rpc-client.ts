// An RpcClient that follows the live `kit.*` settings. The timeout is read
// per call. Retries and breaker settings are fixed inside an RpcClient, so a
// change of them starts a fresh inner client (its circuits start closed);
// calls already running finish on the one they started on, which closes once
// they are done. Options given in code (tests pin a timeout or a breaker
// window) win over the live values.
import type { NatsConnection } from 'nats';
import { settings, type ReplyOf, type RequestOf, type RpcContract } from '../../subjects/index.ts';
import type { LiveSettings } from './live-config.ts';
import { RpcClient, type CallOptions, type RpcClientOptions } from './rpc-client.ts';

const kit = settings.kit;

function optionsFrom(live: LiveSettings, fixed: Partial<RpcClientOptions>): RpcClientOptions {
  return {
    timeoutMs: fixed.timeoutMs ?? live.get(kit.rpcTimeoutMs),
    retries: fixed.retries ?? live.get(kit.rpcRetries),
    breaker: {
      errorThresholdPercentage: live.get(kit.breakerErrorPercentage),
      volumeThreshold: live.get(kit.breakerVolumeThreshold),
      resetTimeoutMs: live.get(kit.breakerResetMs),
      ...fixed.breaker,
    },
  };
}

export class LiveRpcClient extends RpcClient {
  readonly #nc: NatsConnection;
  readonly #live: LiveSettings;
  readonly #fixed: Partial<RpcClientOptions>;
  /** The client new calls go to; undefined: this instance's own (the first one). */
  #current: RpcClient | undefined;
  /** Calls in flight per client; a replaced client closes when its count reaches zero. */
  readonly #inFlight = new Map<RpcClient, number>();
  readonly #retired = new Set<RpcClient>();
  readonly #unsubscribe: (() => void)[];
  #closed = false;
  #baseClosed = false;

  constructor(nc: NatsConnection, live: LiveSettings, fixed: Partial<RpcClientOptions> = {}) {
    super(nc, optionsFrom(live, fixed));
    this.#nc = nc;
    this.#live = live;
    this.#fixed = fixed;
    this.#unsubscribe = [kit.rpcRetries, kit.breakerErrorPercentage, kit.breakerVolumeThreshold, kit.breakerResetMs].map(
      (contract) => live.onChange(contract, () => this.#replace()),
    );
  }

  /** The options new calls use now. */
  get options(): RpcClientOptions {
    return optionsFrom(this.#live, this.#fixed);
  }

  override async call<C extends RpcContract>(contract: C, input: RequestOf<C>, options: CallOptions = {}): Promise<ReplyOf<C>> {
    const timeoutMs = options.timeoutMs ?? this.#fixed.timeoutMs ?? this.#live.get(kit.rpcTimeoutMs);
    const target = this.#current ?? this;
    this.#inFlight.set(target, (this.#inFlight.get(target) ?? 0) + 1);
    try {
      return target === this
        ? await super.call(contract, input, { ...options, timeoutMs })
        : await target.call(contract, input, { ...options, timeoutMs });
    } finally {
      const left = (this.#inFlight.get(target) ?? 1) - 1;
      this.#inFlight.set(target, left);
      if (left === 0 && this.#retired.has(target)) this.#retire(target);
    }
  }

  override breakerState(subject: string): 'closed' | 'open' | 'halfOpen' {
    return this.#current ? this.#current.breakerState(subject) : super.breakerState(subject);
  }

  override close(): void {
    this.#closed = true;
    for (const unsubscribe of this.#unsubscribe) unsubscribe();
    for (const client of this.#retired) this.#closeOne(client);
    this.#retired.clear();
    if (this.#current) this.#current.close();
    this.#closeOne(this);
  }

  #replace(): void {
    if (this.#closed) return;
    const previous = this.#current ?? this;
    this.#current = new RpcClient(this.#nc, optionsFrom(this.#live, this.#fixed));
    this.#retired.add(previous);
    if ((this.#inFlight.get(previous) ?? 0) === 0) this.#retire(previous);
  }

  #retire(client: RpcClient): void {
    this.#retired.delete(client);
    this.#inFlight.delete(client);
    this.#closeOne(client);
  }

  #closeOne(client: RpcClient): void {
    if (client !== this) return client.close();
    if (this.#baseClosed) return;
    this.#baseClosed = true;
    super.close();
  }
}
