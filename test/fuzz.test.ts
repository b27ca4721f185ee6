// Poison and bad input against the whole shop running as real processes (five
// services and the BFF, each its own main.ts): every request subject, every
// event subject and the GraphQL endpoint get input generated from the
// contracts and broken in every way (test/chaos/fuzz-cases.ts). Each one must
// be answered with a typed error (a bad event: dead-lettered as poison by
// every consumer of its subject), no process may exit, and no table of any
// service may change. The counts are printed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { headers as natsHeaders, type NatsError } from 'nats';
import { ERROR_CODE_HEADER, ErrorCodes, PROCESSES, isErrorCode, streams } from '../subjects/index.ts';
import { listDeadLetters } from '../scripts/dlq.ts';
import { badEvents, badGraphql, badRequests, type BadGraphql } from './chaos/fuzz-cases.ts';
import { Shop, email } from './chaos/shop.ts';
import { waitFor } from './harness.ts';

let shop: Shop;
let token: string;
let baseline: Record<string, string>;
const counts = { requests: 0, events: 0, deadLetters: 0, graphql: 0 };

before(async () => {
  shop = await Shop.start({ bff: { RATE_LIMIT_MAX: '100000' } });
  const registered = await graphql({
    what: 'sign up',
    body: JSON.stringify({
      query: 'mutation($e: String!) { register(email: $e, name: "Fuzz", password: "correct horse") { token } }',
      variables: { e: email('fuzz') },
    }),
  });
  token = (registered.body as { data: { register: { token: string } } }).data.register.token;
  await shop.quiescent();
  baseline = await shop.fingerprint();
});

after(async () => {
  if (shop) {
    const table = [
      ['bad requests', counts.requests],
      ['bad events', counts.events],
      ['dead letters (poison)', counts.deadLetters],
      ['bad GraphQL requests', counts.graphql],
      ['bad inputs tried', counts.requests + counts.events + counts.graphql],
      ['crashes', shop.crashes.length],
    ];
    console.log(`\nfuzz: ${table.map(([name, n]) => `${name} ${n}`).join(', ')}`);
  }
  await shop?.close();
});

/** Runs `work` over `items`, at most `limit` at a time. */
async function pool<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

async function unchanged(): Promise<void> {
  assert.deepEqual(shop.crashes, [], 'no process exited');
  assert.equal(shop.alive().length, PROCESSES.length, 'every service and the BFF still run');
  await shop.quiescent();
  assert.deepEqual(await shop.fingerprint(), baseline, 'no table of any service changed');
}

test('every request subject: each bad request is answered with a typed error (VALIDATION_FAILED where the contract refuses it); nothing changes', async () => {
  const cases = badRequests();
  const subjects = new Set(cases.map((c) => c.subject));
  assert.ok(subjects.size >= 15, `every operation has cases (${subjects.size})`);
  const problems: string[] = [];
  await pool(cases, 16, async (bad) => {
    const headers = natsHeaders();
    for (const [key, value] of Object.entries(bad.headers ?? {})) headers.set(key, value);
    let code: string | undefined;
    try {
      const reply = await shop.nc.request(bad.subject, bad.payload, { timeout: 15_000, headers });
      code = reply.headers?.get(ERROR_CODE_HEADER) || undefined;
    } catch (error) {
      problems.push(`${bad.subject} (${bad.what}): no answer, ${(error as NatsError).message}`);
      return;
    }
    const typed = isErrorCode(code) && ErrorCodes[code] < 500;
    const fine =
      bad.expect === 'VALIDATION_FAILED' ? code === 'VALIDATION_FAILED' : bad.expect === 'refused' ? typed : code === undefined || typed;
    if (!fine) problems.push(`${bad.subject} (${bad.what}): answered ${code ?? 'with success'}`);
  });
  counts.requests = cases.length;
  assert.deepEqual(problems, [], `${problems.length} of ${cases.length} bad requests were not refused as they should be`);
  await unchanged();
});

test('every event subject: each poison event is dead-lettered by every consumer of it; nothing changes', async () => {
  const cases = badEvents();
  // Who consumes what, as the server knows it.
  const consumersOf = new Map<string, string[]>();
  for (const stream of Object.values(streams).filter((stream) => stream !== streams.DLQ)) {
    for await (const consumer of shop.jsm.consumers.list(stream.name)) {
      const subject = consumer.config.filter_subject ?? '';
      consumersOf.set(subject, [...(consumersOf.get(subject) ?? []), consumer.name]);
    }
  }
  assert.ok(consumersOf.size >= 9, 'the services created their consumers');

  const js = shop.nc.jetstream();
  const expected = new Set<string>();
  for (const bad of cases) {
    const headers = natsHeaders();
    for (const [key, value] of Object.entries(bad.headers ?? {})) headers.set(key, value);
    const ack = await js.publish(bad.subject, bad.payload, { msgID: randomUUID(), headers });
    for (const durable of consumersOf.get(bad.subject) ?? []) expected.add(`${bad.stream}:${ack.seq}:${durable}`);
  }
  counts.events = cases.length;
  assert.ok(expected.size > cases.length / 2, 'most bad events have consumers');

  await waitFor(async () => (await shop.jsm.streams.info(streams.DLQ.name)).state.messages >= expected.size, {
    timeoutMs: 40_000,
    intervalMs: 200,
    what: `${expected.size} dead letters`,
  });
  const letters = await listDeadLetters(js, shop.jsm);
  counts.deadLetters = letters.length;
  const found = new Set(letters.map((l) => `${l.originalStream}:${l.originalSeq}:${l.consumer}`));
  const missing = [...expected].filter((key) => !found.has(key));
  const unexplained = letters.filter((l) => !expected.has(`${l.originalStream}:${l.originalSeq}:${l.consumer}`));
  assert.deepEqual(missing, [], 'every consumer dead-lettered every bad event of its subject');
  assert.deepEqual(
    unexplained.map((l) => `${l.subject} ${l.error}`),
    [],
    'no other dead letter',
  );
  const notPoison = letters.filter((l) => !l.error?.startsWith('poison: '));
  assert.deepEqual(
    notPoison.map((l) => l.error),
    [],
    'each was refused at once as poison, not retried',
  );
  await unchanged();
});

async function graphql(bad: BadGraphql): Promise<{ status: number; body: unknown }> {
  const response = await fetch(`${shop.bff!.url}/graphql${bad.search ?? ''}`, {
    method: bad.method ?? 'POST',
    headers: {
      ...(bad.body === undefined ? {} : { 'content-type': bad.contentType ?? 'application/json' }),
      ...(bad.signedIn ? { authorization: `Bearer ${token}` } : {}),
    },
    ...(bad.body === undefined ? {} : { body: bad.body }),
  });
  const text = await response.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // reported below as untyped
  }
  return { status: response.status, body };
}

/** Why a response is not a typed refusal; undefined when it is one. */
function notTyped({ status, body }: { status: number; body: unknown }): string | undefined {
  if (status >= 500) return `status ${status}`;
  if (typeof body !== 'object' || body === null) return `status ${status}, body not JSON: ${String(body).slice(0, 100)}`;
  const { errors, code, data } = body as { errors?: { extensions?: { code?: unknown } }[]; code?: unknown; data?: unknown };
  if (Array.isArray(errors) && errors.length > 0) {
    const untyped = errors.filter((e) => typeof e.extensions?.code !== 'string' || e.extensions.code === 'INTERNAL');
    return untyped.length === 0
      ? undefined
      : `${untyped.length} error(s) without a code or INTERNAL: ${JSON.stringify(untyped[0]).slice(0, 200)}`;
  }
  // Refused by fastify before GraphQL (body too large, content type): its own error with a code.
  if (typeof code === 'string' && status >= 400) return undefined;
  return `accepted (status ${status}, data ${JSON.stringify(data ?? null).slice(0, 100)})`;
}

// Found by this file, then fixed in the BFF: variable coercion errors (graphql-js keeps the
// scalar's error as originalError) and a subscription sent over plain HTTP were answered
// INTERNAL. Kept as their own test so a regression names them.
const KNOWN_BFF_DEFECTS = new Set([
  'a variable of the wrong type',
  'a quantity past Int',
  'a price past Cents',
  'a subscription over HTTP POST with a bad id',
]);

async function tryGraphql(cases: readonly BadGraphql[]): Promise<string[]> {
  const problems: string[] = [];
  for (const bad of cases) {
    const problem = notTyped(await graphql(bad));
    if (problem) problems.push(`${bad.what}: ${problem}`);
  }
  return problems;
}

test('GraphQL: malformed documents, deep nesting, alias floods, huge variables: each refused with a code; nothing changes', async () => {
  const cases = badGraphql();
  counts.graphql = cases.length;
  const problems = await tryGraphql(cases.filter((bad) => !KNOWN_BFF_DEFECTS.has(bad.what)));
  assert.deepEqual(problems, [], `${problems.length} of ${cases.length} bad GraphQL requests were not refused with a code`);
  // The BFF still answers a good request.
  const me = await graphql({ what: 'me', body: JSON.stringify({ query: '{ me { email } }' }), signedIn: true });
  assert.equal(me.status, 200);
  await unchanged();
});

test('GraphQL: mistyped variables and an HTTP subscription are refused as client errors', async () => {
  const problems = await tryGraphql(badGraphql().filter((bad) => KNOWN_BFF_DEFECTS.has(bad.what)));
  assert.deepEqual(problems, []);
  await unchanged();
});

// Found by this file and reported: the BFF has no limit on aliases (or query
// cost), so one request, one unit of the rate limit, fans out to a service
// call per alias: 10 000 aliases made over 10 000 products.get requests.
test('an alias flood is refused before it reaches the services', async () => {
  let calls = 0;
  const spy = shop.nc.subscribe('products.get', { callback: () => calls++ });
  try {
    const query = `{ ${Array.from({ length: 2000 }, (_, i) => `a${i}: product(id: "${randomUUID()}") { id }`).join(' ')} }`;
    const answer = await graphql({ what: 'alias flood', body: JSON.stringify({ query }) });
    await shop.nc.flush();
    assert.equal((answer.body as { data?: unknown }).data ?? null, null, 'refused as a whole');
    assert.ok(calls < 100, `${calls} products.get requests for one HTTP request`);
  } finally {
    spy.unsubscribe();
  }
  await unchanged();
});
