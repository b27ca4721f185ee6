// All SQL of the customer service.
import type { Customer, Role } from '../../subjects/index.ts';
import type { Queryable } from '../kit/index.ts';

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
