// `npm run dlq`: dead letters listed, shown, replayed and dropped, on a real
// nats-server with the product service's real consumers. Dead letters are made
// the two ways they happen: a poison event (not JSON), and an event whose
// handling keeps failing (a table of the service renamed away) until the
// delivery limit. The command line is run as the operator would run it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { connect, headers as natsHeaders, type JetStreamClient, type JetStreamManager, type NatsConnection } from 'nats';
import pg from 'pg';
import { inventory, orders, products, streams, type Product } from '../subjects/index.ts';
import { ProductSettings, productService } from '../services/product/app.ts';
import type { RpcClient, RunningService } from '../services/kit/index.ts';
import { DlqError, REPLAYED_FROM_HEADER, getDeadLetter, listDeadLetters, main, type DeadLetter } from '../scripts/dlq.ts';
import { countBySubject, eventsOf, publishEvent, readEvents, typedClient } from './messaging.ts';
import { ROOT, dropTestDatabases, startNats, startTestService, waitFor, type TestNats } from './harness.ts';

let nats: TestNats;
let service: RunningService & { databaseUrl: string };
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
let client: RpcClient;
let db: pg.Client;
let product: Product;

const CONSUMER = 'products-reserve-stock';
const MAX_DELIVER = 3;

before(async () => {
  nats = await startNats();
  // A short delivery limit and back-off, so a failing event becomes a dead letter within the test.
  service = await startTestService(productService, nats, {
    settings: ProductSettings,
    consumer: { maxDeliver: MAX_DELIVER, backoffMs: 20, maxBackoffMs: 100 },
  });
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  js = nc.jetstream();
  jsm = await nc.jetstreamManager();
  client = typedClient(nc);
  db = new pg.Client({ connectionString: service.databaseUrl });
  await db.connect();
  product = await client.call(products.create, {
    sku: `DLQ-${randomUUID().slice(0, 8)}`,
    name: 'Lantern',
    price: { amount: 1500, currency: 'EUR' },
    initialStock: 10,
  });
});

after(async () => {
  await db?.end();
  client?.close();
  await nc?.drain().catch(() => {});
  await service?.stop();
  await nats?.cleanup();
  await dropTestDatabases();
});

/** `npm run dlq -- ...args` in this process (scripts/dlq.ts main): its output and exit status. */
async function dlq(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out: string[] = [];
  process.env.NATS_URL = nats.url;
  try {
    await main(args, (text) => out.push(text));
    return { code: 0, stdout: out.join('\n'), stderr: '' };
  } catch (error) {
    if (!(error instanceof DlqError)) throw error;
    return { code: error.exitCode, stdout: out.join('\n'), stderr: error.message };
  }
}

/** Runs `node scripts/dlq.ts ...args` against the test server, as an operator would. */
function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(ROOT, 'scripts', 'dlq.ts'), ...args],
      { env: { ...process.env, NATS_URL: nats.url }, timeout: 30_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

function placedEvent(orderId: string, quantity: number) {
  return {
    orderId,
    customerId: randomUUID(),
    lines: [{ productId: product.id, quantity }],
    payment: { token: 'tok_visa', amount: { amount: 1500 * quantity, currency: 'EUR' } },
    deadlineAt: new Date(Date.now() + 60_000).toISOString(),
  };
}

async function available(): Promise<number> {
  return (await client.call(products.get, { id: product.id })).available;
}

/** The reservations table away: every reservation fails, as with a broken database, until it is back. */
async function breakReservations(): Promise<void> {
  await db.query('ALTER TABLE reservations RENAME TO reservations_away');
}
async function repairReservations(): Promise<void> {
  await db.query('ALTER TABLE reservations_away RENAME TO reservations');
}

async function deadLetterOf(originalSeq: number): Promise<DeadLetter> {
  return waitFor(async () => (await listDeadLetters(js, jsm)).find((letter) => letter.originalSeq === originalSeq), {
    what: `the dead letter of ORDERS seq ${originalSeq}`,
  });
}

/** Envelope ids and headers of every ORDERS message; poison payloads count with an id of undefined. */
async function ordersMessages(): Promise<{ id: string | undefined; replayedFrom: string | undefined }[]> {
  const { state } = await jsm.streams.info(streams.ORDERS.name);
  const found = [];
  for (let seq = state.first_seq; state.messages > 0 && seq <= state.last_seq; seq++) {
    const stored = await jsm.streams.getMessage(streams.ORDERS.name, { seq });
    let id: string | undefined;
    try {
      id = (JSON.parse(stored.string()) as { id?: string }).id;
    } catch {
      id = undefined;
    }
    found.push({ id, replayedFrom: stored.header?.get(REPLAYED_FROM_HEADER) || undefined });
  }
  return found;
}

async function reservedEvents(orderId: string) {
  return eventsOf(await readEvents(jsm, streams.INVENTORY.name), orderId, inventory.reserved.subject);
}

let poison: DeadLetter;
let failed: DeadLetter;
let failedOrderId: string;

test('a poison event and a failing one become dead letters; list and show say which consumer, why and from where', async () => {
  const poisonAck = await js.publish(orders.placed.subject, Buffer.from('{"id": "half an envelope'), { msgID: randomUUID() });
  await breakReservations();
  failedOrderId = randomUUID();
  const failing = await publishEvent(js, orders.placed, placedEvent(failedOrderId, 2));

  poison = await deadLetterOf(poisonAck.seq);
  failed = await deadLetterOf(failing.seq);
  assert.equal(poison.consumer, CONSUMER);
  assert.equal(poison.originalSubject, orders.placed.subject);
  assert.equal(poison.originalStream, streams.ORDERS.name);
  assert.match(poison.error!, /^poison: /);
  assert.equal(poison.deliveries, 1, 'poison is not retried');
  assert.equal(poison.eventId, undefined);

  assert.equal(failed.consumer, CONSUMER);
  assert.equal(failed.subject, `dlq.ORDERS.${CONSUMER}`);
  assert.match(failed.error!, /^failed: .*reservations/);
  assert.equal(failed.deliveries, MAX_DELIVER);
  assert.equal(failed.eventId, failing.envelope.id);
  assert.deepEqual(JSON.parse(Buffer.from(failed.data).toString()), failing.envelope, 'the payload is kept as it was published');
  assert.equal(await available(), 10, 'nothing was reserved');

  const list = await cli('list');
  assert.equal(list.code, 0, list.stderr);
  for (const letter of [poison, failed]) {
    const row = list.stdout.split('\n').find((line) => line.startsWith(`${letter.seq} `));
    assert.ok(row, `list shows ${letter.seq}:\n${list.stdout}`);
    assert.match(row, new RegExp(`${CONSUMER}\\s+orders\\.events\\.placed`));
  }
  assert.match(list.stdout, /2 dead letter\(s\)/);
  const json = JSON.parse((await dlq('list', '--json', '--consumer', CONSUMER)).stdout) as { seq: number; error: string }[];
  assert.deepEqual(
    json.map((letter) => letter.seq),
    [poison.seq, failed.seq],
  );

  const show = await cli('show', String(failed.seq));
  assert.equal(show.code, 0, show.stderr);
  assert.match(show.stdout, new RegExp(`event id:\\s+${failed.eventId}`));
  assert.match(show.stdout, /Shop-Dlq-Error: failed: /);
  assert.match(show.stdout, new RegExp(`"orderId": "${failedOrderId}"`));
});

test('replayed once the cause is fixed: handled by the consumer that failed, and the dead letter is gone', async () => {
  await repairReservations();
  const replay = await cli('replay', String(failed.seq));
  assert.equal(replay.code, 0, replay.stderr);
  assert.match(replay.stdout, new RegExp(`replayed ${failed.seq}: event ${failed.eventId} to orders\\.events\\.placed`));

  await waitFor(async () => (await available()) === 8, { what: 'the replayed order to reserve 2 units' });
  const reserved = await waitFor(async () => {
    const found = await reservedEvents(failedOrderId);
    return found.length > 0 && found;
  });
  assert.equal(reserved.length, 1);
  const ids = (await listDeadLetters(js, jsm)).map((letter) => letter.seq);
  assert.deepEqual(ids, [poison.seq], 'only the poison letter is left');
  // The replay is the same envelope (one id), and says where it came from.
  const copies = (await ordersMessages()).filter((message) => message.id === failed.eventId);
  assert.deepEqual(
    copies.map((copy) => copy.replayedFrom),
    [undefined, String(failed.seq)],
  );
});

test('replaying an event that was handled meanwhile changes nothing: the inbox knows its id', async () => {
  await breakReservations();
  const orderId = randomUUID();
  const first = await publishEvent(js, orders.placed, placedEvent(orderId, 3));
  const letter = await deadLetterOf(first.seq);
  await repairReservations();
  // The same event arrives again another way (a producer's retry), and is handled.
  const again = await publishEvent(js, orders.placed, placedEvent(orderId, 3), { id: first.envelope.id, msgId: randomUUID() });
  await waitFor(async () => (await available()) === 5, { what: 'the event to reserve 3 units' });
  await waitFor(async () => (await jsm.consumers.info(streams.ORDERS.name, CONSUMER)).ack_floor.stream_seq >= again.seq);

  const replay = await dlq('replay', String(letter.seq));
  assert.equal(replay.code, 0, replay.stderr);
  const { state } = await jsm.streams.info(streams.ORDERS.name);
  await waitFor(async () => (await jsm.consumers.info(streams.ORDERS.name, CONSUMER)).ack_floor.stream_seq >= state.last_seq, {
    what: 'the replay to be consumed',
  });
  assert.equal(await available(), 5, 'nothing reserved twice');
  assert.equal((await reservedEvents(orderId)).length, 1, 'one reserved event');
  await assert.rejects(getDeadLetter(jsm, letter.seq), /no dead letter/);
});

test('a poison letter is not replayed without --force; drop deletes it and publishes nothing', async () => {
  const before = await countBySubject(jsm, streams.ORDERS.name);
  const refused = await cli('replay', String(poison.seq));
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /is poison .*--force/);
  assert.deepEqual(await countBySubject(jsm, streams.ORDERS.name), before);

  const dropped = await dlq('drop', String(poison.seq));
  assert.equal(dropped.code, 0, dropped.stderr);
  assert.match(dropped.stdout, new RegExp(`dropped ${poison.seq} \\(orders\\.events\\.placed for ${CONSUMER}\\)`));
  assert.deepEqual(await listDeadLetters(js, jsm), []);
  assert.deepEqual(await countBySubject(jsm, streams.ORDERS.name), before);
  assert.match((await dlq('list')).stdout, /no dead letters/);

  // With --force it goes back to its subject, and (still poison) comes back as a new dead letter.
  const ack = await js.publish(orders.placed.subject, Buffer.from('not json'), { msgID: randomUUID() });
  const second = await deadLetterOf(ack.seq);
  const forced = await dlq('replay', '--force', String(second.seq));
  assert.equal(forced.code, 0, forced.stderr);
  const back = await waitFor(async () => (await listDeadLetters(js, jsm)).find((letter) => letter.seq !== second.seq));
  assert.equal(Buffer.from(back.data).toString(), 'not json');
  assert.equal(back.headers[REPLAYED_FROM_HEADER]?.[0], String(second.seq));
  assert.equal(await available(), 5);
});

test('mistakes get a message and a non-zero exit, and change nothing', async () => {
  const before = (await listDeadLetters(js, jsm)).map((letter) => letter.seq);
  const cases: [string[], number, RegExp][] = [
    [['show', '999999'], 1, /no dead letter 999999/],
    [['replay', '999999'], 1, /no dead letter 999999/],
    [['drop', '999999'], 1, /no dead letter 999999/],
    [['replay'], 2, /needs the sequence/],
    [['drop', 'abc'], 2, /"abc" is not a sequence number/],
    [['show', '1', '2'], 2, /one sequence/],
    [['purge'], 2, /unknown command "purge"/],
    [['list', '--consumer'], 2, /--consumer needs a name/],
    [[], 2, /usage: npm run dlq/],
  ];
  for (const [args, code, message] of cases) {
    const result = await dlq(...args);
    assert.equal(result.code, code, `dlq ${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr + result.stdout, message, `dlq ${args.join(' ')}`);
  }
  // Letters that cannot go back: no original subject, or one no stream holds. They stay.
  const headers = natsHeaders();
  headers.set('Shop-Dlq-Error', 'failed: hand-made');
  const orphan = await js.publish(`dlq.ORDERS.${CONSUMER}`, Buffer.from('{}'), { headers, msgID: randomUUID() });
  headers.set('Shop-Dlq-Subject', 'nowhere.events.lost');
  const stray = await js.publish(`dlq.ORDERS.${CONSUMER}`, Buffer.from('{}'), { headers, msgID: randomUUID() });
  const noSubject = await dlq('replay', String(orphan.seq));
  assert.equal(noSubject.code, 1);
  assert.match(noSubject.stderr, /no Shop-Dlq-Subject header/);
  const noStream = await dlq('replay', String(stray.seq));
  assert.equal(noStream.code, 1);
  assert.match(noStream.stderr, /could not be published to nowhere\.events\.lost .*it is kept/);
  assert.equal((await getDeadLetter(jsm, stray.seq)).originalSubject, 'nowhere.events.lost');
  await dlq('drop', String(orphan.seq), String(stray.seq));

  // And from the command line: the status and the message reach the shell.
  const shell = await cli('show', '999999');
  assert.equal(shell.code, 1);
  assert.match(shell.stderr, /no dead letter 999999/);
  const usage = await cli();
  assert.equal(usage.code, 2);
  assert.match(usage.stdout, /usage: npm run dlq/);
  assert.deepEqual(
    (await listDeadLetters(js, jsm)).map((letter) => letter.seq),
    before,
  );
});
