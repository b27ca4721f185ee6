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
import { SpanKind, extractTraceContext, withMessagingSpan } from './tracing.ts';
import { countInMicroStats, type AnswerFailure, type RequestObserver } from './metrics.ts';

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
  // Every answer counts in `nats micro stats` with its async time, and in the metrics.
  const answered = (subject: string, started: number, failure: AnswerFailure | undefined) => {
    const seconds = (performance.now() - started) / 1000;
    countInMicroStats(service, subject, seconds, failure);
    observe?.(subject, seconds, failure);
  };
  let inFlight = 0;
  let idle: (() => void) | undefined;
  const done = () => {
    inFlight--;
    if (inFlight === 0) idle?.();
  };
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
    if (contract.service !== info.name) {
      throw new Error(`endpoint ${contract.subject} does not belong to service ${info.name}`);
    }
    const requestLog = log.child({ subject: contract.subject });
    const context: RequestContext = { log: requestLog };

    const answer = async (msg: ServiceMsg): Promise<AnswerFailure | undefined> => {
      let reply: unknown;
      try {
        let input: unknown;
        try {
          input = JSON.parse(msg.string());
        } catch {
          throw new ServiceError('VALIDATION_FAILED', `${contract.subject} request is not valid JSON`);
        }
        contract.request.assert(input, `${contract.subject} request`);
        reply = await handle(input as RequestOf<RpcContract>, context);
      } catch (error) {
        return respondWithError(msg, error, requestLog);
      }
      if (!contract.reply.check(reply)) {
        // Our own bug, not the caller's: log it whole, send nothing internal.
        const violation = toServiceError(contract.reply.explain(reply, `${contract.subject} reply`));
        requestLog.error({ details: violation.details }, 'reply does not match its contract');
        return respondWithError(msg, new ServiceError('INTERNAL', 'internal error'), requestLog);
      }
      sendReply(msg, Buffer.from(JSON.stringify(reply)));
      return undefined;
    };

    service.addEndpoint(contract.endpoint, {
      subject: contract.subject,
      metadata: { description: contract.description, idempotent: String(contract.idempotent) },
      handler: (error, msg) => {
        if (error) {
          log.error({ err: error, subject: contract.subject }, 'endpoint subscription failed');
          return;
        }
        inFlight++;
        const started = performance.now();
        const parent = extractTraceContext(msg.headers);
        withMessagingSpan(contract.subject, 'process', SpanKind.SERVER, parent, () => answer(msg)).then((failure) => {
          answered(contract.subject, started, failure);
          done();
        }, (unexpected) => {
          // `answer` catches everything; this is the last guard so no request goes unanswered.
          try {
            answered(contract.subject, started, respondWithError(msg, unexpected, requestLog));
          } catch {
            // The connection is gone; the caller's timeout ends its wait.
          } finally {
            done();
          }
        });
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
