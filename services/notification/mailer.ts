// Delivery: the SMTP transport (nodemailer) and the sender loop that works
// through the `notifications` table. The consumers only record what to send;
// this loop sends it, so a slow or failing SMTP server never holds up the
// consumers, and one failing email never holds up the others.
//
// Delivery is at-least-once, and a resend needs a crash at the worst moment.
// A row is claimed with a lease (its next attempt moved ahead, committed at
// once); the email is sent outside any transaction; the outcome is then
// recorded at once, with retries on fresh connections. So a database
// connection lost after the SMTP server accepted the email does not send it
// again: only a process dying between that acceptance and its record (one
// statement's round trip: milliseconds, unless the machine or the database
// is overloaded) does, once the lease runs out. The resend carries the same
// Message-ID (<notification-id@shop>), so mail systems and people can
// recognise it as the same message.
import nodemailer, { type Transporter } from 'nodemailer';
import type SMTPPool from 'nodemailer/lib/smtp-pool';
import pg from 'pg';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, propagation, trace } from '@opentelemetry/api';
import pRetry from 'p-retry';
import { preparedQueries, type BackgroundTask, type Logger, type Pool, type Queryable } from '../kit/index.ts';
import { claimDue, markFailed, markRetry, markSent, type DueNotification } from './store.ts';

/** Channel a consumer notifies (on commit) when it stored something to send and has no sender of its own to wake. */
export const SEND_CHANNEL = 'shop_notifications';

export interface SmtpSettings {
  SMTP_HOST: string;
  SMTP_PORT: number;
  SMTP_FROM: string;
  SMTP_SECURE: boolean;
  SMTP_USER?: string | undefined;
  SMTP_PASSWORD?: string | undefined;
  SMTP_TIMEOUT_MS: number;
}

export interface OutgoingMail {
  /** The notification id; the Message-ID is derived from it. */
  id: string;
  to: string;
  subject: string;
  text: string;
}

export function messageId(notificationId: string): string {
  return `<${notificationId}@shop>`;
}

export class Mailer {
  readonly #transport: Transporter<SMTPPool.SentMessageInfo>;
  readonly #from: string;

  constructor(settings: SmtpSettings) {
    this.#from = settings.SMTP_FROM;
    this.#transport = nodemailer.createTransport({
      // Connections kept open and reused (a handful, each for up to 100 emails): a new
      // connection and greeting per email cost more than the email itself.
      pool: true,
      maxConnections: 5,
      host: settings.SMTP_HOST,
      port: settings.SMTP_PORT,
      secure: settings.SMTP_SECURE,
      ...(settings.SMTP_USER ? { auth: { user: settings.SMTP_USER, pass: settings.SMTP_PASSWORD ?? '' } } : {}),
      // nodemailer waits up to minutes by default; a row stays locked while we wait.
      connectionTimeout: settings.SMTP_TIMEOUT_MS,
      greetingTimeout: settings.SMTP_TIMEOUT_MS,
      socketTimeout: settings.SMTP_TIMEOUT_MS,
      dnsTimeout: settings.SMTP_TIMEOUT_MS,
    });
  }

  async send(mail: OutgoingMail): Promise<void> {
    await this.#transport.sendMail({
      from: this.#from,
      to: mail.to,
      subject: mail.subject,
      text: mail.text,
      messageId: messageId(mail.id),
    });
  }

  close(): void {
    this.#transport.close();
  }
}

/**
 * A 5xx reply is the server's final word (no such mailbox, rejected): trying
 * again cannot help. Everything else (4xx, refused connection, timeout) may.
 */
export function isPermanentFailure(error: unknown): boolean {
  const code = (error as { responseCode?: unknown }).responseCode;
  return typeof code === 'number' && code >= 500 && code < 600;
}

/** Delay before attempt `attempt + 1`, after `attempt` failed attempts: base, 2·base, 4·base, … up to `maxMs`. */
export function retryDelayMs(attempt: number, baseMs: number, maxMs: number): number {
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
}

export interface SenderOptions {
  /** Attempts per email before it is marked FAILED. */
  maxAttempts: number;
  /** Delay after the first failed attempt; doubles after each further one. */
  retryBaseMs: number;
  maxRetryDelayMs?: number;
  /** Emails sent at once by one instance. */
  concurrency?: number;
  /** Longest sleep between looks at the queue, in case a wake-up was lost. */
  sweepMs?: number;
  /** Bound on waiting for emails in flight at stop. */
  stopTimeoutMs?: number;
  /** How long a claimed email stays with its sender before another may take it (a sender that died). */
  leaseMs?: number;
}

/** The sender loop as a background task of the service. */
export class NotificationSender implements BackgroundTask {
  readonly name = 'notification-sender';
  readonly #pool: Pool;
  readonly #db: Queryable;
  readonly #mailer: Mailer;
  readonly #log: Logger;
  readonly #options: Required<SenderOptions>;
  #listener: pg.Client | undefined;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  /** A wake-up came during the pass: look at the queue once more before it ends. */
  #again = false;
  /** Ends the pass's wait for its sends early when a wake-up comes (set while it waits). */
  #woken: (() => void) | undefined;
  #stopped = false;
  /** When to look again, as learnt during the pass: the next due time the last claim saw, and the retries recorded. */
  #claimedDueAt = Number.POSITIVE_INFINITY;
  #retryDueAt = Number.POSITIVE_INFINITY;

  constructor(pool: Pool, mailer: Mailer, log: Logger, options: SenderOptions) {
    this.#pool = pool;
    this.#db = preparedQueries(pool);
    this.#mailer = mailer;
    this.#log = log.child({ component: 'sender' });
    this.#options = {
      maxRetryDelayMs: 15 * 60_000,
      concurrency: 4,
      sweepMs: 5000,
      stopTimeoutMs: 10_000,
      leaseMs: 5 * 60_000,
      ...options,
    };
  }

  async start(): Promise<void> {
    await this.#listen();
    this.wake(); // whatever a previous run left pending or due
  }

  /** Sends everything due; wake-ups during a pass fold into one more claim of that pass. */
  wake(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      this.#woken?.();
      return;
    }
    clearTimeout(this.#timer);
    this.#running = this.#drain().then(
      (ok) => {
        this.#running = undefined;
        // Asleep until the earliest due time the pass learnt of, or at most sweepMs (a lost wake-up, another instance's rows).
        const dueAt = Math.min(this.#claimedDueAt, this.#retryDueAt);
        this.#arm(ok ? Math.min(this.#options.sweepMs, Math.max(0, dueAt - Date.now())) : this.#options.sweepMs);
      },
      () => {},
    );
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    const timeout = new Promise<void>((resolve) => setTimeout(resolve, this.#options.stopTimeoutMs).unref());
    await Promise.race([this.#running, timeout]);
    await this.#listener?.end().catch(() => {});
    this.#mailer.close();
  }

  /**
   * One pass, until nothing is due: claims due emails in one statement for the
   * free workers and one more round of them, starts a send for each free
   * worker and keeps the rest in hand for the next worker to come free (a slow
   * email holds up only its own worker). It claims again when those in hand
   * run out and the last claim took all it could, or a wake-up came. False
   * when the database failed us.
   *
   * A sent email is recorded as soon as the SMTP server accepted it: a crash
   * before the record commits sends it again once the lease runs out, so
   * nothing may wait between the two. When the pass would claim at that very
   * moment (nothing in hand, more due or a wake-up came), the claim carries
   * the record, one statement instead of two; otherwise the record goes
   * alone. Records never wait for a later claim, nor for each other.
   *
   * A lease must outlast the time from claim to recorded; nodemailer's
   * timeouts bound a send, and an email in hand waits for one send at most,
   * as no more are in hand than there are workers; so a lease of minutes runs
   * out only when its sender died.
   */
  async #drain(): Promise<boolean> {
    const { concurrency, leaseMs } = this.#options;
    const sending = new Set<Promise<void>>();
    const inHand: DueNotification[] = [];
    let more = true; // more may be due than the last claim took (none yet)
    let claiming = false;
    let failure: unknown;
    this.#retryDueAt = Number.POSITIVE_INFINITY;
    // Stopping ends the claims; what is in hand is still sent.
    const claimNow = () => !claiming && failure === undefined && inHand.length === 0 && (more || this.#again) && !this.#stopped;
    /** Claims for the workers free once `busy` of them are left sending, recording `sentId` in the same statement. */
    const claim = async (busy: number, sentId?: string) => {
      claiming = true;
      this.#again = false; // the claim sees every email recorded before it
      try {
        const limit = 2 * concurrency - busy;
        const claimed = await claimDue(this.#db, leaseMs, limit, sentId);
        this.#claimedDueAt = claimed.nextDueAt?.getTime() ?? Number.POSITIVE_INFINITY;
        inHand.push(...claimed.rows);
        more = claimed.rows.length === limit;
      } finally {
        claiming = false;
      }
    };
    const recordSent = async (id: string) => {
      if (!claimNow()) return this.#record((db) => markSent(db, id));
      try {
        await claim(sending.size - 1, id); // this worker is about to come free
      } catch (error) {
        failure ??= error;
        await this.#record((db) => markSent(db, id)); // the claim failed, and its record with it
      }
    };
    const send = (due: DueNotification) => {
      const task: Promise<void> = this.#attempt(due, recordSent)
        .catch((error: unknown) => {
          failure ??= error;
        })
        .finally(() => sending.delete(task));
      sending.add(task);
    };
    try {
      while (failure === undefined) {
        while (inHand.length > 0 && sending.size < concurrency) send(inHand.shift()!);
        if (claimNow()) {
          await claim(sending.size);
          continue;
        }
        if (sending.size === 0) break; // nothing in flight, in hand or due
        // A worker coming free (maybe with what its claim took), or a wake-up: something new to claim.
        const woken = new Promise<void>((resolve) => (this.#woken = resolve));
        await Promise.race([...sending, woken]);
        this.#woken = undefined;
      }
    } catch (error) {
      failure ??= error;
    } finally {
      await Promise.all(sending);
    }
    if (failure !== undefined) {
      // The database is away: rows stay as they are (claimed ones, also those in hand, until
      // their lease ends); the timer brings us back.
      this.#log.warn({ err: failure, leftInHand: inHand.length }, 'sender pass failed; will retry');
      return false;
    }
    return true;
  }

  /**
   * Records an outcome. The email has gone (or not) already, so a lost or
   * refused connection is retried for as long as the sender runs: giving up
   * would leave the row leased, and the email would go again once the lease
   * ran out (seen in the chaos suite: databases refusing connections for 8 s,
   * then the same email twice five minutes later).
   */
  #record(what: (db: Queryable) => Promise<void>): Promise<void> {
    return pRetry(() => what(this.#db), {
      retries: Number.POSITIVE_INFINITY,
      minTimeout: 100,
      maxTimeout: 5000,
      shouldRetry: () => !this.#stopped,
      onFailedAttempt: ({ error, attemptNumber }) => {
        if (attemptNumber === 1) this.#log.warn({ err: error }, 'recording an email outcome failed; retrying until the database answers');
      },
    });
  }

  /** One attempt inside an `smtp send` span that continues the trace of the event behind the email. */
  #attempt(due: DueNotification, recordSent: (id: string) => Promise<void>): Promise<void> {
    const parent = propagation.extract(ROOT_CONTEXT, due.trace ?? {});
    const attributes = { 'notification.id': due.id, 'notification.attempt': due.attempts + 1 };
    return trace
      .getTracer('shop-notification')
      .startActiveSpan('smtp send', { kind: SpanKind.CLIENT, attributes }, parent, async (span) => {
        try {
          const sent = await this.#attemptTraced(due, recordSent);
          if (!sent) span.setStatus({ code: SpanStatusCode.ERROR, message: 'not sent' });
        } catch (error) {
          span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
          throw error;
        } finally {
          span.end();
        }
      });
  }

  /** True when the email went out; `recordSent` records it so, at once. */
  async #attemptTraced(due: DueNotification, recordSent: (id: string) => Promise<void>): Promise<boolean> {
    const attempt = due.attempts + 1;
    const log = this.#log.child({ notificationId: due.id, attempt });
    try {
      await this.#mailer.send({ id: due.id, to: due.email, subject: due.subject, text: due.body });
    } catch (error) {
      const reason = describe(error);
      if (isPermanentFailure(error) || attempt >= this.#options.maxAttempts) {
        log.error({ err: error }, 'email failed for good');
        await this.#record((db) => markFailed(db, due.id, reason));
      } else {
        const delayMs = retryDelayMs(attempt, this.#options.retryBaseMs, this.#options.maxRetryDelayMs);
        log.warn({ err: error, retryInMs: delayMs }, 'email failed; will retry');
        await this.#record((db) => markRetry(db, due.id, reason, delayMs));
        this.#retryDueAt = Math.min(this.#retryDueAt, Date.now() + delayMs);
      }
      return false;
    }
    await recordSent(due.id);
    log.info('email sent'); // said once recorded: a sender killed after saying it does not send it again
    return true;
  }

  #arm(ms: number): void {
    if (this.#stopped || this.#running) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.wake(), ms);
  }

  async #listen(): Promise<void> {
    if (this.#stopped) return;
    // A connection of its own, outside the pool: LISTEN holds it for the life of the process.
    const listener = new pg.Client({ connectionString: this.#pool.options.connectionString });
    const retry = () => {
      this.#listener = undefined;
      listener.end().catch(() => {});
      setTimeout(() => this.#listen().catch(() => {}), 1000).unref();
    };
    listener.on('notification', () => this.wake());
    listener.on('error', (error) => {
      this.#log.warn({ err: error }, 'sender listener lost; sweeping until it is back');
      retry();
    });
    try {
      await listener.connect();
      await listener.query(`LISTEN ${SEND_CHANNEL}`);
      if (this.#stopped) {
        await listener.end();
        return;
      }
      this.#listener = listener;
    } catch (error) {
      this.#log.warn({ err: error }, 'sender listener could not connect; retrying');
      retry();
    }
  }
}

function describe(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.replace(/\s+/g, ' ').slice(0, 1000);
}
