// A large catalog and a long order history, written straight into the
// product and order databases (INSERT … SELECT generate_series: no service,
// no NATS), for `npm run bench:scale` and the search and paging tests.
// Every value is a function of the row number, so a run can be repeated and
// a test can tell what a search must find.
import { createHash } from 'node:crypto';
import type { Queryable } from '../services/kit/index.ts';

const COLOURS = [
  'Amber',
  'Azure',
  'Black',
  'Bronze',
  'Cobalt',
  'Coral',
  'Crimson',
  'Cyan',
  'Ebony',
  'Emerald',
  'Golden',
  'Graphite',
  'Indigo',
  'Ivory',
  'Jade',
  'Lemon',
  'Lilac',
  'Magenta',
  'Maroon',
  'Mint',
  'Navy',
  'Olive',
  'Onyx',
  'Orange',
  'Pearl',
  'Plum',
  'Rose',
  'Ruby',
  'Sage',
  'Sand',
  'Scarlet',
  'Silver',
  'Slate',
  'Teal',
  'Umber',
  'Violet',
  'White',
];
const MATERIALS = [
  'bamboo',
  'brass',
  'canvas',
  'ceramic',
  'copper',
  'cork',
  'cotton',
  'denim',
  'felt',
  'glass',
  'granite',
  'hemp',
  'iron',
  'leather',
  'linen',
  'marble',
  'nylon',
  'oak',
  'paper',
  'pine',
  'porcelain',
  'resin',
  'rubber',
  'silk',
  'steel',
  'stone',
  'tin',
  'walnut',
  'wool',
];
const THINGS = [
  'apron',
  'basket',
  'bench',
  'bottle',
  'bowl',
  'bucket',
  'candle',
  'chair',
  'clock',
  'cup',
  'desk',
  'dish',
  'drawer',
  'frame',
  'hook',
  'jar',
  'jug',
  'kettle',
  'ladder',
  'lamp',
  'mat',
  'mirror',
  'mug',
  'napkin',
  'pan',
  'pillow',
  'plate',
  'pot',
  'rack',
  'rug',
  'shelf',
  'spoon',
  'stool',
  'table',
  'teapot',
  'tray',
  'vase',
  'wallet',
  'whisk',
  'wok',
  'yoyo',
];
const FEATURES = [
  'handmade',
  'recycled',
  'vintage',
  'modern',
  'rustic',
  'compact',
  'foldable',
  'stackable',
  'washable',
  'waterproof',
  'lightweight',
  'heavy duty',
  'limited edition',
];

/** A word in the descriptions of one product in FEATURES.length, spread evenly over the name order. */
export const BROAD_WORD = 'waterproof';
export const BROAD_SHARE = 1 / FEATURES.length;

/** The id of seeded product `n` (seedProducts: md5('seeded-product-' || n)::uuid). */
export function seededId(n: number): string {
  const hex = createHash('md5').update(`seeded-product-${n}`).digest('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The sku of seeded product `n`. */
export function seededSku(n: number): string {
  return `SC-${String(n).padStart(7, '0')}`;
}

/** The model code in seeded product `n`'s description: 8 hex digits, near enough unique. */
export function seededModel(n: number): string {
  return ((BigInt(n) * 2654435761n) % 4294967296n).toString(16);
}

const array = (words: string[]) => `ARRAY[${words.map((word) => `'${word}'`).join(',')}]`;

/**
 * Products number `from` to `to - 1`: name "<Colour> <material> <thing> <n>"
 * (the colour changes fastest, so each colour's names sort together), sku
 * SC-<n, 7 digits>, description "Model <hex>, <feature>, ships in <d> days",
 * 1000 units each. Ids are derived from n, so a second call with the same
 * numbers fails on the primary key instead of adding copies.
 */
export async function seedProducts(db: Queryable, from: number, to: number): Promise<void> {
  await db.query(
    `INSERT INTO products (id, sku, name, description, price_amount, currency, on_hand)
     SELECT md5('seeded-product-' || n)::uuid,
            'SC-' || lpad(n::text, 7, '0'),
            (${array(COLOURS)})[1 + n % ${COLOURS.length}] || ' '
              || (${array(MATERIALS)})[1 + (n / ${COLOURS.length}) % ${MATERIALS.length}] || ' '
              || (${array(THINGS)})[1 + (n / ${COLOURS.length * MATERIALS.length}) % ${THINGS.length}] || ' ' || n,
            'Model ' || to_hex(n::bigint * 2654435761 % 4294967296) || ', '
              || (${array(FEATURES)})[1 + (n::bigint * 7919) % ${FEATURES.length}] || ', ships in ' || (1 + n % 9) || ' days',
            100 + n % 10000, 'EUR', 1000
       FROM generate_series($1::bigint, $2::bigint - 1) AS n`,
    [from, to],
  );
}

/**
 * Orders number `from` to `to - 1` of one customer, CONFIRMED, one line and
 * two history entries each, as the order service stores them: order n was
 * placed n minutes before 2026-01-01, so the newest come first.
 */
export async function seedOrders(db: Queryable, customerId: string, from: number, to: number): Promise<void> {
  await db.query(
    `WITH created AS (
       INSERT INTO orders (id, customer_id, status, currency, total_amount, deadline_at, created_at, updated_at)
       SELECT md5($1 || '-' || n)::uuid, $1::uuid, 'CONFIRMED', 'EUR', 100 + n % 1000, at + interval '30 seconds', at, at
         FROM generate_series($2::int, $3::int - 1) AS n, LATERAL (SELECT timestamptz '2026-01-01 00:00Z' - n * interval '1 minute') AS t(at)
       RETURNING id, total_amount, created_at
     ), lines AS (
       INSERT INTO order_lines (order_id, position, product_id, sku, name, quantity, unit_amount, line_amount)
       SELECT id, 1, md5('seeded-product-0')::uuid, 'SC-0000000', 'Seeded product', 1, total_amount, total_amount FROM created
     )
     INSERT INTO order_status_history (order_id, status, reason, at)
     SELECT id, h.status, NULL, h.at
       FROM created, LATERAL (VALUES ('PENDING', created_at), ('CONFIRMED', created_at + interval '1 second')) AS h(status, at)`,
    [customerId, from, to],
  );
}
