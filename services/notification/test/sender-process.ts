// A notification sender alone in a process of its own, so that a test can
// kill it (SIGKILL) at a moment of its choosing: started on DATABASE_URL and
// the SMTP server at SMTP_PORT, logging JSON lines (one "email sent" per
// email) to stdout. Nothing brings it back between emails but a wake-up: its
// sweep is an hour away.
import { createLogger, createPool } from '../../kit/index.ts';
import { Mailer, NotificationSender } from '../mailer.ts';

const pool = createPool(process.env.DATABASE_URL!);
const mailer = new Mailer({
  SMTP_HOST: '127.0.0.1',
  SMTP_PORT: Number(process.env.SMTP_PORT),
  SMTP_FROM: 'The Shop <shop@example.com>',
  SMTP_SECURE: false,
  SMTP_TIMEOUT_MS: 5000,
});
const sender = new NotificationSender(pool, mailer, createLogger('sender-process', 'info'), {
  maxAttempts: 5,
  retryBaseMs: 100,
  sweepMs: 3_600_000,
});
await sender.start();
