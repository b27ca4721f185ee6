// Request-reply endpoints of the customer service.
import { randomUUID } from 'node:crypto';
import { MAX_ADDRESSES, customers, type AddressInput, type Customer } from '../../subjects/index.ts';
import {
  ServiceError,
  endpoint,
  preparedQueries,
  isUniqueViolation,
  withTransaction,
  writeEvent,
  writeStates,
  type Pool,
  type Transaction,
} from '../kit/index.ts';
import { UNKNOWN_USER_HASH, hashPassword, verifyPassword } from './passwords.ts';
import {
  customerExists,
  deleteAddress,
  findCredentials,
  findCustomer,
  findCustomers,
  findShippingAddress,
  insertAddress,
  insertCustomer,
  listAddresses,
  lockCustomer,
  makeDefault,
  renameCustomer,
  updateAddress,
} from './store.ts';

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
      if (!customer) throw customerNotFound(id);
      return customer;
    }),

    endpoint(customers.getMany, async ({ ids }) => ({ customers: await findCustomers(db, ids) })),

    endpoint(customers.rename, async ({ id, name }) =>
      withTransaction(pool, async (tx) => {
        const before = await findCustomer(tx, id);
        if (!before) throw new ServiceError('CUSTOMER_NOT_FOUND', `no customer ${id}`);
        const wanted = name.trim();
        // The same name again is no change, and no event: a retry repeats nothing.
        if (before.name === wanted) return before;
        const customer = (await renameCustomer(tx, id, wanted))!;
        await writeEvent(tx, customers.renamed, { customerId: id, name: customer.name });
        await writeStates(tx, customers.profiles, [customer]);
        return customer;
      }),
    ),

    endpoint(customers.listAddresses, async ({ customerId }) => {
      const items = await listAddresses(db, customerId);
      if (items.length === 0 && !(await customerExists(db, customerId))) throw customerNotFound(customerId);
      return { items };
    }),

    endpoint(customers.addAddress, async ({ customerId, address, makeDefault: asDefault }) =>
      withTransaction(pool, async (tx) => {
        await lockAddressesOf(tx, customerId);
        const existing = await listAddresses(tx, customerId);
        if (existing.length >= MAX_ADDRESSES) {
          throw new ServiceError('VALIDATION_FAILED', `a customer keeps at most ${MAX_ADDRESSES} addresses; remove one first`);
        }
        const added = await insertAddress(tx, { ...trimmed(address), id: randomUUID(), customerId, isDefault: false });
        // The first address is the default whatever was asked: one is, whenever any exists.
        if (existing.length === 0 || asDefault) return (await makeDefault(tx, customerId, added.id))!;
        return added;
      }),
    ),

    endpoint(customers.updateAddress, async ({ customerId, addressId, address }) =>
      withTransaction(pool, async (tx) => {
        await lockAddressesOf(tx, customerId);
        const updated = await updateAddress(tx, customerId, addressId, trimmed(address));
        if (!updated) throw addressNotFound(addressId);
        return updated;
      }),
    ),

    endpoint(customers.setDefaultAddress, async ({ customerId, addressId }) =>
      withTransaction(pool, async (tx) => {
        await lockAddressesOf(tx, customerId);
        const address = await makeDefault(tx, customerId, addressId);
        if (!address) throw addressNotFound(addressId);
        return address;
      }),
    ),

    endpoint(customers.removeAddress, async ({ customerId, addressId }) =>
      withTransaction(pool, async (tx) => {
        await lockAddressesOf(tx, customerId);
        const removed = await deleteAddress(tx, customerId, addressId);
        if (!removed) throw addressNotFound(addressId);
        // The default went: the oldest address left takes its place.
        if (removed.wasDefault) await makeDefault(tx, customerId, null);
        return { items: await listAddresses(tx, customerId) };
      }),
    ),

    endpoint(customers.shippingAddress, async ({ customerId, addressId }) => {
      const found = await findShippingAddress(db, customerId, addressId ?? null);
      if (!found.customer) throw customerNotFound(customerId);
      if (addressId && !found.address) throw addressNotFound(addressId);
      return { address: found.address };
    }),
  ];
}

const customerNotFound = (id: string) => new ServiceError('CUSTOMER_NOT_FOUND', `no customer ${id}`);
const addressNotFound = (id: string) => new ServiceError('ADDRESS_NOT_FOUND', `no address ${id} of this customer`);

async function lockAddressesOf(tx: Transaction, customerId: string): Promise<void> {
  if (!(await lockCustomer(tx, customerId))) throw customerNotFound(customerId);
}

/** The address with its text trimmed, as it is stored. */
function trimmed(address: AddressInput): AddressInput {
  return {
    name: address.name.trim(),
    line1: address.line1.trim(),
    line2: address.line2?.trim() ?? '',
    city: address.city.trim(),
    postalCode: address.postalCode.trim(),
    country: address.country,
  };
}
