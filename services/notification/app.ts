// The notification service: one email per order outcome, and the record of it.
import { Type } from '@sinclair/typebox';
import { join } from 'node:path';
import { customers } from '../../subjects/index.ts';
import { ServiceSettings, type ServiceDefinition } from '../kit/index.ts';
import { notificationEndpoints } from './handlers.ts';
import { notificationConsumers } from './events.ts';
import { Mailer, NotificationSender, type SmtpSettings } from './mailer.ts';

export const NotificationSettings = {
  ...ServiceSettings,
  SMTP_HOST: Type.String({ minLength: 1, default: '127.0.0.1', description: 'SMTP server to hand emails to.' }),
  SMTP_PORT: Type.Integer({ minimum: 1, maximum: 65_535, default: 1025 }),
  SMTP_FROM: Type.String({ minLength: 3, default: 'The Shop <shop@example.com>', description: 'From: of every email.' }),
  SMTP_SECURE: Type.Boolean({ default: false, description: 'TLS from the first byte (port 465); otherwise STARTTLS when offered.' }),
  SMTP_USER: Type.Optional(Type.String({ minLength: 1 })),
  SMTP_PASSWORD: Type.Optional(Type.String({ minLength: 1 })),
  SMTP_TIMEOUT_MS: Type.Integer({
    minimum: 100,
    maximum: 300_000,
    default: 15_000,
    description: 'Bound on connecting to, and each reply of, the SMTP server.',
  }),
  NOTIFY_MAX_ATTEMPTS: Type.Integer({
    minimum: 1,
    maximum: 100,
    default: 8,
    description: 'Attempts to send one email before it is marked FAILED.',
  }),
  NOTIFY_RETRY_BASE_MS: Type.Integer({
    minimum: 10,
    maximum: 3_600_000,
    default: 5000,
    description: 'Wait after the first failed attempt; doubles after each further one (at most 15 minutes).',
  }),
  NOTIFY_LEASE_MS: Type.Integer({
    minimum: 1000,
    maximum: 3_600_000,
    default: 300_000,
    description:
      'How long a claimed email stays with its sender before another may take it: the wait before an email claimed by a sender that died is sent. Longer than a send (SMTP_TIMEOUT_MS) and its record.',
  }),
};

export type NotificationConfig = SmtpSettings & {
  NOTIFY_MAX_ATTEMPTS: number;
  NOTIFY_RETRY_BASE_MS: number;
  NOTIFY_LEASE_MS: number;
  SHUTDOWN_TIMEOUT_MS: number;
};

export const notificationService: ServiceDefinition<NotificationConfig> = {
  name: 'notifications',
  version: '1.0.0',
  description: 'Emails to customers about their orders, and the record of them',
  migrations: join(import.meta.dirname, 'migrations'),
  emits: [],
  // The customer's address and name for each email.
  calls: [customers.getMany],
  settings: NotificationSettings,
  build({ pool, client, log }, settings) {
    const sender = new NotificationSender(pool, new Mailer(settings), log, {
      maxAttempts: settings.NOTIFY_MAX_ATTEMPTS,
      retryBaseMs: settings.NOTIFY_RETRY_BASE_MS,
      leaseMs: settings.NOTIFY_LEASE_MS,
      stopTimeoutMs: settings.SHUTDOWN_TIMEOUT_MS,
    });
    return {
      endpoints: notificationEndpoints(pool),
      // Woken in-process when a recorded email commits (no NOTIFY in the consumers' transactions).
      consumers: notificationConsumers(client, () => sender.wake()),
      background: [sender],
    };
  },
};
