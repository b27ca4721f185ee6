// Typed request-reply client: `call(contract, input)` resolves with the reply
// the contract promises or rejects with a ServiceError, never anything else.
//
// - One reply subscription per client (`<inbox>.*`) routes every reply by its
//   token, without nats.js's per-request bookkeeping.
// - Every call has a timeout; idempotent operations are retried on transient
//   failures (p-retry); each remote operation has a circuit breaker (opossum)
//   that fails fast while the remote keeps timing out or is absent.
import CircuitBreaker from 'opossum';
import pRetry from 'p-retry';
import { createInbox, headers as natsHeaders, type Msg, type NatsConnection, type Subscription } from 'nats';
import {
  ERROR_CODE_HEADER,
  isErrorCode,
  type ErrorCode,
  type ReplyOf,
  type RequestOf,
  type RpcContract,
} from '../../subjects/index.ts';
import { ServiceError, toServiceError } from './errors.ts';
import { SpanKind, injectTraceContext, withMessagingSpan, context } from './tracing.ts';

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
  timer: NodeJS.Timeout;
}

type Send = (contract: RpcContract, payload: Uint8Array, timeoutMs: number) => Promise<Msg>;

export class RpcClient {
  readonly #nc: NatsConnection;
  readonly #options: Required<Omit<RpcClientOptions, 'breaker'>> & { breaker: RpcClientOptions['breaker'] };
  readonly #inbox: string;
  readonly #replies: Subscription;
  readonly #pending = new Map<string, Pending>();
  readonly #breakers = new Map<string, CircuitBreaker<Parameters<Send>, Msg>>();
  #nextToken = 0;

  constructor(nc: NatsConnection, options: RpcClientOptions) {
    this.#nc = nc;
    this.#options = { retries: 2, ...options, breaker: options.breaker };
    this.#inbox = createInbox();
    this.#replies = nc.subscribe(`${this.#inbox}.*`, { callback: (_error, msg) => this.#settle(msg) });
  }

  /** Sends `input` to `contract.subject` and resolves with its checked reply. */
  async call<C extends RpcContract>(contract: C, input: RequestOf<C>, options: CallOptions = {}): Promise<ReplyOf<C>> {
    // A request that breaks the contract never leaves the process.
    if (!contract.request.check(input)) throw toServiceError(violation(contract, input));
    const payload = Buffer.from(JSON.stringify(input));
    const timeoutMs = options.timeoutMs ?? this.#options.timeoutMs;
    const breaker = this.#breakerFor(contract);
    const attempt = () => breaker.fire(contract, payload, timeoutMs).catch(rethrowOpenCircuit(contract));
    const msg = contract.idempotent && this.#options.retries > 0
      ? await pRetry(attempt, {
          retries: this.#options.retries,
          minTimeout: 20,
          maxTimeout: 200,
          randomize: true,
          shouldRetry: ({ error }) => error instanceof ServiceError && error.transient && !isOpenCircuit(error),
        })
      : await attempt();
    return decodeReply(contract, msg);
  }

  /** Stops listening for replies; calls still waiting fail with SERVICE_UNAVAILABLE. */
  close(): void {
    this.#replies.unsubscribe();
    for (const [token, pending] of this.#pending) {
      clearTimeout(pending.timer);
      pending.reject(new ServiceError('SERVICE_UNAVAILABLE', 'client closed'));
      this.#pending.delete(token);
    }
    for (const breaker of this.#breakers.values()) breaker.shutdown();
  }

  /** The state of the breaker of one remote operation, for health and metrics. */
  breakerState(subject: string): 'closed' | 'open' | 'halfOpen' {
    const breaker = this.#breakers.get(subject);
    if (!breaker) return 'closed';
    return breaker.opened ? 'open' : breaker.halfOpen ? 'halfOpen' : 'closed';
  }

  #breakerFor(contract: RpcContract): CircuitBreaker<Parameters<Send>, Msg> {
    let breaker = this.#breakers.get(contract.subject);
    if (!breaker) {
      const settings = this.#options.breaker ?? {};
      breaker = new CircuitBreaker<Parameters<Send>, Msg>(this.#send, {
        name: contract.subject,
        timeout: false, // each send has its own timer
        errorThresholdPercentage: settings.errorThresholdPercentage ?? 50,
        volumeThreshold: settings.volumeThreshold ?? 5,
        resetTimeout: settings.resetTimeoutMs ?? 5000,
        rollingCountTimeout: 10_000,
        // Only an absent or silent remote opens the circuit, not a refused request.
        errorFilter: (error) => !(error instanceof ServiceError && error.transient),
      });
      this.#breakers.set(contract.subject, breaker);
    }
    return breaker;
  }

  #send: Send = (contract, payload, timeoutMs) =>
    withMessagingSpan(contract.subject, 'send', SpanKind.CLIENT, context.active(), () => {
      const token = (this.#nextToken++).toString(36);
      const headers = natsHeaders();
      injectTraceContext(headers);
      return new Promise<Msg>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.#pending.delete(token);
          reject(new ServiceError('TIMEOUT', `${contract.subject} did not answer within ${timeoutMs} ms`));
        }, timeoutMs);
        this.#pending.set(token, { resolve, reject, timer });
        try {
          this.#nc.publish(contract.subject, payload, { reply: `${this.#inbox}.${token}`, headers });
        } catch (error) {
          clearTimeout(timer);
          this.#pending.delete(token);
          reject(new ServiceError('SERVICE_UNAVAILABLE', `cannot send ${contract.subject}: ${(error as Error).message}`));
        }
      });
    });

  #settle(msg: Msg): void {
    const token = msg.subject.slice(this.#inbox.length + 1);
    const pending = this.#pending.get(token);
    if (!pending) return; // already timed out
    this.#pending.delete(token);
    clearTimeout(pending.timer);
    const failure = remoteFailure(msg);
    if (failure) pending.reject(failure);
    else pending.resolve(msg);
  }
}

/** A reply that is an error: no responders (503 status) or a NATS micro error. */
function remoteFailure(msg: Msg): ServiceError | undefined {
  const headers = msg.headers;
  if (!headers) return undefined;
  if (headers.hasError && headers.code === 503 && msg.data.length === 0) {
    return new ServiceError('SERVICE_UNAVAILABLE', `no instance answers ${msg.subject}`);
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


function violation(contract: RpcContract, input: unknown): unknown {
  try {
    contract.request.assert(input, `${contract.subject} request`);
  } catch (error) {
    return error;
  }
  return undefined;
}
