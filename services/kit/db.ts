// PostgreSQL: one pool per service, its own database created on first start,
// numbered SQL migrations applied once (the kit's first, then the service's),
// and transactions as a function.
import pg from 'pg';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from './log.ts';

export type Pool = pg.Pool;
export type Tx = pg.PoolClient;
/** Anything that can run a query: the pool, or a client inside a transaction. */
export type Queryable = Pick<pg.Pool, 'query'>;

// Bigint counts (e.g. COUNT(*)) as numbers: our counts never pass 2^53.
pg.types.setTypeParser(pg.types.builtins.INT8, (value) => Number.parseInt(value, 10));

/** The database URL of a service: DATABASE_URL, or shop_<service> on the PG* defaults. */
export function databaseUrl(service: string, explicit?: string): string {
  if (explicit) return explicit;
  const host = process.env.PGHOST ?? '127.0.0.1';
  const port = process.env.PGPORT ?? '5432';
  const user = encodeURIComponent(process.env.PGUSER ?? 'postgres');
  const password = process.env.PGPASSWORD ? `:${encodeURIComponent(process.env.PGPASSWORD)}` : '';
  return `postgresql://${user}${password}@${host}:${port}/shop_${service}`;
}

/** Creates the database named in `url` when missing, connecting to the server's `postgres` database. */
export async function ensureDatabase(url: string, log: Logger): Promise<void> {
  const target = new URL(url);
  const name = decodeURIComponent(target.pathname.slice(1));
  const admin = new URL(url);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  try {
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (found.rowCount) return;
    await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
    log.info({ database: name }, 'database created');
  } catch (error) {
    // Another instance created it at the same moment.
    if ((error as { code?: string }).code !== '42P04') throw error;
  } finally {
    await client.end();
  }
}

/** Statement names by text, for the whole process: one name per distinct parameterised statement. */
const statementNames = new Map<string, string>();
/** Beyond this many distinct texts (SQL built with varying text), statements are no longer prepared. */
const MAX_PREPARED = 500;

/**
 * A client that prepares every parameterised statement once per connection
 * (a named statement: PostgreSQL parses and plans it once, not on every
 * call). Measured on the saga's statements: a third of the server's CPU per
 * call. Statements without parameters run as before (simple protocol).
 */
class PreparingClient extends pg.Client {
  override query(...args: unknown[]): never {
    const [text, values] = args;
    if (typeof text === 'string' && Array.isArray(values)) {
      let name = statementNames.get(text);
      if (name === undefined && statementNames.size < MAX_PREPARED) {
        name = `shop_${statementNames.size}`;
        statementNames.set(text, name);
      }
      if (name !== undefined) args = [{ name, text, values }, ...args.slice(2)];
    }
    return (super.query as (...a: unknown[]) => never)(...args);
  }
}

export function createPool(url: string, max = 10): Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max,
    connectionTimeoutMillis: 5000,
    idleTimeoutMillis: 30_000,
    Client: PreparingClient,
  });
  // An idle client losing its connection must not crash the process; the pool replaces it.
  pool.on('error', () => {});
  // Nor may a checked-out one (a transaction awaiting something else when the
  // server restarts or ends its backend): its next query fails, which its user handles.
  pool.on('connect', (client) => client.on('error', () => {}));
  return pool;
}

const KIT_MIGRATIONS = join(import.meta.dirname, 'migrations');

/**
 * Applies `<dir>/NNN_name.sql` files not yet applied, each in its own
 * transaction, under an advisory lock so that instances starting together
 * take turns.
 */
export async function migrate(pool: Pool, service: string, migrationsDir: string, log: Logger): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock(hashtext($1))', ['shop-migrations']);
    await client.query(
      'CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())',
    );
    const applied = new Set(
      (await client.query<{ name: string }>('SELECT name FROM schema_migrations')).rows.map((row) => row.name),
    );
    for (const [scope, dir] of [['kit', KIT_MIGRATIONS], [service, migrationsDir]] as const) {
      const files = (await readdir(dir)).filter((file) => /^\d+_.+\.sql$/.test(file)).sort();
      for (const file of files) {
        const name = `${scope}/${file}`;
        if (applied.has(name)) continue;
        const sql = await readFile(join(dir, file), 'utf8');
        await client.query('BEGIN');
        try {
          await client.query(sql);
          await client.query('INSERT INTO schema_migrations (name) VALUES ($1)', [name]);
          await client.query('COMMIT');
          log.info({ migration: name }, 'migration applied');
        } catch (error) {
          await client.query('ROLLBACK');
          throw new Error(`migration ${name} failed: ${(error as Error).message}`, { cause: error });
        }
      }
    }
  } finally {
    await client.query('SELECT pg_advisory_unlock(hashtext($1))', ['shop-migrations']).catch(() => {});
    client.release();
  }
}

/** What to run once a transaction of withTransaction commits, by its client; each hook once. */
const commitHooks = new WeakMap<object, Set<(pool: Pool) => void>>();

/**
 * Runs `hook` (given the transaction's pool) right after the transaction of
 * `tx` commits, and never if it rolls back; the same hook registered twice
 * runs once. Returns false, registering nothing, when `tx` is not inside
 * withTransaction. A hook must not throw (a thrown error is ignored: the
 * transaction has committed).
 */
export function afterCommit(tx: Queryable, hook: (pool: Pool) => void): boolean {
  const hooks = commitHooks.get(tx);
  if (!hooks) return false;
  hooks.add(hook);
  return true;
}

/** Statements to send in the round trip of COMMIT, by the client of a transaction of withTransaction. */
const commitStatements = new WeakMap<object, string[]>();

/**
 * Sends `statement` together with the COMMIT of `tx`'s transaction, in one
 * round trip: for a write nothing in the transaction reads back (the
 * outbox). The simple query protocol, so no parameters: its values must be
 * literals escaped with pg.escapeLiteral. If it fails, the transaction rolls
 * back and withTransaction throws. Returns false, keeping nothing, when `tx`
 * is not inside withTransaction; then the caller runs it itself.
 */
export function sendWithCommit(tx: Queryable, statement: string): boolean {
  const statements = commitStatements.get(tx);
  if (!statements) return false;
  statements.push(statement);
  return true;
}

export interface TransactionOptions {
  /**
   * A statement sent together with BEGIN, in one round trip: the simple query
   * protocol, so no parameters; its values must be literals escaped with
   * pg.escapeLiteral. Its result is `work`'s second argument. On a busy
   * machine a round trip costs more than the statement (bench/saga.ts).
   */
  startWith?: string;
}

/**
 * Runs `work` in a transaction: commit when it returns, roll back when it
 * throws. With `startWith`, `work` also gets that statement's result.
 */
export async function withTransaction<T>(
  pool: Pool,
  work: (tx: Tx, first: pg.QueryResult | undefined) => Promise<T>,
  options: TransactionOptions = {},
): Promise<T> {
  const tx = await pool.connect();
  const hooks = new Set<(pool: Pool) => void>();
  try {
    let first: pg.QueryResult | undefined;
    if (options.startWith) {
      // Several statements in one query answer one result each.
      const results = (await tx.query(`BEGIN; ${options.startWith}`)) as unknown as pg.QueryResult[];
      first = results[1];
    } else {
      await tx.query('BEGIN');
    }
    commitHooks.set(tx, hooks);
    const withCommit: string[] = [];
    commitStatements.set(tx, withCommit);
    const result = await work(tx, first);
    commitStatements.delete(tx);
    await tx.query(withCommit.length > 0 ? `${withCommit.join('; ')}; COMMIT` : 'COMMIT');
    commitHooks.delete(tx);
    for (const hook of hooks) {
      try {
        hook(pool);
      } catch {
        // committed already; a failed hook (a wake-up) must not turn the commit into an error
      }
    }
    return result;
  } catch (error) {
    commitHooks.delete(tx);
    commitStatements.delete(tx);
    await tx.query('ROLLBACK').catch(() => {});
    throw error;
  } finally {
    tx.release();
  }
}

/** PostgreSQL's unique_violation, for turning a duplicate into a typed error. */
export function isUniqueViolation(error: unknown, constraint?: string): boolean {
  const e = error as { code?: string; constraint?: string };
  return e?.code === '23505' && (constraint === undefined || e.constraint === constraint);
}
