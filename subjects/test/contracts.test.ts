import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ContractViolation, ErrorCodes, allEvents, allOperations, customers, orders, products, streams } from '../index.ts';

/** NATS subject matching with `*` and `>` wildcards. */
function matches(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (p[i] !== '*' && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}

const streamSubjects = Object.values(streams).flatMap((stream) => stream.subjects);

test('every operation is <domain>.<operation>, lower-case domain, outside every stream', () => {
  assert.ok(allOperations.length >= 15);
  for (const operation of allOperations) {
    assert.match(operation.subject, /^[a-z]+\.[a-zA-Z]+$/, operation.subject);
    assert.equal(`${operation.service}.${operation.endpoint}`, operation.subject);
    for (const pattern of streamSubjects) {
      assert.equal(matches(pattern, operation.subject), false, `${operation.subject} falls inside ${pattern}`);
    }
  }
  const subjects = allOperations.map((operation) => operation.subject);
  assert.equal(new Set(subjects).size, subjects.length, 'operation subjects are unique');
});

test('every event is <domain>.events.<past tense> and lands in exactly its own stream', () => {
  assert.ok(allEvents.length >= 10);
  for (const event of allEvents) {
    assert.match(event.subject, /^[a-z]+\.events\.[a-z]+$/, event.subject);
    const holders = Object.values(streams).filter((stream) => stream.subjects.some((pattern) => matches(pattern, event.subject)));
    assert.deepEqual(
      holders.map((stream) => stream.name),
      [event.stream],
      event.subject,
    );
  }
});

test('stream subjects do not overlap', () => {
  for (const a of streamSubjects) {
    for (const b of streamSubjects) {
      if (a === b) continue;
      const prefixA = a.replace(/\.>$/, '');
      const prefixB = b.replace(/\.>$/, '');
      assert.ok(!prefixA.startsWith(`${prefixB}.`) && prefixA !== prefixB, `${a} overlaps ${b}`);
    }
  }
});

test('requests are checked: types, formats, bounds and unknown fields', () => {
  const register = customers.register.request;
  assert.ok(register.check({ email: 'ann@example.com', name: 'Ann', password: 'long enough' }));
  assert.equal(register.check({ email: 'not an email', name: 'Ann', password: 'long enough' }), false);
  assert.equal(register.check({ email: 'ann@example.com', name: 'Ann', password: 'short' }), false);
  assert.equal(register.check({ email: 'ann@example.com', name: 'Ann', password: 'long enough', role: 'admin' }), false);
  assert.equal(customers.get.request.check({ id: 'not-a-uuid' }), false);
  assert.equal(products.create.request.check({ sku: 'A-1', name: 'x', price: { amount: 1.5, currency: 'EUR' } }), false);
  assert.equal(products.create.request.check({ sku: 'A-1', name: 'x', price: { amount: 150, currency: 'eur' } }), false);
  assert.ok(products.create.request.check({ sku: 'A-1', name: 'x', price: { amount: 150, currency: 'EUR' } }));
  assert.equal(
    orders.place.request.check({ customerId: '00000000-0000-4000-8000-000000000000', lines: [], paymentToken: 'tok' }),
    false,
    'an order needs a line',
  );
});

test('assert throws a ContractViolation naming the path', () => {
  assert.throws(
    () => customers.get.request.assert({ id: 42 }, 'customers.get request'),
    (error: unknown) =>
      error instanceof ContractViolation &&
      error.issues.some((issue) => issue.path === '/id') &&
      /customers\.get request/.test(error.message),
  );
});

test('every error code maps to a micro protocol status', () => {
  for (const [code, status] of Object.entries(ErrorCodes)) {
    assert.ok(status >= 400 && status < 600, code);
  }
});
