// How database failures reach a caller (services/kit/errors.ts), as the
// fault and fuzz runs found them: a database that cannot be reached, or that
// ends the session, is an outage (SERVICE_UNAVAILABLE, which callers retry);
// text PostgreSQL cannot store is the caller's bad input (VALIDATION_FAILED);
// anything else stays INTERNAL. The errors are built the way pg and pg-pool
// raise them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { toServiceError } from '../index.ts';
import { dropTestDatabases, testDatabaseUrl } from '../../../test/harness.ts';

function databaseError(code: string, message: string): Error {
  return Object.assign(new pg.DatabaseError(message, message.length, 'error'), { code });
}

test('no connection to be had, or the session ended by the server, is SERVICE_UNAVAILABLE, a transient failure', () => {
  for (const error of [
    databaseError('53300', 'sorry, too many clients already'),
    databaseError('57P03', 'the database system is starting up'),
    databaseError('57P01', 'terminating connection due to administrator command'),
    Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }),
    new Error('timeout exceeded when trying to connect'),
  ]) {
    const mapped = toServiceError(error);
    assert.equal(mapped.code, 'SERVICE_UNAVAILABLE', error.message);
    assert.equal(mapped.transient, true);
    assert.doesNotMatch(mapped.message, /127\.0\.0\.1|clients/, 'nothing internal is told');
  }
});

test('text PostgreSQL cannot store is VALIDATION_FAILED; other database errors stay INTERNAL', () => {
  assert.equal(toServiceError(databaseError('22021', 'invalid byte sequence for encoding "UTF8": 0x00')).code, 'VALIDATION_FAILED');
  assert.equal(toServiceError(databaseError('22P05', 'unsupported Unicode escape sequence')).code, 'VALIDATION_FAILED');
  for (const error of [
    databaseError('42P01', 'relation "orders" does not exist'),
    databaseError('23505', 'duplicate key'),
    new Error('Connection terminated unexpectedly'),
  ]) {
    const mapped = toServiceError(error);
    assert.equal(mapped.code, 'INTERNAL', error.message);
    assert.equal(mapped.message, 'internal error');
  }
});

test('a database closed to new sessions (ALLOW_CONNECTIONS false, as in a failover) is SERVICE_UNAVAILABLE, as PostgreSQL itself says it', async () => {
  const url = testDatabaseUrl('errors');
  const name = new URL(url).pathname.slice(1);
  const admin = new pg.Client({ connectionString: new URL('/postgres', url).toString() });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
    await admin.query(`ALTER DATABASE ${pg.escapeIdentifier(name)} WITH ALLOW_CONNECTIONS false`);
    const client = new pg.Client({ connectionString: url });
    const refused = await client.connect().then(
      () => undefined,
      (error: unknown) => error,
    );
    await client.end().catch(() => {});
    assert.ok(refused, 'the login is refused');
    const mapped = toServiceError(refused);
    assert.equal(mapped.code, 'SERVICE_UNAVAILABLE', (refused as Error).message);
    assert.equal(mapped.transient, true);
    // The same code from a statement is not an outage.
    assert.equal(toServiceError(databaseError('55000', 'currval of sequence "s" is not yet defined in this session')).code, 'INTERNAL');
  } finally {
    await admin.query(`ALTER DATABASE ${pg.escapeIdentifier(name)} WITH ALLOW_CONNECTIONS true`).catch(() => {});
    await admin.end();
    await dropTestDatabases();
  }
});
