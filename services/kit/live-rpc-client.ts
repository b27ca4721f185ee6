// An RpcClient that follows the live `kit.*` settings: a change of any of
// them reconfigures the client (RpcClient.configure), so calls from then on
// use the new timeout and retries, and a breaker change starts fresh, closed
// circuits. Options given in code (tests pin a timeout or a breaker window)
// win over the live values.
import type { NatsConnection } from 'nats';
import { settings } from '../../subjects/index.ts';
import type { LiveSettings } from './live-config.ts';
import { RpcClient, type RpcClientOptions } from './rpc-client.ts';

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
  readonly #unsubscribe: (() => void)[];

  constructor(nc: NatsConnection, live: LiveSettings, fixed: Partial<RpcClientOptions> = {}) {
    super(nc, optionsFrom(live, fixed));
    const follow = () => this.configure(optionsFrom(live, fixed));
    this.#unsubscribe = [
      kit.rpcTimeoutMs,
      kit.rpcRetries,
      kit.breakerErrorPercentage,
      kit.breakerVolumeThreshold,
      kit.breakerResetMs,
    ].map((contract) => live.onChange(contract, follow));
  }

  override close(): void {
    for (const unsubscribe of this.#unsubscribe) unsubscribe();
    super.close();
  }
}
