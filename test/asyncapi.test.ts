// The AsyncAPI document (docs/asyncapi.json): the committed file is what
// `npm run asyncapi` makes from the code now, it is valid AsyncAPI 3 for
// @asyncapi/parser (JSON Schema of the spec plus its rules), and it says what
// subjects/ says.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { Parser, type AsyncAPIDocumentInterface } from '@asyncapi/parser';
import { allEvents, allOperations, allSettings } from '../subjects/index.ts';
import { DOCUMENT_PATH, asyncApiDocument, render } from '../scripts/asyncapi.ts';

let committed: string;
let document: AsyncAPIDocumentInterface;

before(async () => {
  committed = await readFile(DOCUMENT_PATH, 'utf8').catch(() => '');
});

test('the committed document is current', async () => {
  const fresh = render(await asyncApiDocument());
  assert.ok(committed.length > 0, 'docs/asyncapi.json is missing: run npm run asyncapi');
  // Compared as data first for a readable diff, then as text (formatting included).
  assert.deepEqual(JSON.parse(committed), JSON.parse(fresh), 'docs/asyncapi.json is out of date: run npm run asyncapi');
  assert.equal(committed, fresh, 'docs/asyncapi.json is not formatted as generated: run npm run asyncapi');
});

test('the document is valid AsyncAPI 3 (@asyncapi/parser: spec schema and rules)', async () => {
  const { document: parsed, diagnostics } = await new Parser().parse(committed);
  const problems = diagnostics
    .filter((diagnostic) => diagnostic.severity <= 1) // errors and warnings
    .map((diagnostic) => `${diagnostic.code} at ${diagnostic.path.join('/')}: ${diagnostic.message}`);
  assert.deepEqual(problems, []);
  assert.ok(parsed, 'the parser returned a document');
  document = parsed;
  assert.equal(document.version(), '3.1.0');

  // The check has teeth: an AsyncAPI 2 verb and a dangling reference are refused.
  const broken = JSON.parse(committed);
  const first = Object.keys(broken.operations)[0]!;
  broken.operations[first].action = 'publish';
  broken.operations[first].channel = { $ref: '#/channels/no.such.channel' };
  const refused = await new Parser().parse(JSON.stringify(broken));
  assert.equal(refused.document, undefined);
  assert.ok(refused.diagnostics.some((diagnostic) => diagnostic.severity === 0));
});

test('every subject is in it, with who sends and who receives', () => {
  assert.ok(document, 'parsed in the previous test');
  const addresses = new Set(
    document
      .channels()
      .all()
      .map((channel) => channel.address()),
  );
  for (const contract of [...allOperations, ...allEvents]) assert.ok(addresses.has(contract.subject), contract.subject);

  const operations = document.operations().all();
  const by = (action: string, address: string) =>
    operations
      .filter(
        (operation) =>
          operation.action() === action &&
          operation
            .channels()
            .all()
            .some((channel) => channel.address() === address),
      )
      .map((operation) => operation.json()['x-service'] as string)
      .sort();

  for (const contract of allOperations) {
    assert.deepEqual(by('receive', contract.subject), [contract.service], `${contract.subject} is answered by its service`);
    const replies = operations.find((operation) => operation.id() === `${contract.service}.receive.${contract.subject}`)?.reply();
    assert.ok(
      replies
        ?.messages()
        .all()
        .some((message) => message.name() === `${contract.subject}.reply`),
      `${contract.subject} has its reply`,
    );
  }
  for (const contract of allEvents) {
    assert.equal(by('send', contract.subject).length, 1, `${contract.subject} has exactly one emitting service`);
    assert.equal(
      by('send', contract.subject)[0],
      contract.subject.split('.')[0] === 'inventory' ? 'products' : contract.subject.split('.')[0],
    );
  }
  // Spot checks of the wiring read from the code.
  assert.deepEqual(by('receive', 'inventory.events.reserved'), ['payments']);
  assert.deepEqual(by('receive', 'orders.events.placed'), ['bff', 'products']);
  assert.ok(by('send', 'products.getMany').includes('orders'), 'the order service prices its lines');

  // The message of an event is its envelope around the contract's data schema.
  const placed = document
    .messages()
    .all()
    .find((message) => message.name() === 'orders.events.placed');
  const payload = placed?.payload()?.json() as { properties: { type: { const: string }; data: { required: string[] } } };
  assert.equal(payload.properties.type.const, 'orders.events.placed');
  assert.ok(payload.properties.data.required.includes('orderId'));

  // The live settings, one message per key of the config bucket.
  const config = document
    .channels()
    .all()
    .find((channel) => channel.address() === '$KV.config.{key}');
  assert.deepEqual(
    config
      ?.messages()
      .all()
      .map((message) => message.name())
      .sort(),
    allSettings.map((contract) => contract.key).sort(),
  );
});
