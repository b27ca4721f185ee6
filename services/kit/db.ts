// PostgreSQL: one pool per service, its own database created on first start,
// numbered SQL migrations applied once (the kit's first, then the service's),
// and transactions as an object (docs/transactions.md).
import pg from 'pg';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from './log.ts';

export type Pool = pg.Pool;

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

export function createPool(url: string, max = 10): Pool {
  const pool = new pg.Pool({ connectionString: url, max, connectionTimeoutMillis: 5000, idleTimeoutMillis: 30_000 });
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
    const applied = new Set((await client.query<{ name: string }>('SELECT name FROM schema_migrations')).rows.map((row) => row.name));
    for (const [scope, dir] of [
      ['kit', KIT_MIGRATIONS],
      [service, migrationsDir],
    ] as const) {
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

// --- Statements and transactions ---------------------------------------------

/** Anything that runs a statement: a Transaction, preparedQueries(pool), or a pg pool or client. */
export interface Queryable {
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
}

/** Names given so far by statement text, for the whole process: one per distinct parameterised statement. */
const statementNames = new Map<string, string>();
/** Beyond this many distinct texts (SQL built with varying text), statements run unnamed. */
const MAX_NAMED = 500;

/**
 * The query of `text` with `values`, named when it has parameters (pg's
 * `{ name, text, values }`): PostgreSQL then parses and plans it once per
 * connection, not on every call. Measured on the saga's statements: a third
 * of the server's CPU per call. Without parameters it runs as it is, on the
 * simple protocol (which also takes several statements in one text).
 */
function namedQuery(text: string, values?: unknown[]): pg.QueryConfig {
  if (values === undefined) return { text };
  let name = statementNames.get(text);
  if (name === undefined && statementNames.size < MAX_NAMED) {
    name = `shop_${statementNames.size}`;
    statementNames.set(text, name);
  }
  return name === undefined ? { text, values } : { name, text, values };
}

/** Queries on `pool` outside a transaction, their statements named like a Transaction's. */
export function preparedQueries(pool: Pool): Queryable {
  return { query: (text, values) => pool.query(namedQuery(text, values)) };
}

/** A statement with its parameters, `$1`... in `text`. */
export interface Statement {
  text: string;
  values: unknown[];
}

/**
 * A transaction of withTransaction, on one connection taken from the pool.
 * It begins with its first statement (BEGIN sent before it), commits when
 * the work returns and rolls back when it throws; `sendWithCommit` keeps a
 * write for just before COMMIT. Every statement goes the library's way, its
 * values as parameters (docs/decisions.md, "Shortcuts around a library,
 * measured"). Once it has ended, every method throws: a late statement never
 * reaches a connection handed back to the pool.
 */
export class Transaction implements Queryable {
  /** The pool the connection came from. */
  readonly pool: Pool;
  readonly #client: pg.PoolClient;
  /** BEGIN, once sent. */
  #begun: Promise<unknown> | undefined;
  #ended = false;
  readonly #withCommit: Statement[] = [];
  readonly #afterCommit = new Set<() => void>();

  /** Made by withTransaction. */
  constructor(pool: Pool, client: pg.PoolClient) {
    this.pool = pool;
    this.#client = client;
  }

  /** Runs a statement in the transaction (BEGIN first, the first time); one with parameters is named (namedQuery). */
  async query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    this.#assertOpen();
    this.#begun ??= this.#client.query('BEGIN');
    await this.#begun;
    this.#assertOpen();
    return this.#client.query<R>(namedQuery(text, values));
  }

  /**
   * Runs `statement` at the end of the transaction, just before COMMIT: for a
   * write nothing in the transaction reads back (the outbox: a transaction's
   * rows join one insert). If it fails, the transaction rolls back and
   * withTransaction throws its error.
   */
  sendWithCommit(statement: Statement): void {
    this.#assertOpen();
    this.#withCommit.push(statement);
  }

  /**
   * Runs `hook` right after the transaction commits, and never if it rolls
   * back; the same function registered twice runs once. A hook must not
   * throw (its error is ignored: the transaction has committed).
   */
  afterCommit(hook: () => void): void {
    this.#assertOpen();
    this.#afterCommit.add(hook);
  }

  /** withTransaction. */
  static async run<T>(pool: Pool, work: (tx: Transaction) => Promise<T>): Promise<T> {
    const client = await pool.connect();
    const tx = new Transaction(pool, client);
    let result: T;
    try {
      result = await work(tx);
      await tx.#commit();
    } catch (error) {
      tx.#ended = true;
      // A connection that cannot even roll back is closed rather than handed out again.
      const rolledBack =
        !tx.#begun ||
        (await client.query('ROLLBACK').then(
          () => true,
          () => false,
        ));
      client.release(!rolledBack);
      throw error;
    }
    client.release();
    for (const hook of tx.#afterCommit) {
      try {
        hook();
      } catch {
        // committed already; a failed hook (a wake-up) must not turn the commit into an error
      }
    }
    return result;
  }

  async #commit(): Promise<void> {
    this.#ended = true;
    if (!this.#begun && this.#withCommit.length === 0) return; // nothing was sent: nothing to commit
    this.#begun ??= this.#client.query('BEGIN');
    await this.#begun;
    for (const { text, values } of this.#withCommit) await this.#client.query(namedQuery(text, values));
    await this.#client.query('COMMIT');
  }

  #assertOpen(): void {
    if (this.#ended) throw new Error('the transaction has ended');
  }
}

/**
 * Runs `work` in a transaction on a connection of `pool`: commits when it
 * returns, rolls back when it throws (and throws its error).
 */
export function withTransaction<T>(pool: Pool, work: (tx: Transaction) => Promise<T>): Promise<T> {
  return Transaction.run(pool, work);
}

/** PostgreSQL's unique_violation, for turning a duplicate into a typed error. */
export function isUniqueViolation(error: unknown, constraint?: string): boolean {
  const e = error as { code?: string; constraint?: string };
  return e?.code === '23505' && (constraint === undefined || e.constraint === constraint);
}
