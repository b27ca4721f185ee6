// A shortcut around nats.js's request(), kept because an A/B showed it pays:
// bench:rpc part b, CPU per call in all processes 44-62 us with it, 57-94 us
// with request(), alternated runs (bench/README.md; docs/decisions.md,
// "Shortcuts around a library, measured"). SHOP_RPC_OWN_ROUTING=0 turns it
// off, for the A/B to be run again (rpc-client.ts: requestSender).
//
// One reply subscription per client (`<inbox>.*`) routes every reply by a
// counter token, and one timer per client sweeps expired calls, where
// request() makes a random token, a timer and a few promises per request.
import { performance } from 'node:perf_hooks';
import { createInbox, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from 'nats';
import { ServiceError } from './errors.ts';
import type { RequestSender } from './rpc-client.ts';

interface Pending {
  resolve(msg: Msg): void;
  reject(error: ServiceError): void;
  /** performance.now() after which the call has timed out. */
  deadline: number;
  subject: string;
  timeoutMs: number;
}

export class OwnReplyRouting implements RequestSender {
  readonly #nc: NatsConnection;
  /** `<inbox>.`: a reply's subject is this plus the call's token. */
  readonly #replyPrefix: string;
  readonly #replies: Subscription;
  readonly #pending = new Map<string, Pending>();
  #nextToken = 0;
  #sweepTimer: NodeJS.Timeout | undefined;
  /** When the sweep timer fires; Infinity when it is not set. */
  #sweepAt = Number.POSITIVE_INFINITY;

  constructor(nc: NatsConnection) {
    this.#nc = nc;
    this.#replyPrefix = `${createInbox()}.`;
    this.#replies = nc.subscribe(`${this.#replyPrefix}*`, {
      callback: (error, msg) => {
        // A subscription error carries no reply; the calls it concerns end by timeout.
        if (!error) this.#settle(msg);
      },
    });
  }

  send(subject: string, payload: Uint8Array, headers: MsgHdrs | undefined, timeoutMs: number): Promise<Msg> {
    const token = (this.#nextToken++).toString(36);
    return new Promise<Msg>((resolve, reject) => {
      const deadline = performance.now() + timeoutMs;
      try {
        this.#nc.publish(subject, payload, { reply: this.#replyPrefix + token, headers });
      } catch (error) {
        reject(new ServiceError('SERVICE_UNAVAILABLE', `cannot send ${subject}: ${(error as Error).message}`));
        return;
      }
      this.#pending.set(token, { resolve, reject, deadline, subject, timeoutMs });
      if (deadline < this.#sweepAt) this.#armSweep(deadline);
    });
  }

  close(): void {
    this.#replies.unsubscribe();
    clearTimeout(this.#sweepTimer);
    this.#sweepTimer = undefined;
    this.#sweepAt = Number.POSITIVE_INFINITY;
    for (const [token, pending] of this.#pending) {
      this.#pending.delete(token);
      pending.reject(new ServiceError('SERVICE_UNAVAILABLE', 'client closed'));
    }
  }

  #settle(msg: Msg): void {
    const token = msg.subject.slice(this.#replyPrefix.length);
    const pending = this.#pending.get(token);
    if (!pending) return; // already timed out
    this.#pending.delete(token);
    pending.resolve(msg);
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
        pending.reject(new ServiceError('TIMEOUT', `${pending.subject} did not answer within ${pending.timeoutMs} ms`));
      } else if (pending.deadline < next) {
        next = pending.deadline;
      }
    }
    if (next !== Number.POSITIVE_INFINITY) this.#armSweep(next);
  };
}
