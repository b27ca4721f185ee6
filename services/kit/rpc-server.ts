// Request-reply endpoints on the NATS services framework, so `nats micro
// ls|info|stats` see every service and endpoint and queue groups balance the
// instances. Every request is checked against its contract on the way in and
// every reply on the way out; whatever a handler throws goes back as a NATS
// micro error with our stable code. No request is left unanswered.
//
// `nats micro stats` counts every request, but nats.js times only the
// synchronous call of a handler and counts only an error it throws, so for
// these async handlers its processing time is ~0 and its error count 0. Each
// endpoint's stats therefore carry the whole figures in their `data` field
// (the framework's statsHandler); the Prometheus metrics (metrics.ts) have
// them too, with latency histograms. docs/tracing.md has the details.
import { headers as natsHeaders, type NatsConnection, type Service, type ServiceMsg } from 'nats';
import { ERROR_CODE_HEADER, type ReplyOf, type RequestOf, type RpcContract } from '../../subjects/index.ts';
import { ServiceError, toServiceError } from './errors.ts';
import type { Logger } from './log.ts';
import { SpanKind, incomingTraceContext, withMessagingSpan } from './tracing.ts';
import type { AnswerFailure, RequestObserver } from './metrics.ts';

export interface RequestContext {
  /** Child logger carrying the subject (and, through the mixin, the trace ids). */
  log: Logger;
}

export interface Endpoint<C extends RpcContract = RpcContract> {
  contract: C;
  handle(input: RequestOf<C>, request: RequestContext): Promise<ReplyOf<C>>;
}

/** Pairs a contract with its handler, typed by the contract. */
export function endpoint<C extends RpcContract>(
  contract: C,
  handle: (input: RequestOf<C>, request: RequestContext) => Promise<ReplyOf<C>>,
): Endpoint {
  return { contract, handle } as unknown as Endpoint;
}

export interface RpcServer {
  readonly service: Service;
  /** Stops taking requests, then waits (at most `timeoutMs`) for those in flight. */
  stop(timeoutMs: number): Promise<void>;
}

export async function serveEndpoints(
  nc: NatsConnection,
  info: { name: string; version: string; description: string },
  endpoints: readonly Endpoint[],
  log: Logger,
  /** Told of every answer with its whole duration (metrics.ts). */
  observe?: RequestObserver,
): Promise<RpcServer> {
  const answers = new Map<string, AnswerStats>();
  const service = await nc.services.add({
    ...info,
    queue: info.name,
    statsHandler: async (endpoint) => answers.get(endpoint.subject)?.snapshot() ?? null,
  });
  let inFlight = 0;
  let idle: (() => void) | undefined;
  // Replies wait for the end of the current turn of the event loop and leave
  // together: answers completing in one turn (database results arriving on
  // several pool connections) then cost one socket write, not one each
  // (bench:rpc part b, December 2026: 0.76-0.79x the raw responder batched,
  // 0.62-0.65x replying at once).
  let replies: { msg: ServiceMsg; data: Uint8Array }[] = [];
  const sendReplies = () => {
    const batch = replies;
    replies = [];
    for (const { msg, data } of batch) {
      try {
        msg.respond(data);
      } catch (error) {
        log.warn({ err: error }, 'reply could not be sent');
      }
    }
  };
  const sendReply = (msg: ServiceMsg, data: Uint8Array) => {
    if (replies.push({ msg, data }) === 1) setImmediate(sendReplies);
  };

  for (const { contract: c, handle } of endpoints) {
    const contract: RpcContract = c;
    const subject = contract.subject;
    if (contract.service !== info.name) {
      throw new Error(`endpoint ${subject} does not belong to service ${info.name}`);
    }
    const requestLog = log.child({ subject });
    const stats = new AnswerStats();
    answers.set(subject, stats);
    const context: RequestContext = { log: requestLog };

    /** One request from arrival to answer: checked, handled, answered, then counted. */
    const serve = async (msg: ServiceMsg): Promise<void> => {
      const started = performance.now();
      let failure: AnswerFailure | undefined;
      try {
        let reply: unknown;
        try {
          let input: unknown;
          try {
            input = JSON.parse(msg.string());
          } catch {
            throw new ServiceError('VALIDATION_FAILED', `${subject} request is not valid JSON`);
          }
          contract.request.assert(input, `${subject} request`);
          reply = await handle(input as RequestOf<RpcContract>, context);
        } catch (error) {
          failure = respondWithError(msg, error, requestLog);
          return;
        }
        if (contract.reply.check(reply)) {
          sendReply(msg, Buffer.from(JSON.stringify(reply)));
        } else {
          // Our own bug, not the caller's: log it whole, send nothing internal.
          const violation = toServiceError(contract.reply.explain(reply, `${subject} reply`));
          requestLog.error({ details: violation.details }, 'reply does not match its contract');
          failure = respondWithError(msg, new ServiceError('INTERNAL', 'internal error'), requestLog);
        }
      } catch (unexpected) {
        // The last guard, so that no request goes unanswered while an answer can still be sent.
        try {
          failure = respondWithError(msg, unexpected, requestLog);
        } catch {
          // The connection is gone; the caller's timeout ends its wait.
        }
      } finally {
        // Every answer counts, with its async time, in the stats' data and in the metrics.
        const seconds = (performance.now() - started) / 1000;
        stats.count(seconds, failure);
        observe?.(subject, seconds, failure);
        inFlight--;
        if (inFlight === 0) idle?.();
      }
    };

    service.addEndpoint(contract.endpoint, {
      subject,
      metadata: { description: contract.description, idempotent: String(contract.idempotent) },
      handler: (error, msg) => {
        if (error) {
          log.error({ err: error, subject }, 'endpoint subscription failed');
          return;
        }
        inFlight++;
        void withMessagingSpan(subject, 'process', SpanKind.SERVER, incomingTraceContext(msg), () => serve(msg));
      },
    });
  }

  // The server has the subscriptions once this returns: a started service is reachable at once.
  await nc.flush();

  return {
    service,
    async stop(timeoutMs) {
      await service.stop();
      if (inFlight > 0) {
        log.info({ inFlight }, 'waiting for requests in flight');
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, timeoutMs);
          idle = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
      // Answered is not yet sent: send the waiting replies before the connection drains.
      sendReplies();
    },
  };
}

/** One endpoint's answers, timed from arrival to answer: the `data` of its `nats micro stats`. */
class AnswerStats {
  #answered = 0;
  #errors = 0;
  #nanos = 0;
  #lastError: string | undefined;

  count(seconds: number, failure: AnswerFailure | undefined): void {
    this.#answered++;
    this.#nanos += Math.round(seconds * 1e9);
    if (failure) {
      this.#errors++;
      this.#lastError = `${failure.status} ${failure.code}: ${failure.message}`;
    }
  }

  /** Named as the framework names its own figures; times in nanoseconds. */
  snapshot() {
    return {
      num_requests: this.#answered,
      num_errors: this.#errors,
      processing_time: this.#nanos,
      average_processing_time: this.#answered > 0 ? Math.round(this.#nanos / this.#answered) : 0,
      ...(this.#lastError ? { last_error: this.#lastError } : {}),
    };
  }
}

/** Answers with a micro error; returns what was answered. */
function respondWithError(msg: ServiceMsg, error: unknown, log: Logger): AnswerFailure {
  const failure = toServiceError(error);
  if (failure.status >= 500) log.error({ err: error, code: failure.code }, 'request failed');
  else log.info({ code: failure.code, reason: failure.message }, 'request refused');
  const headers = natsHeaders();
  headers.set(ERROR_CODE_HEADER, failure.code);
  const body = { code: failure.code, message: failure.message, details: failure.details ?? null };
  msg.respondError(failure.status, failure.message, Buffer.from(JSON.stringify(body)), { headers });
  return { code: failure.code, status: failure.status, message: failure.message };
}
