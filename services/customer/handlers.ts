// Request-reply endpoints of the customer service.
import { randomUUID } from 'node:crypto';
import { customers, type Customer } from '../../subjects/index.ts';
import {
  ServiceError,
  endpoint,
  preparedQueries,
  isUniqueViolation,
  withTransaction,
  writeEvent,
  writeStates,
  type Pool,
} from '../kit/index.ts';
import { UNKNOWN_USER_HASH, hashPassword, verifyPassword } from './passwords.ts';
import { findCredentials, findCustomer, findCustomers, insertCustomer } from './store.ts';

export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

export function customerEndpoints(pool: Pool, adminEmails: ReadonlySet<string>) {
  // Queries outside a transaction, each statement prepared once per connection.
  const db = preparedQueries(pool);
  return [
    endpoint(customers.register, async ({ email, name, password }) => {
      const normalized = normalizeEmail(email);
      const passwordHash = await hashPassword(password);
      try {
        return await withTransaction(pool, async (tx) => {
          const customer = await insertCustomer(tx, {
            id: randomUUID(),
            email: normalized,
            name: name.trim(),
            role: adminEmails.has(normalized) ? 'admin' : 'customer',
            passwordHash,
          });
          await writeEvent(tx, customers.registered, { customerId: customer.id, email: customer.email, name: customer.name });
          await writeStates(tx, customers.profiles, [customer]);
          return customer;
        });
      } catch (error) {
        if (isUniqueViolation(error)) throw new ServiceError('EMAIL_TAKEN', 'an account with this email exists');
        throw error;
      }
    }),

    endpoint(customers.authenticate, async ({ email, password }) => {
      const found = await findCredentials(db, normalizeEmail(email));
      const valid = await verifyPassword(password, found?.passwordHash ?? UNKNOWN_USER_HASH);
      if (!found || !valid) throw new ServiceError('INVALID_CREDENTIALS', 'wrong email or password');
      return found.customer;
    }),

    endpoint(customers.get, async ({ id }) => {
      const customer: Customer | undefined = await findCustomer(db, id);
      if (!customer) throw new ServiceError('CUSTOMER_NOT_FOUND', `no customer ${id}`);
      return customer;
    }),

    endpoint(customers.getMany, async ({ ids }) => ({ customers: await findCustomers(db, ids) })),
  ];
}
