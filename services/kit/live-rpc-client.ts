// An RpcClient that follows the live `kit.*` settings: a change of any of
// them reconfigures the client (RpcClient.configure), so calls from then on
// use the new timeout and retries, and a breaker change starts fresh, closed
// circuits. Options given in code (tests pin a timeout or a breaker window)
// win over the live values.
//
// Given the contracts its process declares it calls (a ServiceDefinition's
// `calls`, the BFF's registry entry), it refuses any other with an
// UndeclaredCallError before anything is sent: the declaration, which the
// AsyncAPI document and nats.conf's test read, cannot drift from the code.
import type { NatsConnection } from 'nats';
import { settings, type ReplyOf, type RequestOf, type RpcContract } from '../../subjects/index.ts';
import type { LiveSettings } from './live-config.ts';
import { RpcClient, type CallOptions, type RpcClientOptions } from './rpc-client.ts';

/** A call to a contract the calling process did not declare in its `calls`: a bug of that process, never sent. */
export class UndeclaredCallError extends Error {
  override readonly name = 'UndeclaredCallError';
  readonly process: string;
  readonly subject: string;
  constructor(process: string, subject: string) {
    super(`${process} calls ${subject} without declaring it: add it to the calls of ${process} (its app.ts, or the registry for the BFF)`);
    this.process = process;
    this.subject = subject;
  }
}

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
  readonly #process: string;
  /** Subjects the process may call; undefined: any. */
  readonly #declared: ReadonlySet<string> | undefined;

  constructor(nc: NatsConnection, live: LiveSettings, fixed: Partial<RpcClientOptions> = {}, declared?: readonly RpcContract[]) {
    super(nc, optionsFrom(live, fixed));
    this.#process = live.process;
    this.#declared = declared && new Set(declared.map((contract) => contract.subject));
    const follow = () => this.configure(optionsFrom(live, fixed));
    this.#unsubscribe = [kit.rpcTimeoutMs, kit.rpcRetries, kit.breakerErrorPercentage, kit.breakerVolumeThreshold, kit.breakerResetMs].map(
      (contract) => live.onChange(contract, follow),
    );
  }

  override call<C extends RpcContract>(contract: C, input: RequestOf<C>, options?: CallOptions): Promise<ReplyOf<C>> {
    if (this.#declared && !this.#declared.has(contract.subject)) {
      return Promise.reject(new UndeclaredCallError(this.#process, contract.subject));
    }
    return super.call(contract, input, options);
  }

  override close(): void {
    for (const unsubscribe of this.#unsubscribe) unsubscribe();
    super.close();
  }
}
