// Typed request-reply client: `call(contract, input)` resolves with the reply
// the contract promises or rejects with a ServiceError, never anything else.
//
// - Every call has a timeout; idempotent operations are retried on transient
//   failures (p-retry); each remote operation has a circuit breaker (opossum)
//   that fails fast while the remote keeps timing out or is absent. Every
//   attempt goes through the breaker's fire(), so it counts every outcome.
// - One reply subscription per client (`<inbox>.*`) routes every reply by a
//   counter token, and one timer per client sweeps expired calls: nats.js's
//   request() makes a random token, a timer and (with its default async
//   traces) an error object per request, which every lookup between services
//   would pay (bench/rpc.ts measures the two side by side).
// - Each attempt is a `<subject> send` span whose context rides in the
//   request's headers (tracing.ts).
import { performance } from 'node:perf_hooks';
import CircuitBreaker from 'opossum';
import pRetry from 'p-retry';
import { createInbox, type Msg, type NatsConnection, type Subscription } from 'nats';
import { ERROR_CODE_HEADER, isErrorCode, type ErrorCode, type ReplyOf, type RequestOf, type RpcContract } from '../../subjects/index.ts';
import { ServiceError, toServiceError } from './errors.ts';
import { SpanKind, startSend, type OutgoingTrace } from './tracing.ts';

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

interface Pending {
  resolve(msg: Msg): void;
  reject(error: ServiceError): void;
  /** performance.now() after which the call has timed out. */
  deadline: number;
  subject: string;
  timeoutMs: number;
  trace: OutgoingTrace;
}

/** One remote operation's breaker; its fire(payload, timeoutMs) sends one attempt when the circuit lets it. */
type Breaker = CircuitBreaker<[payload: Uint8Array, timeoutMs: number], Msg>;

export class RpcClient {
  readonly #nc: NatsConnection;
  #options: Required<Omit<RpcClientOptions, 'breaker'>> & { breaker: RpcClientOptions['breaker'] };
  /** `<inbox>.`: a reply's subject is this plus the call's token. */
  readonly #replyPrefix: string;
  readonly #replies: Subscription;
  readonly #pending = new Map<string, Pending>();
  readonly #breakers = new Map<string, Breaker>();
  #nextToken = 0;
  #sweepTimer: NodeJS.Timeout | undefined;
  /** When the sweep timer fires; Infinity when it is not set. */
  #sweepAt = Number.POSITIVE_INFINITY;
  #closed = false;

  constructor(nc: NatsConnection, options: RpcClientOptions) {
    this.#nc = nc;
    this.#options = { retries: 2, ...options, breaker: options.breaker };
    this.#replyPrefix = `${createInbox()}.`;
    this.#replies = nc.subscribe(`${this.#replyPrefix}*`, {
      callback: (error, msg) => {
        // A subscription error carries no reply; the calls it concerns end by timeout.
        if (!error) this.#settle(msg);
      },
    });
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
    this.#replies.unsubscribe();
    clearTimeout(this.#sweepTimer);
    this.#sweepTimer = undefined;
    this.#sweepAt = Number.POSITIVE_INFINITY;
    for (const [token, pending] of this.#pending) {
      this.#pending.delete(token);
      const error = new ServiceError('SERVICE_UNAVAILABLE', 'client closed');
      pending.trace.end(error);
      pending.reject(error);
    }
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

  #send(subject: string, payload: Uint8Array, timeoutMs: number): Promise<Msg> {
    // Closed while a retry waited.
    if (this.#closed) return Promise.reject(new ServiceError('SERVICE_UNAVAILABLE', 'client closed'));
    const token = (this.#nextToken++).toString(36);
    const trace = startSend(subject, SpanKind.CLIENT);
    return new Promise<Msg>((resolve, reject) => {
      const deadline = performance.now() + timeoutMs;
      const pending: Pending = { resolve, reject, deadline, subject, timeoutMs, trace };
      try {
        this.#nc.publish(subject, payload, { reply: this.#replyPrefix + token, headers: trace.headers });
      } catch (error) {
        this.#fail(pending, new ServiceError('SERVICE_UNAVAILABLE', `cannot send ${subject}: ${(error as Error).message}`));
        return;
      }
      this.#pending.set(token, pending);
      if (deadline < this.#sweepAt) this.#armSweep(deadline);
    });
  }

  #settle(msg: Msg): void {
    const token = msg.subject.slice(this.#replyPrefix.length);
    const pending = this.#pending.get(token);
    if (!pending) return; // already timed out
    this.#pending.delete(token);
    const failure = remoteFailure(msg, pending.subject);
    if (failure) {
      this.#fail(pending, failure);
      return;
    }
    pending.trace.end();
    pending.resolve(msg);
  }

  #fail(pending: Pending, error: ServiceError): void {
    pending.trace.end(error);
    pending.reject(error);
  }

  /** Sets the one timer to fire at `at`, the earliest deadline of the calls waiting. */
  #armSweep(at: number): void {
    clearTimeout(this.#sweepTimer);
    this.#sweepAt = at;
    this.#sweepTimer = setTimeout(this.#sweep, Math.max(0, at - performance.now()));
  }

  /** Fails the calls whose deadline has passed and sets the timer for the next deadline. */
  #sweep = (): void => {
    this.#sweepTimer = undefined;
    this.#sweepAt = Number.POSITIVE_INFINITY;
    const now = performance.now();
    let next = Number.POSITIVE_INFINITY;
    for (const [token, pending] of this.#pending) {
      if (pending.deadline <= now) {
        this.#pending.delete(token);
        this.#fail(pending, new ServiceError('TIMEOUT', `${pending.subject} did not answer within ${pending.timeoutMs} ms`));
      } else if (pending.deadline < next) {
        next = pending.deadline;
      }
    }
    if (next !== Number.POSITIVE_INFINITY) this.#armSweep(next);
  };
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
