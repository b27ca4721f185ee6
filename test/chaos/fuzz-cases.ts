// Bad input, generated from the contracts themselves, so every subject is
// covered and a new subject is covered without touching this file:
//   - requests: for every request-reply operation, a valid request is built
//     from its schema, then broken in every way (wrong types, missing fields,
//     huge strings, extra and prototype-polluting keys), plus payloads that are
//     not JSON or not objects; only those the contract itself refuses are
//     kept, so each must be answered VALIDATION_FAILED and change nothing;
//   - events: the same for every event's envelope and data; each must go to
//     the DLQ as poison from every consumer of its subject, and change nothing;
//   - headers: requests and events with malformed trace context, spoofed error
//     headers and oversized values;
//   - GraphQL: malformed documents, deep nesting, alias floods, huge and
//     mistyped variables, wrong methods, bodies and content types.
import { randomUUID } from 'node:crypto';
import type { TSchema } from '@sinclair/typebox';
import { EventEnvelope, allEvents, allOperations, checker, type EventContract, type RpcContract } from '../../subjects/index.ts';

const envelopeCheck = checker(EventEnvelope);

/** Well under nats.conf's max_payload (1 MB), so the server carries it to the service. */
export const HUGE_BYTES = 900 * 1024;

// --- A valid value for a schema ----------------------------------------------------------------

const PATTERN_SAMPLES: Record<string, string> = {
  '^[A-Z]{3}$': 'EUR',
  '^[A-Z]{2}$': 'DE',
  '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$': 'FUZZ-1',
  '\\S': 'Fuzz',
};

/** A value that fits `schema` (required properties only), for the shapes our contracts use. */
export function sample(schema: TSchema): unknown {
  if ('const' in schema) return schema.const;
  if (Array.isArray(schema.anyOf)) return sample(schema.anyOf[0] as TSchema);
  switch (schema.type) {
    case 'object': {
      const value: Record<string, unknown> = {};
      const required = new Set<string>((schema.required as string[] | undefined) ?? []);
      for (const [key, property] of Object.entries((schema.properties ?? {}) as Record<string, TSchema>)) {
        if (required.has(key)) value[key] = sample(property);
      }
      return value;
    }
    case 'array':
      return Array.from({ length: (schema.minItems as number | undefined) ?? 0 }, () => sample(schema.items as TSchema));
    case 'string': {
      if (schema.format === 'uuid') return randomUUID();
      if (schema.format === 'email') return 'fuzz@example.com';
      if (schema.format === 'date-time') return new Date().toISOString();
      if (typeof schema.pattern === 'string' && PATTERN_SAMPLES[schema.pattern]) return PATTERN_SAMPLES[schema.pattern];
      return 'x'.repeat(Math.max(1, (schema.minLength as number | undefined) ?? 1));
    }
    case 'integer':
    case 'number':
      return Math.max(1, (schema.minimum as number | undefined) ?? 1);
    case 'boolean':
      return true;
    case 'null':
      return null;
    default:
      return {}; // Unknown
  }
}

// --- Ways to break a value ---------------------------------------------------------------------

type Path = (string | number)[];

/** Every path into `value` (objects and the first item of arrays), the root included. */
function paths(value: unknown, prefix: Path = []): Path[] {
  const found: Path[] = [prefix];
  if (Array.isArray(value)) {
    if (value.length > 0) found.push(...paths(value[0], [...prefix, 0]));
  } else if (value && typeof value === 'object') {
    for (const [key, child] of Object.entries(value)) found.push(...paths(child, [...prefix, key]));
  }
  return found;
}

function setAt(root: unknown, path: Path, replacement: unknown, remove = false): unknown {
  if (path.length === 0) return replacement;
  const copy = structuredClone(root) as Record<string | number, unknown>;
  let node = copy;
  for (const key of path.slice(0, -1)) node = node[key] as Record<string | number, unknown>;
  const last = path.at(-1)!;
  if (remove) {
    if (Array.isArray(node)) node.splice(Number(last), 1);
    else delete node[last];
  } else node[last] = replacement;
  return copy;
}

function deepObject(depth: number): unknown {
  let value: unknown = 'bottom';
  for (let i = 0; i < depth; i++) value = { a: value };
  return value;
}

/** Values of the wrong kind for any field; each tried at every path. */
function replacements(): [string, unknown][] {
  return [
    ['null', null],
    ['a number', 42],
    ['a negative number', -1],
    ['a fraction', 1.5],
    ['a huge number', 1e308],
    ['a string', 'not what it should be'],
    ['an empty string', ''],
    ['a boolean', true],
    ['an array', []],
    ['an object', {}],
    ['a 64 KiB string', 'A'.repeat(64 * 1024)],
    ['a deeply nested object', deepObject(200)],
    ['a number as text', '12'],
    ['a uuid with a payload', `${randomUUID()}' OR '1'='1`],
  ];
}

/** Payloads that are not a JSON object at all. */
export function notObjects(): [string, string | Uint8Array][] {
  return [
    ['an empty payload', ''],
    ['truncated JSON', '{"id": "'],
    ['JSON with a trailing comma', '{"a": 1,}'],
    ['single-quoted JSON', "{'id': 'x'}"],
    ['null', 'null'],
    ['an array', '[]'],
    ['a string', '"just text"'],
    ['a number', '12345'],
    ['true', 'true'],
    ['NaN', 'NaN'],
    ['a byte-order mark before JSON', '\ufeff{}'],
    ['raw control bytes', Buffer.from([0, 1, 2, 3, 255, 254, 0x7b])],
    ['invalid UTF-8', Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x22, 0x7d])],
    ['10 000 nested arrays', `${'['.repeat(10_000)}${']'.repeat(10_000)}`],
    ['a 900 KiB string', JSON.stringify('x'.repeat(HUGE_BYTES))],
    ['900 KiB of junk', 'q'.repeat(HUGE_BYTES)],
  ];
}

export interface Mutation {
  what: string;
  value: unknown;
}

/** `valid`, broken in every way: each field removed, replaced by every wrong kind, and extra keys. */
export function mutations(valid: unknown): Mutation[] {
  const found: Mutation[] = [];
  for (const path of paths(valid)) {
    const where = path.length === 0 ? 'the whole value' : `/${path.join('/')}`;
    if (path.length > 0) found.push({ what: `${where} missing`, value: setAt(valid, path, undefined, true) });
    for (const [kind, replacement] of replacements()) found.push({ what: `${where} as ${kind}`, value: setAt(valid, path, replacement) });
  }
  if (valid && typeof valid === 'object' && !Array.isArray(valid)) {
    found.push({ what: 'an unknown field', value: { ...valid, unexpected: 'field' } });
    // JSON.parse makes "__proto__" an own key: a validator or merge that forgets would pollute prototypes.
    const rest = JSON.stringify(valid).slice(1);
    found.push({
      what: 'a __proto__ key',
      value: JSON.parse(`{"__proto__": {"role": "admin", "polluted": true}${rest === '}' ? '' : ','} ${rest}`),
    });
    found.push({ what: 'a constructor key', value: { ...valid, constructor: { prototype: { polluted: true } } } });
  }
  return found;
}

// --- Requests ----------------------------------------------------------------------------------

export interface BadRequest {
  subject: string;
  what: string;
  payload: string | Uint8Array;
  headers?: Record<string, string>;
  /**
   * What must come back: VALIDATION_FAILED; `refused`: a typed error below 500
   * (a string the contract allows but PostgreSQL cannot store); `answered`: a
   * reply or a typed error below 500 (a valid request with odd headers).
   */
  expect: 'VALIDATION_FAILED' | 'refused' | 'answered';
}

/** A valid request for `contract`, built from its schema. */
export function validRequest(contract: RpcContract): unknown {
  const value = sample(contract.request.schema);
  if (!contract.request.check(value)) throw new Error(`cannot build a valid ${contract.subject} request from its schema`);
  return value;
}

/** The text a service reads from a payload: nats.js decodes with TextDecoder, which drops a leading BOM. */
function decoded(payload: string | Uint8Array): string {
  return new TextDecoder().decode(typeof payload === 'string' ? Buffer.from(payload) : payload);
}

function refusedByContract(contract: { check(value: unknown): boolean }, payload: string | Uint8Array): boolean {
  try {
    return !contract.check(JSON.parse(decoded(payload)));
  } catch {
    return true; // not JSON
  }
}

/** Strange headers: broken trace context, our error headers spoofed on a request, an oversized value. */
export function oddHeaders(): [string, Record<string, string>][] {
  return [
    ['a malformed traceparent', { traceparent: 'zz-not-a-trace-parent', tracestate: '===,,,' }],
    ['an all-zero traceparent', { traceparent: `00-${'0'.repeat(32)}-${'0'.repeat(16)}-01` }],
    ['a spoofed error code', { 'Shop-Error-Code': 'INTERNAL', 'Nats-Service-Error-Code': '500' }],
    ['a spoofed dead-letter header', { 'Shop-Dlq-Subject': 'orders.events.confirmed', 'Shop-Dlq-Error': 'x' }],
    ['a 16 KiB header value', { 'X-Fuzz': 'h'.repeat(16 * 1024) }],
  ];
}

/** Every bad request for every operation (or those of `subjects`). */
/**
 * Idempotent operations that store something even for an id nobody knows, so
 * a valid body is no "nothing changes" case: a hold for an order shipping has
 * not seen yet leaves a tombstone, so its confirmation, when it comes, ships nothing.
 */
const WRITES_ON_A_VALID_BODY = new Set(['shipments.hold']);

export function badRequests(operations: readonly RpcContract[] = allOperations): BadRequest[] {
  const cases: BadRequest[] = [];
  for (const contract of operations) {
    const valid = validRequest(contract);
    const seen = new Set<string>();
    const add = (what: string, payload: string | Uint8Array, headers?: Record<string, string>) => {
      const key = typeof payload === 'string' ? payload : Buffer.from(payload).toString('base64');
      if (seen.has(key) || !refusedByContract(contract.request, payload)) return;
      seen.add(key);
      cases.push({ subject: contract.subject, what, payload, expect: 'VALIDATION_FAILED', ...(headers ? { headers } : {}) });
    };
    for (const [what, payload] of notObjects()) add(what, payload);
    for (const { what, value } of mutations(valid)) {
      const text = JSON.stringify(value);
      if (text !== undefined) add(what, text);
    }
    // A NUL character in each string the contract allows: PostgreSQL cannot store it.
    // (Not in a password: only its hash is stored, so any character is fine there.)
    for (const path of paths(valid)) {
      const at = path.reduce<unknown>((node, key) => (node as Record<string | number, unknown>)[key], valid);
      if (typeof at !== 'string' || path.length === 0 || path.at(-1) === 'password') continue;
      const payload = JSON.stringify(setAt(valid, path, `nul\u0000${at}`));
      if (!refusedByContract(contract.request, payload)) {
        cases.push({ subject: contract.subject, what: `/${path.join('/')} with a NUL character`, payload, expect: 'refused' });
      }
    }
    // Odd headers on a refused request, and on a valid one (answered as usual: odd headers are ignored).
    for (const [what, headers] of oddHeaders()) {
      cases.push({
        subject: contract.subject,
        what: `${what}, invalid body`,
        payload: '{"no": "such field"}',
        headers,
        expect: 'VALIDATION_FAILED',
      });
      if (contract.idempotent && !WRITES_ON_A_VALID_BODY.has(contract.subject)) {
        cases.push({ subject: contract.subject, what: `${what}, valid body`, payload: JSON.stringify(valid), headers, expect: 'answered' });
      }
    }
  }
  return cases;
}

// --- Events ------------------------------------------------------------------------------------

export interface BadEvent {
  subject: string;
  stream: string;
  what: string;
  payload: string | Uint8Array;
  headers?: Record<string, string>;
}

/** Would the consumer runner take this payload as an event of `contract`? */
export function acceptedAsEvent(contract: EventContract, payload: string | Uint8Array): boolean {
  let parsed: unknown;
  try {
    parsed = JSON.parse(decoded(payload));
  } catch {
    return false;
  }
  return envelopeCheck.check(parsed) && parsed.type === contract.subject && contract.data.check(parsed.data);
}

export function validEvent(contract: EventContract): { id: string; type: string; occurredAt: string; data: unknown } {
  const data = sample(contract.data.schema);
  if (!contract.data.check(data)) throw new Error(`cannot build valid ${contract.subject} data from its schema`);
  return { id: randomUUID(), type: contract.subject, occurredAt: new Date().toISOString(), data };
}

/** Every poison event for every event subject (or those given). */
export function badEvents(events: readonly EventContract[] = allEvents): BadEvent[] {
  const cases: BadEvent[] = [];
  for (const contract of events) {
    const valid = validEvent(contract);
    const seen = new Set<string>();
    const add = (what: string, payload: string | Uint8Array, headers?: Record<string, string>) => {
      const key = typeof payload === 'string' ? payload : Buffer.from(payload).toString('base64');
      if (seen.has(key) || acceptedAsEvent(contract, payload)) return;
      seen.add(key);
      cases.push({ subject: contract.subject, stream: contract.stream, what, payload, ...(headers ? { headers } : {}) });
    };
    for (const [what, payload] of notObjects()) add(what, payload);
    // The envelope broken, then the data broken field by field inside a sound envelope.
    for (const { what, value } of mutations({ id: valid.id, type: valid.type, occurredAt: valid.occurredAt })) {
      add(`envelope ${what}`, JSON.stringify({ ...(value as object), data: valid.data }) ?? '');
    }
    add('envelope of another subject', JSON.stringify({ ...valid, type: contract.subject.replace(/\.[^.]+$/, '.other') }));
    for (const { what, value } of mutations(valid.data)) {
      add(`data ${what}`, JSON.stringify({ ...valid, id: randomUUID(), data: value }));
    }
    for (const [what, headers] of oddHeaders()) {
      add(`${what}, data missing`, JSON.stringify({ id: randomUUID(), type: contract.subject, occurredAt: valid.occurredAt }), headers);
    }
  }
  return cases;
}

// --- GraphQL -----------------------------------------------------------------------------------

export interface BadGraphql {
  what: string;
  method?: 'GET' | 'POST';
  /** Query string for GET. */
  search?: string;
  body?: string;
  contentType?: string;
  /** Send the signed-in customer's token. */
  signedIn?: boolean;
}

function gqlBody(query: string, variables?: unknown, operationName?: string): string {
  return JSON.stringify({ query, ...(variables === undefined ? {} : { variables }), ...(operationName ? { operationName } : {}) });
}

function nested(depth: number): string {
  // orders → node → customer → orders → … : each round trip is three levels deeper.
  let inner = 'id';
  for (let i = 0; i < depth; i++) inner = `customer { orders { edges { node { ${inner} } } } }`;
  return `{ orders { edges { node { ${inner} } } } }`;
}

export function badGraphql(): BadGraphql[] {
  const aliases = (count: number, field: string) => `{ ${Array.from({ length: count }, (_, i) => `a${i}: ${field}`).join(' ')} }`;
  const place = 'mutation($lines: [OrderLineInput!]!, $token: String!) { placeOrder(lines: $lines, paymentToken: $token) { id } }';
  const cases: BadGraphql[] = [
    // Malformed documents
    { what: 'an empty query', body: gqlBody('') },
    { what: 'an unclosed selection', body: gqlBody('{ products { edges { node { id }') },
    { what: 'only a keyword', body: gqlBody('mutation') },
    { what: 'stray braces', body: gqlBody('}{}{') },
    { what: 'binary junk', body: gqlBody('\u0000\u0001\u0002\uffff') },
    { what: 'an unknown field', body: gqlBody('{ secrets { id } }') },
    { what: 'an unknown argument', body: gqlBody('{ products(drop: true) { edges { node { id } } } }') },
    { what: 'a wrongly typed literal', body: gqlBody('{ products(first: "ten") { edges { node { id } } } }') },
    { what: 'an Int out of range', body: gqlBody('{ products(first: 99999999999) { edges { node { id } } } }') },
    { what: 'two anonymous operations', body: gqlBody('{ me { id } } { me { email } }') },
    { what: 'two operations and no operationName', body: gqlBody('query A { me { id } } query B { me { id } }') },
    { what: 'an unknown operationName', body: gqlBody('query A { me { id } }', undefined, 'Nope') },
    { what: 'cyclic fragments', body: gqlBody('fragment A on Query { ...B } fragment B on Query { ...A } { ...A }') },
    { what: 'an unknown directive', body: gqlBody('{ me @drop { id } }') },
    { what: 'a subscription over HTTP POST with a bad id', body: gqlBody('subscription { orderUpdated(id: "x") { id } }') },
    { what: 'a 900 KiB document of junk', body: gqlBody(`{ ${'x'.repeat(HUGE_BYTES)} }`) },
    // Deep nesting and floods
    { what: 'nesting 3 levels past the depth limit', body: gqlBody(nested(2)), signedIn: true },
    { what: 'nesting 60 levels deep', body: gqlBody(nested(20)), signedIn: true },
    { what: '2 000 aliases of an invalid lookup', body: gqlBody(aliases(2000, 'product(id: "not-a-uuid") { id }')) },
    { what: '2 000 aliases of a field needing sign-in', body: gqlBody(aliases(2000, 'me { id }')) },
    { what: '5 000 aliases of an unknown field', body: gqlBody(aliases(5000, 'nope')) },
    // Variables
    {
      what: 'a variable of the wrong type',
      body: gqlBody('query($n: Int) { products(first: $n) { edges { node { id } } } }', { n: 'ten' }),
    },
    { what: 'a required variable missing', body: gqlBody(place, { token: 'tok_visa' }), signedIn: true },
    { what: 'variables that are not an object', body: JSON.stringify({ query: '{ me { id } }', variables: [1, 2, 3] }) },
    {
      what: 'a 500 KiB search string',
      body: gqlBody('query($s: String) { products(search: $s) { edges { node { id } } } }', { s: 's'.repeat(500 * 1024) }),
    },
    {
      what: '10 000 order lines',
      body: gqlBody(place, { lines: Array.from({ length: 10_000 }, () => ({ productId: randomUUID(), quantity: 1 })), token: 'tok_visa' }),
      signedIn: true,
    },
    {
      what: 'a quantity past Int',
      body: gqlBody(place, { lines: [{ productId: randomUUID(), quantity: 2 ** 40 }], token: 'tok_visa' }),
      signedIn: true,
    },
    {
      what: 'a negative quantity',
      body: gqlBody(place, { lines: [{ productId: randomUUID(), quantity: -5 }], token: 'tok_visa' }),
      signedIn: true,
    },
    {
      what: 'a product id that is not an id',
      body: gqlBody(place, { lines: [{ productId: "1' OR '1'='1", quantity: 1 }], token: 'tok_visa' }),
      signedIn: true,
    },
    {
      what: 'an empty payment token',
      body: gqlBody(place, { lines: [{ productId: randomUUID(), quantity: 1 }], token: '' }),
      signedIn: true,
    },
    {
      what: 'a price past Cents',
      body: gqlBody('mutation($p: MoneyInput!) { createProduct(input: { sku: "x", name: "x", price: $p }) { id } }', {
        p: { amount: 1e20, currency: 'EUR' },
      }),
      signedIn: true,
    },
    { what: 'a cancel of an id that is not one', body: gqlBody('mutation { cancelOrder(id: "../../etc/passwd") { id } }'), signedIn: true },
    {
      what: 'a deeply nested variable',
      body: gqlBody('query($s: String) { products(search: $s) { edges { node { id } } } }', { s: deepObject(500) }),
    },
    // The HTTP around it
    { what: 'a body that is not JSON', body: '{"query": "{ me { id } }"' },
    { what: 'a JSON body that is not an object', body: '"{ me { id } }"' },
    { what: 'a batch of queries', body: JSON.stringify([{ query: '{ me { id } }' }, { query: '{ me { id } }' }]) },
    { what: 'a query that is not a string', body: JSON.stringify({ query: { me: true } }) },
    { what: 'no query at all', body: JSON.stringify({ variables: {} }) },
    { what: 'a text/plain body', body: gqlBody('{ me { id } }'), contentType: 'text/plain' },
    { what: 'an XML body', body: '<query>{ me { id } }</query>', contentType: 'application/xml' },
    {
      what: 'a body over the 1 MiB limit',
      body: gqlBody('query($s: String) { products(search: $s) { edges { node { id } } } }', { s: 'z'.repeat(1_100_000) }),
    },
    {
      what: 'a mutation over GET',
      method: 'GET',
      search: `?query=${encodeURIComponent('mutation { register(email: "g@example.com", name: "G", password: "12345678") { token } }')}`,
    },
    { what: 'GET without a query', method: 'GET', search: '' },
    {
      what: 'GET with variables that are not JSON',
      method: 'GET',
      search: `?query=${encodeURIComponent('query($n: Int) { products(first: $n) { edges { node { id } } } }')}&variables=%7Bnope`,
    },
  ];
  return cases;
}
