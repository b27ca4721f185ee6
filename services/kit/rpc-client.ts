// Typed request-reply client: `call(contract, input)` resolves with the reply
// the contract promises or rejects with a ServiceError, never anything else.
//
// - Every call has a timeout; idempotent operations are retried on transient
//   failures (p-retry); each remote operation has a circuit breaker (opossum)
//   that fails fast while the remote keeps timing out or is absent. Every
//   attempt goes through the breaker's fire(), so it counts every outcome.
// - Each attempt is a request and its reply; a reply that is an error (503
//   no responders, a micro error) becomes a ServiceError. The replies are
//   routed by the client's own subscription (rpc-own-routing.ts), a
//   shortcut around nats.js's request() that an A/B showed pays for itself
//   (bench:rpc part b, a fifth of the CPU per call);
//   SHOP_RPC_OWN_ROUTING=0 sends through request() (requestSender below).
// - Each attempt is a `<subject> send` span whose context rides in the
//   request's headers (tracing.ts).
import CircuitBreaker from 'opossum';
import pRetry from 'p-retry';
import { ErrorCode as NatsErrorCode, type Msg, type MsgHdrs, type NatsConnection, type NatsError } from 'nats';
import { ERROR_CODE_HEADER, isErrorCode, type ErrorCode, type ReplyOf, type RequestOf, type RpcContract } from '../../subjects/index.ts';
import { ServiceError, toServiceError } from './errors.ts';
import { OwnReplyRouting } from './rpc-own-routing.ts';
import { SpanKind, startSend } from './tracing.ts';

export interface RpcClientOptions {
  /** Default bound on one attempt. */
  timeoutMs: number;
  /** Further attempts for idempotent operations after a transient failure. */
  retries?: number;
  breaker?: {
    /** Percentage of failed calls in the rolling window that opens the circuit. */
    errorThresholdPercentage?: number;
    /** Calls in the window before the circuit may open. */
    volumeThreshold?: number;
    /** How long an open circuit fails fast before letting one call through. */
    resetTimeoutMs?: number;
  };
}

export interface CallOptions {
  timeoutMs?: number;
}

/** How a request leaves and its reply comes back: resolves with the reply, rejects with a ServiceError. */
export interface RequestSender {
  send(subject: string, payload: Uint8Array, headers: MsgHdrs | undefined, timeoutMs: number): Promise<Msg>;
  /** Calls still waiting fail with SERVICE_UNAVAILABLE. */
  close(): void;
}

/** The library's way: nc.request(), its errors as ServiceErrors. */
function requestSender(nc: NatsConnection): RequestSender {
  return {
    send: (subject, payload, headers, timeoutMs) =>
      nc.request(subject, payload, { timeout: timeoutMs, headers }).catch((error: NatsError) => {
        throw requestFailure(error, subject, timeoutMs);
      }),
    // A call still waiting ends by its timeout, or sooner when the connection closes.
    close() {},
  };
}

function requestFailure(error: NatsError, subject: string, timeoutMs: number): ServiceError {
  if (error.code === NatsErrorCode.Timeout) return new ServiceError('TIMEOUT', `${subject} did not answer within ${timeoutMs} ms`);
  if (error.code === NatsErrorCode.NoResponders) return new ServiceError('SERVICE_UNAVAILABLE', `no instance answers ${subject}`);
  return new ServiceError('SERVICE_UNAVAILABLE', `cannot send ${subject}: ${error.message}`);
}

/** One remote operation's breaker; its fire(payload, timeoutMs) sends one attempt when the circuit lets it. */
type Breaker = CircuitBreaker<[payload: Uint8Array, timeoutMs: number], Msg>;

export class RpcClient {
  #options: Required<Omit<RpcClientOptions, 'breaker'>> & { breaker: RpcClientOptions['breaker'] };
  readonly #sender: RequestSender;
  readonly #breakers = new Map<string, Breaker>();
  #closed = false;

  constructor(nc: NatsConnection, options: RpcClientOptions) {
    this.#options = { retries: 2, ...options, breaker: options.breaker };
    this.#sender = process.env.SHOP_RPC_OWN_ROUTING === '0' ? requestSender(nc) : new OwnReplyRouting(nc);
  }

  /** Sends `input` to `contract.subject` and resolves with its checked reply. */
  async call<C extends RpcContract>(contract: C, input: RequestOf<C>, options: CallOptions = {}): Promise<ReplyOf<C>> {
    if (this.#closed) throw new ServiceError('SERVICE_UNAVAILABLE', 'client closed');
    // A request that breaks the contract never leaves the process.
    if (!contract.request.check(input)) throw toServiceError(contract.request.explain(input, `${contract.subject} request`));
    const payload = Buffer.from(JSON.stringify(input));
    const timeoutMs = options.timeoutMs ?? this.#options.timeoutMs;
    const breaker = this.#breakerFor(contract);
    let msg: Msg;
    try {
      msg = await this.#attempt(contract, breaker, payload, timeoutMs);
    } catch (error) {
      if (!(contract.idempotent && this.#options.retries > 0 && isRetryable(error))) throw error;
      // p-retry takes over from the failed first attempt: same delays, same limit.
      const attempt = (attemptNumber: number) =>
        attemptNumber === 1 ? Promise.reject(error) : this.#attempt(contract, breaker, payload, timeoutMs);
      msg = await pRetry(attempt, {
        retries: this.#options.retries,
        minTimeout: 20,
        maxTimeout: 200,
        randomize: true,
        shouldRetry: ({ error: failure }) => isRetryable(failure),
      });
    }
    return decodeReply(contract, msg);
  }

  /** Stops listening for replies; calls still waiting fail with SERVICE_UNAVAILABLE. */
  close(): void {
    this.#closed = true;
    this.#sender.close();
    for (const breaker of this.#breakers.values()) breaker.shutdown();
  }

  /** The options calls use now. */
  get options(): RpcClientOptions {
    return this.#options;
  }

  /**
   * New options for calls from now on (live settings). Breakers are built
   * with their settings, so a breaker change starts fresh, closed circuits;
   * calls in flight finish on the ones they started with.
   */
  configure(options: RpcClientOptions): void {
    const breakerChanged = JSON.stringify(options.breaker ?? {}) !== JSON.stringify(this.#options.breaker ?? {});
    this.#options = { retries: 2, ...options, breaker: options.breaker };
    if (!breakerChanged) return;
    for (const breaker of this.#breakers.values()) breaker.shutdown();
    this.#breakers.clear();
  }

  /** The state of the breaker of one remote operation, for health and metrics. */
  breakerState(subject: string): 'closed' | 'open' | 'halfOpen' {
    const breaker = this.#breakers.get(subject);
    if (!breaker) return 'closed';
    return breaker.opened ? 'open' : breaker.halfOpen ? 'halfOpen' : 'closed';
  }

  #breakerFor(contract: RpcContract): Breaker {
    let breaker = this.#breakers.get(contract.subject);
    if (!breaker) {
      const settings = this.#options.breaker ?? {};
      const subject = contract.subject;
      breaker = new CircuitBreaker((payload: Uint8Array, timeoutMs: number) => this.#send(subject, payload, timeoutMs), {
        name: subject,
        timeout: false, // each send has its own deadline
        errorThresholdPercentage: settings.errorThresholdPercentage ?? 50,
        volumeThreshold: settings.volumeThreshold ?? 5,
        resetTimeout: settings.resetTimeoutMs ?? 5000,
        rollingCountTimeout: 10_000,
        // Nobody reads latency percentiles or snapshots; left on, opossum
        // would sort every latency of the window once a second.
        rollingPercentilesEnabled: false,
        enableSnapshots: false,
        // Only an absent or silent remote opens the circuit, not a refused request.
        errorFilter: (error) => !isBreakerFailure(error),
      });
      this.#breakers.set(contract.subject, breaker);
    }
    return breaker;
  }

  /** One attempt, if the operation's breaker lets it go. */
  #attempt(contract: RpcContract, breaker: Breaker, payload: Uint8Array, timeoutMs: number): Promise<Msg> {
    return breaker.fire(payload, timeoutMs).catch(rethrowOpenCircuit(contract));
  }

  async #send(subject: string, payload: Uint8Array, timeoutMs: number): Promise<Msg> {
    // Closed while a retry waited.
    if (this.#closed) throw new ServiceError('SERVICE_UNAVAILABLE', 'client closed');
    const trace = startSend(subject, SpanKind.CLIENT);
    let msg: Msg;
    try {
      msg = await this.#sender.send(subject, payload, trace.headers, timeoutMs);
    } catch (error) {
      trace.end(error as ServiceError);
      throw error;
    }
    const failure = remoteFailure(msg, subject);
    trace.end(failure);
    if (failure) throw failure;
    return msg;
  }
}

/** A failure that says the remote is absent or silent: it counts against the circuit. */
function isBreakerFailure(error: unknown): boolean {
  return error instanceof ServiceError && error.transient;
}

function isRetryable(error: unknown): boolean {
  return isBreakerFailure(error) && !isOpenCircuit(error as ServiceError);
}

/** A reply that is an error: no responders (503 status) or a NATS micro error. */
function remoteFailure(msg: Msg, subject: string): ServiceError | undefined {
  const headers = msg.headers;
  if (!headers) return undefined;
  if (headers.hasError && headers.code === 503 && msg.data.length === 0) {
    return new ServiceError('SERVICE_UNAVAILABLE', `no instance answers ${subject}`);
  }
  const status = headers.get('Nats-Service-Error-Code');
  if (!status) return undefined;
  const ours = headers.get(ERROR_CODE_HEADER);
  const code: ErrorCode = isErrorCode(ours) ? ours : statusToCode(Number(status));
  let message = headers.get('Nats-Service-Error') || 'remote error';
  let details: unknown;
  try {
    const body = JSON.parse(msg.string()) as { message?: unknown; details?: unknown };
    if (typeof body.message === 'string') message = body.message;
    details = body.details ?? undefined;
  } catch {
    // A micro error from a service that is not ours: keep the header text.
  }
  return new ServiceError(code, message, details);
}

function statusToCode(status: number): ErrorCode {
  if (status === 400) return 'VALIDATION_FAILED';
  if (status === 503) return 'SERVICE_UNAVAILABLE';
  if (status === 504 || status === 408) return 'TIMEOUT';
  return 'INTERNAL';
}

function decodeReply<C extends RpcContract>(contract: C, msg: Msg): ReplyOf<C> {
  let reply: unknown;
  try {
    reply = JSON.parse(msg.string());
  } catch {
    throw new ServiceError('INTERNAL', `${contract.subject} replied with invalid JSON`);
  }
  if (!contract.reply.check(reply)) {
    throw new ServiceError('INTERNAL', `${contract.subject} replied outside its contract`);
  }
  return reply as ReplyOf<C>;
}

const OPEN_CIRCUIT = 'circuit open';

function rethrowOpenCircuit(contract: RpcContract) {
  return (error: unknown): never => {
    if ((error as { code?: string }).code === 'EOPENBREAKER') {
      throw new ServiceError('SERVICE_UNAVAILABLE', `${contract.subject}: ${OPEN_CIRCUIT}, failing fast`, {
        circuit: 'open',
      });
    }
    throw error;
  };
}

function isOpenCircuit(error: ServiceError): boolean {
  return (error.details as { circuit?: string } | undefined)?.circuit === 'open';
}
