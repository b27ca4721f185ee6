// All SQL of the product service: the catalog, and the stock held for orders.
//
// Stock rules, kept by every function below:
//   - available = on_hand - reserved, and CHECK constraints in the table make
//     the database refuse on_hand < 0, reserved < 0 and reserved > on_hand;
//   - an order's stock operations first claim its stock_orders row, then lock
//     its product rows in id order (SELECT ... FOR UPDATE), so concurrent
//     orders queue on shared products without deadlocking and the checks are
//     made on values nobody else can change until commit;
//   - reserve, commit and release are idempotent by order id.
import type { CatalogPosition, Product } from '../../subjects/index.ts';
import type { Queryable, Transaction } from '../kit/index.ts';

interface ProductRow {
  id: string;
  sku: string;
  name: string;
  description: string;
  price_amount: number;
  currency: string;
  available: number;
  created_at: Date;
  updated_at: Date;
  version: number;
  archived_at: Date | null;
}

/** COLUMNS of `products p` in an UPDATE ... RETURNING (the new values). */
const COLUMNS_OF_P =
  'p.id, p.sku, p.name, p.description, p.price_amount, p.currency, p.on_hand - p.reserved AS available, p.created_at, p.updated_at, p.version, p.archived_at';
const COLUMNS =
  'id, sku, name, description, price_amount, currency, on_hand - reserved AS available, created_at, updated_at, version, archived_at';

function toProduct(row: ProductRow): Product {
  return {
    id: row.id,
    sku: row.sku,
    name: row.name,
    description: row.description,
    price: { amount: row.price_amount, currency: row.currency },
    available: row.available,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
    version: row.version,
    ...(row.archived_at ? { archivedAt: row.archived_at.toISOString() } : {}),
  };
}

// ---------------------------------------------------------------------------
// Catalog

export async function insertProduct(
  db: Queryable,
  product: {
    id: string;
    sku: string;
    name: string;
    description: string;
    price: { amount: number; currency: string };
    onHand: number;
  },
): Promise<Product> {
  const { rows } = await db.query<ProductRow>(
    `INSERT INTO products (id, sku, name, description, price_amount, currency, on_hand)
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ${COLUMNS}`,
    [product.id, product.sku, product.name, product.description, product.price.amount, product.price.currency, product.onHand],
  );
  return toProduct(rows[0]!);
}

/** The unique index that makes a duplicate sku fail, for telling it from other violations. */
export const SKU_CONSTRAINT = 'products_sku_key';

export async function findProduct(db: Queryable, id: string): Promise<Product | undefined> {
  const { rows } = await db.query<ProductRow>(`SELECT ${COLUMNS} FROM products WHERE id = $1`, [id]);
  return rows[0] && toProduct(rows[0]);
}

/** Products by id, in the order asked, null where unknown. */
export async function findProducts(db: Queryable, ids: readonly string[]): Promise<(Product | null)[]> {
  if (ids.length === 0) return [];
  const { rows } = await db.query<ProductRow>(`SELECT ${COLUMNS} FROM products WHERE id = ANY($1::uuid[])`, [ids]);
  const byId = new Map(rows.map((row) => [row.id, toProduct(row)]));
  return ids.map((id) => byId.get(id) ?? null);
}

/** Escapes LIKE's wildcards so a search for `50%` or `a_b` means those characters. */
export function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (char) => `\\${char}`);
}

/** What listProducts asks for: a page of the catalog, maybe searched. */
export interface CatalogQuery {
  limit: number;
  after?: CatalogPosition | undefined;
  search?: string | undefined;
}

/**
 * The statement of listProducts, for it and for the tests that EXPLAIN it.
 * Rows come ordered by name then id, after the keyset position `after`
 * (products_name_id). `search` is a substring of name, sku or description,
 * any case: ILIKE '%…%', served by the trigram indexes products_search_*
 * (migration 003). A search first finds its matches through that index and
 * then sorts them: the cost follows the number of matches, never the size of
 * the catalog. Left to itself, the planner may instead walk products_name_id
 * and filter, hoping to meet a page of matches early; for a word that sorts
 * late (every name starting with it) that reads the whole catalog: 30 s at
 * a million rows (docs/decisions.md, "Catalog search").
 */
export function catalogQuery(options: CatalogQuery): { text: string; values: unknown[] } {
  // Archived products are off sale: never listed.
  const conditions: string[] = ['archived_at IS NULL'];
  const values: unknown[] = [];
  if (options.search) {
    // Backslash is ILIKE's default escape character.
    values.push(`%${escapeLike(options.search)}%`);
    const p = `$${values.length}`;
    conditions.push(`(name ILIKE ${p} OR sku ILIKE ${p} OR description ILIKE ${p})`);
  }
  if (options.after) {
    values.push(options.after.name, options.after.id);
    conditions.push(`(name, id) > ($${values.length - 1}, $${values.length}::uuid)`);
  }
  values.push(options.limit);
  const limit = `$${values.length}`;
  const where = conditions.length > 0 ? `WHERE ${conditions.join(' AND ')}` : '';
  const text = options.search
    ? // MATERIALIZED: the matches are found on their own, then sorted (see above).
      `WITH matches AS MATERIALIZED (SELECT ${COLUMNS} FROM products ${where})
       SELECT * FROM matches ORDER BY name, id LIMIT ${limit}`
    : `SELECT ${COLUMNS} FROM products ${where} ORDER BY name, id LIMIT ${limit}`;
  return { text, values };
}

/** One page of the catalog (catalogQuery): rows after `after`, at most `limit`. */
export async function listProducts(db: Queryable, options: CatalogQuery): Promise<Product[]> {
  const { text, values } = catalogQuery(options);
  const { rows } = await db.query<ProductRow>(text, values);
  return rows.map(toProduct);
}

/** Locks a product's row for a change of its catalog data and reads it; undefined when unknown. */
export async function lockProduct(tx: Transaction, id: string): Promise<Product | undefined> {
  const { rows } = await tx.query<ProductRow>(`SELECT ${COLUMNS} FROM products WHERE id = $1 FOR UPDATE`, [id]);
  return rows[0] && toProduct(rows[0]);
}

/** New name, description and price of a product (locked by lockProduct). */
export async function updateCatalogData(
  tx: Transaction,
  id: string,
  data: { name: string; description: string; price: { amount: number; currency: string } },
): Promise<Product> {
  const { rows } = await tx.query<ProductRow>(
    `UPDATE products SET name = $2, description = $3, price_amount = $4, currency = $5, updated_at = now(), version = version + 1
      WHERE id = $1 RETURNING ${COLUMNS}`,
    [id, data.name, data.description, data.price.amount, data.price.currency],
  );
  return toProduct(rows[0]!);
}

/** Takes a product off sale (locked by lockProduct). */
export async function archiveProduct(tx: Transaction, id: string): Promise<Product> {
  const { rows } = await tx.query<ProductRow>(
    `UPDATE products SET archived_at = now(), updated_at = now(), version = version + 1 WHERE id = $1 RETURNING ${COLUMNS}`,
    [id],
  );
  return toProduct(rows[0]!);
}

/** Adds units to a product's stock; undefined when the product is unknown. */
export async function addStock(db: Queryable, productId: string, quantity: number): Promise<Product | undefined> {
  const { rows } = await db.query<ProductRow>(
    `UPDATE products SET on_hand = on_hand + $2, updated_at = now(), version = version + 1 WHERE id = $1 RETURNING ${COLUMNS}`,
    [productId, quantity],
  );
  return rows[0] && toProduct(rows[0]);
}

// ---------------------------------------------------------------------------
// Stock held for orders

export type StockOrderStatus = 'RESERVED' | 'REJECTED' | 'COMMITTED' | 'RELEASED' | 'TOMBSTONE';

export interface StockLine {
  productId: string;
  quantity: number;
}

export interface Shortage {
  productId: string;
  requested: number;
  available: number;
}

export type ReserveResult =
  | { outcome: 'reserved'; lines: StockLine[] }
  | { outcome: 'rejected'; reason: string; shortages: Shortage[] }
  /** The order was handled before (a redelivery, or the same order under another event id): nothing changed. */
  | { outcome: 'duplicate'; status: StockOrderStatus };

export type ReleaseResult =
  /** `changed`: the products given back to, as they are now (for the catalog bucket). */
  | { outcome: 'released'; lines: StockLine[]; changed: Product[] }
  /** The order held nothing (rejected, or released already): nothing changed. */
  | { outcome: 'nothing-held'; status: StockOrderStatus }
  /** Not seen before: a tombstone now stands for it, so a late `placed` is rejected. */
  | { outcome: 'tombstoned' };

export type CommitResult = { outcome: 'committed'; lines: StockLine[] } | { outcome: 'not-reserved'; status: StockOrderStatus | null };

export const CANCELLED_BEFORE_RESERVED = 'the order was cancelled before its stock could be reserved';

/** Sums lines of the same product, keeping the order they were asked in. */
function mergeLines(lines: readonly StockLine[]): StockLine[] {
  const merged = new Map<string, number>();
  for (const { productId, quantity } of lines) merged.set(productId, (merged.get(productId) ?? 0) + quantity);
  return [...merged].map(([productId, quantity]) => ({ productId, quantity }));
}

/**
 * Claims the order's row with `status` when the order is new (returns
 * undefined), or locks the existing row and returns its status. A second
 * transaction for the same order waits here until the first one ends.
 */
async function claimOrder(tx: Transaction, orderId: string, status: StockOrderStatus): Promise<StockOrderStatus | undefined> {
  const claimed = await tx.query('INSERT INTO stock_orders (order_id, status) VALUES ($1, $2) ON CONFLICT (order_id) DO NOTHING', [
    orderId,
    status,
  ]);
  if (claimed.rowCount === 1) return undefined;
  const { rows } = await tx.query<{ status: StockOrderStatus }>('SELECT status FROM stock_orders WHERE order_id = $1 FOR UPDATE', [
    orderId,
  ]);
  return rows[0]!.status;
}

/** Locks the product rows of `ids` in id order; returns what each has available. */
async function lockProducts(tx: Transaction, ids: readonly string[]): Promise<Map<string, { sku: string; available: number }>> {
  const { rows } = await tx.query<{ id: string; sku: string; available: number }>(
    'SELECT id, sku, on_hand - reserved AS available FROM products WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE',
    [ids],
  );
  return new Map(rows.map((row) => [row.id, { sku: row.sku, available: row.available }]));
}

/** An order whose stock is to be reserved. */
export interface OrderLines {
  orderId: string;
  lines: readonly StockLine[];
}

/**
 * Reserves every line of an order, or none: within the caller's transaction.
 * An unknown product counts as a shortage with nothing available.
 */
export async function reserveStock(tx: Transaction, orderId: string, requested: readonly StockLine[]): Promise<ReserveResult> {
  return (await reserveStockForOrders(tx, [{ orderId, lines: requested }])).results[0]!;
}

/**
 * reserveStock for several orders at once (a batch of placed events), each
 * all or none, in the order given: an earlier order takes units first. Four
 * statements whatever the number of orders: claim the new orders, lock the
 * ones seen before, lock the products in id order, then write stock,
 * reservations and statuses together. Also returns the products whose
 * availability changed, as they are now (for the catalog bucket).
 */
export async function reserveStockForOrders(
  tx: Transaction,
  orders: readonly OrderLines[],
): Promise<{ results: ReserveResult[]; changed: Product[] }> {
  // Ids sorted: concurrent batches sharing an order (a redelivery) take its row in the same order.
  const orderIds = [...new Set(orders.map((order) => order.orderId))].sort();
  // Claimed as REJECTED and turned into RESERVED below: inside this
  // transaction, so nobody ever sees the first value of a reserved order.
  const claimed = new Set(
    (
      await tx.query<{ order_id: string }>(
        `INSERT INTO stock_orders (order_id, status) SELECT id, 'REJECTED' FROM unnest($1::uuid[]) AS id
         ON CONFLICT (order_id) DO NOTHING RETURNING order_id`,
        [orderIds],
      )
    ).rows.map((row) => row.order_id),
  );
  const seen = orderIds.filter((id) => !claimed.has(id));
  const earlier = new Map<string, StockOrderStatus>();
  if (seen.length > 0) {
    const { rows } = await tx.query<{ order_id: string; status: StockOrderStatus }>(
      'SELECT order_id, status FROM stock_orders WHERE order_id = ANY($1::uuid[]) ORDER BY order_id FOR UPDATE',
      [seen],
    );
    for (const row of rows) earlier.set(row.order_id, row.status);
  }

  const merged = new Map(orders.map((order) => [order.orderId, mergeLines(order.lines)]));
  const productIds = [
    ...new Set(
      orders.filter((order) => claimed.has(order.orderId)).flatMap((order) => merged.get(order.orderId)!.map((line) => line.productId)),
    ),
  ];
  const stock = productIds.length > 0 ? await lockProducts(tx, productIds) : new Map<string, { sku: string; available: number }>();

  // Decided here in order, written below in one statement.
  const held = { orders: [] as string[], products: [] as string[], quantities: [] as number[] };
  const statuses = { orders: [] as string[], statuses: [] as StockOrderStatus[], reasons: [] as (string | null)[] };
  const decided = new Map<string, StockOrderStatus>();
  const results = orders.map(({ orderId }): ReserveResult => {
    const before = decided.get(orderId) ?? earlier.get(orderId);
    if (before !== undefined && before !== 'TOMBSTONE') return { outcome: 'duplicate', status: before };
    const decide = (status: StockOrderStatus, reason: string | null) => {
      decided.set(orderId, status);
      statuses.orders.push(orderId);
      statuses.statuses.push(status);
      statuses.reasons.push(reason);
    };
    if (before === 'TOMBSTONE') {
      decide('REJECTED', CANCELLED_BEFORE_RESERVED);
      return { outcome: 'rejected', reason: CANCELLED_BEFORE_RESERVED, shortages: [] };
    }
    const lines = merged.get(orderId)!;
    const shortages: Shortage[] = [];
    const problems: string[] = [];
    for (const { productId, quantity } of lines) {
      const found = stock.get(productId);
      const available = found?.available ?? 0;
      if (quantity <= available) continue;
      shortages.push({ productId, requested: quantity, available });
      problems.push(found ? `${found.sku}: ${quantity} requested, ${available} available` : `product ${productId} does not exist`);
    }
    if (shortages.length > 0) {
      const reason = `not enough stock for ${shortages.length} of ${lines.length} product(s): ${problems.join('; ')}`;
      decide('REJECTED', reason);
      return { outcome: 'rejected', reason, shortages };
    }
    for (const { productId, quantity } of lines) {
      stock.get(productId)!.available -= quantity;
      held.orders.push(orderId);
      held.products.push(productId);
      held.quantities.push(quantity);
    }
    decide('RESERVED', null);
    return { outcome: 'reserved', lines };
  });

  const changed: Product[] = [];
  if (statuses.orders.length > 0) {
    // The stock (one row per product, summed over the orders), the reservation rows and the statuses in one statement;
    // it returns the products' new public views.
    const { rows } = await tx.query<ProductRow>(
      `WITH held AS (
         UPDATE products p SET reserved = p.reserved + l.quantity, updated_at = now(), version = p.version + 1
           FROM (SELECT id, sum(quantity) AS quantity FROM unnest($2::uuid[], $3::bigint[]) AS r(id, quantity) GROUP BY id) l
          WHERE p.id = l.id
          RETURNING ${COLUMNS_OF_P}
       ), kept AS (
         INSERT INTO reservations (order_id, product_id, quantity, status)
         SELECT o, p, q, 'RESERVED' FROM unnest($1::uuid[], $2::uuid[], $3::bigint[]) AS r(o, p, q)
       ), decided AS (
         UPDATE stock_orders s SET status = u.status, reason = u.reason, updated_at = now()
           FROM unnest($4::uuid[], $5::text[], $6::text[]) AS u(id, status, reason)
          WHERE s.order_id = u.id
       )
       SELECT * FROM held`,
      [held.orders, held.products, held.quantities, statuses.orders, statuses.statuses, statuses.reasons],
    );
    changed.push(...rows.map(toProduct));
  }
  return { results, changed };
}

interface HeldLine {
  product_id: string;
  quantity: number;
  status: 'RESERVED' | 'COMMITTED';
}

/**
 * What an order holds in `statuses`, locking those products in id order (as
 * every stock operation locks them) in the same statement.
 */
async function lockHeldLines(tx: Transaction, orderId: string, statuses: readonly HeldLine['status'][]): Promise<HeldLine[]> {
  const { rows } = await tx.query<HeldLine>(
    `SELECT r.product_id, r.quantity, r.status FROM reservations r JOIN products p ON p.id = r.product_id
      WHERE r.order_id = $1 AND r.status = ANY($2::text[])
      ORDER BY p.id FOR UPDATE OF p`,
    [orderId, statuses],
  );
  return rows;
}

/**
 * Gives back what a cancelled order holds: reserved units stop being
 * reserved, committed units (a confirmed order cancelled afterwards) return
 * to the shelf. An order never seen gets a tombstone.
 */
export async function releaseStock(tx: Transaction, orderId: string): Promise<ReleaseResult> {
  const existing = await claimOrder(tx, orderId, 'TOMBSTONE');
  if (!existing) return { outcome: 'tombstoned' };
  if (existing !== 'RESERVED' && existing !== 'COMMITTED') return { outcome: 'nothing-held', status: existing };

  const lines = await lockHeldLines(tx, orderId, ['RESERVED', 'COMMITTED']);
  // The products locked above, then stock, reservation rows and status in one statement.
  const { rows } = await tx.query<ProductRow>(
    `WITH returned AS (
       UPDATE products p
          SET reserved = p.reserved - CASE WHEN r.status = 'RESERVED' THEN r.quantity ELSE 0 END,
              on_hand = p.on_hand + CASE WHEN r.status = 'COMMITTED' THEN r.quantity ELSE 0 END,
              updated_at = now(), version = p.version + 1
         FROM reservations r
        WHERE r.order_id = $1 AND r.product_id = p.id AND r.status IN ('RESERVED', 'COMMITTED')
        RETURNING ${COLUMNS_OF_P}
     ), released AS (
       UPDATE reservations SET status = 'RELEASED', updated_at = now()
        WHERE order_id = $1 AND status IN ('RESERVED', 'COMMITTED')
     ), closed AS (
       UPDATE stock_orders SET status = 'RELEASED', reason = NULL, updated_at = now() WHERE order_id = $1
     )
     SELECT * FROM returned`,
    [orderId],
  );
  return {
    outcome: 'released',
    lines: lines.map((line) => ({ productId: line.product_id, quantity: line.quantity })),
    changed: rows.map(toProduct),
  };
}

/** A confirmed order's units leave the stock: on hand and reserved both go down. */
export async function commitStock(tx: Transaction, orderId: string): Promise<CommitResult> {
  return (await commitStockForOrders(tx, [orderId]))[0]!;
}

/**
 * commitStock for several orders at once (a batch of confirmations), in
 * three statements: lock the orders, lock their products in id order while
 * reading what they hold, then write stock, reservations and statuses.
 * Available units stay as they were (on hand and reserved both go down), so
 * the public view (its updatedAt and version too) stays as it was.
 */
export async function commitStockForOrders(tx: Transaction, orderIds: readonly string[]): Promise<CommitResult[]> {
  const ids = [...new Set(orderIds)].sort();
  const { rows } = await tx.query<{ order_id: string; status: StockOrderStatus }>(
    'SELECT order_id, status FROM stock_orders WHERE order_id = ANY($1::uuid[]) ORDER BY order_id FOR UPDATE',
    [ids],
  );
  const status = new Map(rows.map((row) => [row.order_id, row.status]));
  const reserved = ids.filter((id) => status.get(id) === 'RESERVED');
  const lines = new Map<string, StockLine[]>(reserved.map((id) => [id, []]));
  if (reserved.length > 0) {
    const { rows: held } = await tx.query<{ order_id: string; product_id: string; quantity: number }>(
      `SELECT r.order_id, r.product_id, r.quantity FROM reservations r JOIN products p ON p.id = r.product_id
        WHERE r.order_id = ANY($1::uuid[]) AND r.status = 'RESERVED'
        ORDER BY p.id FOR UPDATE OF p`,
      [reserved],
    );
    for (const line of held) lines.get(line.order_id)!.push({ productId: line.product_id, quantity: line.quantity });
    // The products locked above (one row each, summed over the orders), then reservation rows and statuses.
    await tx.query(
      `WITH shipped AS (
         UPDATE products p
            SET on_hand = p.on_hand - s.quantity, reserved = p.reserved - s.quantity
           FROM (SELECT product_id, sum(quantity) AS quantity FROM reservations
                  WHERE order_id = ANY($1::uuid[]) AND status = 'RESERVED' GROUP BY product_id) s
          WHERE p.id = s.product_id
       ), committed AS (
         UPDATE reservations SET status = 'COMMITTED', updated_at = now()
          WHERE order_id = ANY($1::uuid[]) AND status = 'RESERVED'
       )
       UPDATE stock_orders SET status = 'COMMITTED', reason = NULL, updated_at = now() WHERE order_id = ANY($1::uuid[])`,
      [reserved],
    );
  }
  const done = new Set<string>();
  return orderIds.map((id): CommitResult => {
    if (lines.has(id) && !done.has(id)) {
      done.add(id);
      return { outcome: 'committed', lines: lines.get(id)! };
    }
    return { outcome: 'not-reserved', status: done.has(id) ? 'COMMITTED' : (status.get(id) ?? null) };
  });
}
