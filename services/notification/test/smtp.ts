// A real SMTP server for tests (smtp-server on a random port) that keeps every
// email it accepts, logs every RCPT TO, and can refuse recipients on demand:
// `failNext(address, n)` answers the next n deliveries to it with 451 (try
// again later), `rejectAlways(address)` with 550 (never), and
// `beforeAccepting(address, hook)` runs a hook just before the next email to
// it is accepted (the moment a sender's work is most at risk).
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { parseMail, type ParsedMail } from '../../../scripts/mail-catcher.ts';

export interface ReceivedMail extends ParsedMail {
  /** Envelope sender and recipients, as given in MAIL FROM / RCPT TO. */
  mailFrom: string;
  rcptTo: string[];
  receivedAt: number;
}

export interface DeliveryAttempt {
  to: string;
  at: number;
  /** The SMTP reply code given to the RCPT TO. */
  code: 250 | 451 | 550;
}

export interface TestSmtpServer {
  port: number;
  mails: ReceivedMail[];
  attempts: DeliveryAttempt[];
  mailsTo(address: string): ReceivedMail[];
  attemptsTo(address: string): DeliveryAttempt[];
  failNext(address: string, count: number): void;
  rejectAlways(address: string): void;
  beforeAccepting(address: string, hook: () => Promise<void>): void;
  close(): Promise<void>;
}

function smtpError(code: number, message: string): Error {
  return Object.assign(new Error(message), { responseCode: code });
}

export async function startSmtpServer(): Promise<TestSmtpServer> {
  const mails: ReceivedMail[] = [];
  const attempts: DeliveryAttempt[] = [];
  const failures = new Map<string, number>();
  const rejected = new Set<string>();
  const hooks = new Map<string, () => Promise<void>>();

  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onRcptTo(address, _session, callback) {
      const to = address.address.toLowerCase();
      const left = failures.get(to) ?? 0;
      if (left > 0) {
        failures.set(to, left - 1);
        attempts.push({ to, at: Date.now(), code: 451 });
        callback(smtpError(451, 'mailbox busy, try again later'));
        return;
      }
      if (rejected.has(to)) {
        attempts.push({ to, at: Date.now(), code: 550 });
        callback(smtpError(550, 'no such mailbox'));
        return;
      }
      attempts.push({ to, at: Date.now(), code: 250 });
      callback();
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        const mailFrom = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
        const rcptTo = session.envelope.rcptTo.map((a) => a.address.toLowerCase());
        const hook = rcptTo.map((to) => hooks.get(to)).find(Boolean);
        for (const to of rcptTo) hooks.delete(to);
        void (hook ?? (async () => {}))().then(() => {
          mails.push({ ...parseMail(Buffer.concat(chunks).toString('utf8')), mailFrom, rcptTo, receivedAt: Date.now() });
          callback();
        }, callback);
      });
    },
  });
  server.on('error', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.server.address() as AddressInfo).port;

  return {
    port,
    mails,
    attempts,
    mailsTo: (address) => mails.filter((mail) => mail.rcptTo.includes(address.toLowerCase())),
    attemptsTo: (address) => attempts.filter((attempt) => attempt.to === address.toLowerCase()),
    failNext(address, count) {
      failures.set(address.toLowerCase(), count);
    },
    rejectAlways(address) {
      rejected.add(address.toLowerCase());
    },
    beforeAccepting(address, hook) {
      hooks.set(address.toLowerCase(), hook);
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
