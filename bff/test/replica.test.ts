// The replica's sorted listing, kept up to date while items arrive, move and
// leave: after any sequence of states, walking its pages gives exactly the
// listed items in catalog order. No consumer runs here (`apply` is what every
// state from the bucket goes through); the connection is a real one all the same.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type NatsConnection } from 'nats';
import { products } from '../../subjects/index.ts';
import { createLogger } from '../../services/kit/index.ts';
import { compareCatalog } from '../read-models.ts';
import { Replica } from '../replica.ts';
import { startNats, type TestNats } from '../../test/harness.ts';
import { seeded } from '../../test/chaos/shop.ts';

interface Item {
  id: string;
  name: string;
  version: number;
  archivedAt?: string;
}

let nats: TestNats;
let nc: NatsConnection;

before(async () => {
  nats = await startNats();
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
});

after(async () => {
  await nc?.close();
  await nats?.cleanup();
});

function walk(replica: Replica<Item>, first: number): string[] {
  const ids: string[] = [];
  let position: Item | undefined;
  for (;;) {
    const { items, hasMore } = replica.page(first, position);
    ids.push(...items.map((item) => item.id));
    if (!hasMore) return ids;
    position = items.at(-1);
  }
}

test('pages list exactly the listed items in catalog order while items arrive, are renamed, archived and restored', () => {
  const next = seeded(20261208);
  const replica = new Replica<Item>(nc, products.catalog, { replicas: 1, log: createLogger('test', 'silent'), compare: compareCatalog });
  const latest = new Map<string, Item>();
  const names = ['Bowl', 'Cup', 'Plate', 'Spoon', 'Fork', 'Jug'];
  let checks = 0;
  for (let step = 0; step < 3000; step++) {
    const id = `p${Math.floor(next() * 400)
      .toString()
      .padStart(3, '0')}`;
    const held = latest.get(id);
    const item: Item = {
      id,
      // Mostly a stock change (same name), sometimes a rename or an archive.
      name: held && next() < 0.7 ? held.name : names[Math.floor(next() * names.length)]!,
      version: (held?.version ?? 0) + 1,
      ...(next() < 0.1 ? { archivedAt: '2026-12-08T00:00:00.000Z' } : {}),
    };
    assert.equal(replica.apply(item), true);
    latest.set(id, item);
    // An older state changes nothing.
    if (held) assert.equal(replica.apply(held), false);
    if (step % 97 === 0 || step === 2999) {
      const expected = [...latest.values()]
        .filter((each) => each.archivedAt === undefined)
        .sort(compareCatalog)
        .map((each) => each.id);
      assert.deepEqual(walk(replica, 1 + (step % 7)), expected, `after step ${step}`);
      checks++;
    }
  }
  assert.ok(checks > 30);
});
