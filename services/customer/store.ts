// All SQL of the customer service.
import type { Address, AddressInput, Customer, Role } from '../../subjects/index.ts';
import type { Queryable, Transaction } from '../kit/index.ts';

interface CustomerRow {
  id: string;
  email: string;
  name: string;
  role: Role;
  password_hash: string;
  created_at: Date;
  version: number;
}

const COLUMNS = 'id, email, name, role, password_hash, created_at, version';

function toCustomer(row: CustomerRow): Customer {
  return {
    id: row.id,
    email: row.email,
    name: row.name,
    role: row.role,
    createdAt: row.created_at.toISOString(),
    version: row.version,
  };
}

export async function insertCustomer(
  db: Queryable,
  customer: { id: string; email: string; name: string; role: Role; passwordHash: string },
): Promise<Customer> {
  const { rows } = await db.query<CustomerRow>(
    `INSERT INTO customers (id, email, name, role, password_hash) VALUES ($1, $2, $3, $4, $5) RETURNING ${COLUMNS}`,
    [customer.id, customer.email, customer.name, customer.role, customer.passwordHash],
  );
  return toCustomer(rows[0]!);
}

export async function findCustomer(db: Queryable, id: string): Promise<Customer | undefined> {
  const { rows } = await db.query<CustomerRow>(`SELECT ${COLUMNS} FROM customers WHERE id = $1`, [id]);
  return rows[0] && toCustomer(rows[0]);
}

/** The customer and their password hash, for authentication only. */
export async function findCredentials(db: Queryable, email: string): Promise<{ customer: Customer; passwordHash: string } | undefined> {
  const { rows } = await db.query<CustomerRow>(`SELECT ${COLUMNS} FROM customers WHERE email = $1`, [email]);
  const row = rows[0];
  return row && { customer: toCustomer(row), passwordHash: row.password_hash };
}

/** Customers by id, in the order asked, null where unknown. */
export async function findCustomers(db: Queryable, ids: readonly string[]): Promise<(Customer | null)[]> {
  if (ids.length === 0) return [];
  const { rows } = await db.query<CustomerRow>(`SELECT ${COLUMNS} FROM customers WHERE id = ANY($1::uuid[])`, [ids]);
  const byId = new Map(rows.map((row) => [row.id, toCustomer(row)]));
  return ids.map((id) => byId.get(id) ?? null);
}

/** A new name; undefined when the customer is unknown. */
export async function renameCustomer(db: Queryable, id: string, name: string): Promise<Customer | undefined> {
  const { rows } = await db.query<CustomerRow>(`UPDATE customers SET name = $2, version = version + 1 WHERE id = $1 RETURNING ${COLUMNS}`, [
    id,
    name,
  ]);
  return rows[0] && toCustomer(rows[0]);
}

// ---------------------------------------------------------------------------
// Shipping addresses. Every change runs in a transaction that first takes
// lockCustomer, so one customer's changes queue and see each other.

interface AddressRow {
  id: string;
  name: string;
  line1: string;
  line2: string;
  city: string;
  postal_code: string;
  country: string;
  is_default: boolean;
  created_at: Date;
  updated_at: Date;
}

const ADDRESS_COLUMNS = 'id, name, line1, line2, city, postal_code, country, is_default, created_at, updated_at';
/** The default first, then oldest first. */
const ADDRESS_ORDER = 'ORDER BY is_default DESC, created_at, id';

function toAddress(row: AddressRow): Address {
  return {
    id: row.id,
    name: row.name,
    line1: row.line1,
    line2: row.line2,
    city: row.city,
    postalCode: row.postal_code,
    country: row.country,
    isDefault: row.is_default,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  };
}

/** Locks the customer's row for a change of their addresses; false when unknown. */
export async function lockCustomer(tx: Transaction, id: string): Promise<boolean> {
  const { rowCount } = await tx.query('SELECT 1 FROM customers WHERE id = $1 FOR UPDATE', [id]);
  return rowCount === 1;
}

export async function customerExists(db: Queryable, id: string): Promise<boolean> {
  const { rowCount } = await db.query('SELECT 1 FROM customers WHERE id = $1', [id]);
  return rowCount === 1;
}

export async function listAddresses(db: Queryable, customerId: string): Promise<Address[]> {
  const { rows } = await db.query<AddressRow>(`SELECT ${ADDRESS_COLUMNS} FROM addresses WHERE customer_id = $1 ${ADDRESS_ORDER}`, [
    customerId,
  ]);
  return rows.map(toAddress);
}

export async function insertAddress(
  tx: Transaction,
  address: AddressInput & { id: string; customerId: string; isDefault: boolean },
): Promise<Address> {
  const { rows } = await tx.query<AddressRow>(
    `INSERT INTO addresses (id, customer_id, name, line1, line2, city, postal_code, country, is_default)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ${ADDRESS_COLUMNS}`,
    [
      address.id,
      address.customerId,
      address.name,
      address.line1,
      address.line2 ?? '',
      address.city,
      address.postalCode,
      address.country,
      address.isDefault,
    ],
  );
  return toAddress(rows[0]!);
}

/** Replaces what an address of this customer says; undefined when it is not theirs. */
export async function updateAddress(
  tx: Transaction,
  customerId: string,
  addressId: string,
  address: AddressInput,
): Promise<Address | undefined> {
  const { rows } = await tx.query<AddressRow>(
    `UPDATE addresses SET name = $3, line1 = $4, line2 = $5, city = $6, postal_code = $7, country = $8, updated_at = now()
      WHERE id = $2 AND customer_id = $1 RETURNING ${ADDRESS_COLUMNS}`,
    [customerId, addressId, address.name, address.line1, address.line2 ?? '', address.city, address.postalCode, address.country],
  );
  return rows[0] && toAddress(rows[0]);
}

/**
 * Makes `addressId` the customer's default (or, with null, the oldest
 * address): the old default first lets go, so the one-default index holds
 * after each statement. Undefined when the address is not theirs.
 */
export async function makeDefault(tx: Transaction, customerId: string, addressId: string | null): Promise<Address | undefined> {
  const { rows: target } = await tx.query<{ id: string }>(
    `SELECT id FROM addresses WHERE customer_id = $1 AND ($2::uuid IS NULL OR id = $2::uuid) ORDER BY created_at, id LIMIT 1`,
    [customerId, addressId],
  );
  const id = target[0]?.id;
  if (!id) return undefined;
  await tx.query('UPDATE addresses SET is_default = false, updated_at = now() WHERE customer_id = $1 AND is_default AND id <> $2', [
    customerId,
    id,
  ]);
  const { rows } = await tx.query<AddressRow>(
    `UPDATE addresses SET is_default = true, updated_at = CASE WHEN is_default THEN updated_at ELSE now() END
      WHERE id = $1 RETURNING ${ADDRESS_COLUMNS}`,
    [id],
  );
  return toAddress(rows[0]!);
}

/** Deletes an address of this customer; undefined when it is not theirs, else whether it was the default. */
export async function deleteAddress(tx: Transaction, customerId: string, addressId: string): Promise<{ wasDefault: boolean } | undefined> {
  const { rows } = await tx.query<{ is_default: boolean }>(
    'DELETE FROM addresses WHERE id = $2 AND customer_id = $1 RETURNING is_default',
    [customerId, addressId],
  );
  return rows[0] && { wasDefault: rows[0].is_default };
}

/**
 * The address an order of this customer ships to, in one statement: the
 * one named, else the default. `customer` is false when the customer is unknown.
 */
export async function findShippingAddress(
  db: Queryable,
  customerId: string,
  addressId: string | null,
): Promise<{ customer: boolean; address: Address | null }> {
  const { rows } = await db.query<AddressRow & { customer_id: string }>(
    `SELECT c.id AS customer_id, a.id, a.name, a.line1, a.line2, a.city, a.postal_code, a.country, a.is_default, a.created_at, a.updated_at
       FROM customers c
       LEFT JOIN addresses a ON a.customer_id = c.id AND (CASE WHEN $2::uuid IS NULL THEN a.is_default ELSE a.id = $2::uuid END)
      WHERE c.id = $1`,
    [customerId, addressId],
  );
  const row = rows[0];
  if (!row) return { customer: false, address: null };
  return { customer: true, address: row.id ? toAddress(row) : null };
}
