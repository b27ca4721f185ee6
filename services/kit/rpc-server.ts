// Request-reply endpoints on the NATS services framework, so `nats micro
// ls|info|stats` see every service and endpoint and queue groups balance the
// instances. Every request is checked against its contract on the way in and
// every reply on the way out; whatever a handler throws goes back as a NATS
// micro error with our stable code. No request is left unanswered.
import { headers as natsHeaders, type NatsConnection, type Service, type ServiceMsg } from 'nats';
import {
  ERROR_CODE_HEADER,
  type ReplyOf,
  type RequestOf,
  type RpcContract,
} from '../../subjects/index.ts';
import { ServiceError, toServiceError } from './errors.ts';
import type { Logger } from './log.ts';
import { SpanKind, withIncomingSpan } from './tracing.ts';
import { microStatsCounter, type AnswerFailure, type RequestObserver } from './metrics.ts';

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
  const service = await nc.services.add({ ...info, queue: info.name });
  let inFlight = 0;
  let idle: (() => void) | undefined;
  // Replies wait for the end of the current turn of the event loop and leave
  // together: answers completing in one turn (database results arriving on
  // several pool connections) then cost one socket write, not one each.
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
        // Every answer counts in `nats micro stats` with its async time, and in the metrics.
        const seconds = (performance.now() - started) / 1000;
        countInStats(seconds, failure);
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
        void withIncomingSpan(subject, SpanKind.SERVER, msg, serve, msg);
      },
    });
    // The endpoint's stats exist once it is added; no request can arrive before this line runs.
    const countInStats = microStatsCounter(service, subject);
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
