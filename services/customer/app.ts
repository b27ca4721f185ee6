// The customer service: accounts and authentication.
import { Type } from '@sinclair/typebox';
import { join } from 'node:path';
import { customers } from '../../subjects/index.ts';
import { ServiceSettings, type ServiceDefinition } from '../kit/index.ts';
import { customerEndpoints, normalizeEmail } from './handlers.ts';
import { customerConsumers } from './events.ts';

export const CustomerSettings = {
  ...ServiceSettings,
  ADMIN_EMAILS: Type.String({ default: '', description: 'Comma-separated emails that register with the admin role.' }),
};

export const customerService: ServiceDefinition<{ ADMIN_EMAILS: string }> = {
  name: 'customers',
  version: '1.0.0',
  description: 'Customer accounts and authentication',
  migrations: join(import.meta.dirname, 'migrations'),
  emits: [customers.registered, customers.renamed],
  states: [customers.profiles],
  calls: [],
  settings: CustomerSettings,
  build({ pool }, settings) {
    const adminEmails = new Set(settings.ADMIN_EMAILS.split(',').filter(Boolean).map(normalizeEmail));
    return { endpoints: customerEndpoints(pool, adminEmails), consumers: customerConsumers() };
  },
};
