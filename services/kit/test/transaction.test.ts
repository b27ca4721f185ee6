// The transaction object of db.ts against a real PostgreSQL: commit and
// rollback, statements with COMMIT, hooks after
// commit, no statement after the end, and statements named (prepared once
// per connection) through pg's public query config.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger, createPool, ensureDatabase, preparedQueries, withTransaction, type Pool, type Transaction } from '../index.ts';
import { dropTestDatabases, testDatabaseUrl } from '../../../test/harness.ts';

let pool: Pool;

before(async () => {
  const url = testDatabaseUrl('kit');
  await ensureDatabase(url, createLogger('kit-test', 'silent'));
  pool = createPool(url, 2);
  await pool.query('CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)');
});

after(async () => {
  await pool?.end();
  await dropTestDatabases();
});

let nextId = 0;
const newId = () => ++nextId;

async function note(id: number): Promise<string | undefined> {
  const { rows } = await pool.query<{ body: string }>('SELECT body FROM notes WHERE id = $1', [id]);
  return rows[0]?.body;
}

test('commits when the work returns, with its result; rolls back and rethrows when it throws', async () => {
  const kept = newId();
  const result = await withTransaction(pool, async (tx) => {
    await tx.query('INSERT INTO notes (id, body) VALUES ($1, $2)', [kept, 'kept']);
    return 'done';
  });
  assert.equal(result, 'done');
  assert.equal(await note(kept), 'kept');

  const dropped = newId();
  await assert.rejects(
    withTransaction(pool, async (tx) => {
      await tx.query('INSERT INTO notes (id, body) VALUES ($1, $2)', [dropped, 'dropped']);
      throw new Error('changed my mind');
    }),
    /changed my mind/,
  );
  assert.equal(await note(dropped), undefined);
});

test('a statement with parameters, in the transaction or with COMMIT, runs as its text says', async () => {
  const [first, last, clashing] = [newId(), newId(), newId()];
  // Quotes, a backslash and array elements: values travel as parameters, never inlined.
  const body = `it's "quoted" \\ {braced}`;
  await withTransaction(pool, async (tx) => {
    const inserted = await tx.query('INSERT INTO notes (id, body) SELECT * FROM unnest($1::int[], $2::text[]) RETURNING body', [
      [first],
      [body],
    ]);
    assert.deepEqual(inserted.rows, [{ body }]);
    tx.sendWithCommit({ text: 'INSERT INTO notes (id, body) VALUES ($1, $2)', values: [last, body] });
  });
  assert.equal(await note(first), body);
  assert.equal(await note(last), body);

  await assert.rejects(
    withTransaction(pool, async (tx) => {
      await tx.query('INSERT INTO notes (id, body) VALUES ($1, $2)', [clashing, 'undone']);
      tx.sendWithCommit({ text: 'INSERT INTO notes (id, body) VALUES ($1, $2)', values: [first, 'duplicate key'] });
    }),
    (error: { code?: string }) => error.code === '23505',
  );
  assert.equal(await note(clashing), undefined);
});

test('sendWithCommit: the statement commits with the transaction; when it fails, nothing of the transaction stays', async () => {
  const [early, late] = [newId(), newId()];
  await withTransaction(pool, async (tx) => {
    tx.sendWithCommit({ text: 'INSERT INTO notes (id, body) VALUES ($1, $2)', values: [late, 'with commit'] });
    await tx.query('INSERT INTO notes (id, body) VALUES ($1, $2)', [early, 'early']);
    // Not sent yet: the transaction's own statements do not see it.
    assert.equal((await tx.query('SELECT 1 FROM notes WHERE id = $1', [late])).rowCount, 0);
  });
  assert.equal(await note(early), 'early');
  assert.equal(await note(late), 'with commit');

  // Only statements for COMMIT: the transaction still begins and commits.
  const alone = newId();
  await withTransaction(pool, async (tx) =>
    tx.sendWithCommit({ text: 'INSERT INTO notes (id, body) VALUES ($1, $2)', values: [alone, 'alone'] }),
  );
  assert.equal(await note(alone), 'alone');

  const [written, clashing] = [newId(), early];
  let hookRan = false;
  await assert.rejects(
    withTransaction(pool, async (tx) => {
      await tx.query('INSERT INTO notes (id, body) VALUES ($1, $2)', [written, 'undone']);
      tx.sendWithCommit({ text: 'INSERT INTO notes (id, body) VALUES ($1, $2)', values: [clashing, 'duplicate key'] });
      tx.afterCommit(() => (hookRan = true));
    }),
    (error: { code?: string }) => error.code === '23505',
  );
  assert.equal(await note(written), undefined);
  assert.equal(hookRan, false);
  // The connection went back clean: the pool still works.
  assert.equal((await pool.query('SELECT 1 AS one')).rows[0].one, 1);
});

test('afterCommit runs after the commit, once per function, never after a rollback; a failing hook changes nothing', async () => {
  const id = newId();
  let calls = 0;
  let read: Promise<string | undefined> | undefined;
  const hook = () => {
    calls++;
    read = note(id);
  };
  await withTransaction(pool, async (tx) => {
    await tx.query('INSERT INTO notes (id, body) VALUES ($1, $2)', [id, 'visible']);
    tx.afterCommit(hook);
    tx.afterCommit(hook);
    tx.afterCommit(() => {
      throw new Error('a hook failing after the commit');
    });
    assert.equal(calls, 0);
  });
  assert.equal(calls, 1);
  // Run once committed: another connection sees what the transaction wrote.
  assert.equal(await read, 'visible');

  let ran = false;
  await assert.rejects(
    withTransaction(pool, async (tx) => {
      tx.afterCommit(() => (ran = true));
      throw new Error('rolled back');
    }),
  );
  assert.equal(ran, false);
});

test('nothing reaches the connection once the transaction has ended', async () => {
  let escaped: Transaction | undefined;
  await withTransaction(pool, async (tx) => {
    escaped = tx;
  });
  await assert.rejects(escaped!.query('SELECT 1'), /transaction has ended/);
  assert.throws(() => escaped!.sendWithCommit({ text: 'SELECT 1', values: [] }), /transaction has ended/);
  assert.throws(() => escaped!.afterCommit(() => {}), /transaction has ended/);
});

test('a transaction whose connection is cut fails, and the pool carries on', async () => {
  await assert.rejects(
    withTransaction(pool, async (tx) => {
      await tx.query('SELECT pg_terminate_backend(pg_backend_pid())');
    }),
  );
  const id = newId();
  await withTransaction(pool, (tx) => tx.query('INSERT INTO notes (id, body) VALUES ($1, $2)', [id, 'after the cut']));
  assert.equal(await note(id), 'after the cut');
});

test('statements with parameters are prepared once per connection, in transactions and through preparedQueries', async () => {
  const text = 'SELECT count(*)::int AS n FROM notes WHERE id > $1';
  const preparedHere = (db: { query: Transaction['query'] }) =>
    db.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_prepared_statements WHERE statement = $1', [text]);
  await withTransaction(pool, async (tx) => {
    await tx.query(text, [0]);
    assert.equal((await preparedHere(tx)).rows[0]!.n, 1);
  });
  // Statements without parameters (several may share a text) are not prepared.
  await withTransaction(pool, async (tx) => {
    await tx.query('SELECT 41 + 1 AS answer');
    const { rows } = await tx.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_prepared_statements WHERE statement LIKE 'SELECT 41%'",
      [],
    );
    assert.equal(rows[0]!.n, 0);
  });

  const single = createPool(pool.options.connectionString!, 1);
  try {
    const db = preparedQueries(single);
    await db.query(text, [0]);
    assert.equal((await preparedHere(db)).rows[0]!.n, 1);
  } finally {
    await single.end();
  }
});
