// Request-reply endpoints of the product service: the catalog and restocking.
import { randomUUID } from 'node:crypto';
import { products, type Product } from '../../subjects/index.ts';
import { ServiceError, endpoint, preparedQueries, isUniqueViolation, type Pool } from '../kit/index.ts';
import { SKU_CONSTRAINT, addStock, findProduct, findProducts, insertProduct, listProducts, type CatalogPosition } from './store.ts';

const DEFAULT_PAGE_SIZE = 20;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The cursor is opaque to callers: base64url of the last item's name and id. */
export function encodeCursor(position: CatalogPosition): string {
  return Buffer.from(JSON.stringify([position.name, position.id])).toString('base64url');
}

export function decodeCursor(cursor: string): CatalogPosition {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    parsed = undefined;
  }
  if (Array.isArray(parsed) && parsed.length === 2) {
    const [name, id] = parsed as unknown[];
    if (typeof name === 'string' && typeof id === 'string' && UUID.test(id)) return { name, id };
  }
  throw new ServiceError('VALIDATION_FAILED', 'after is not a cursor this service gave out', [
    { path: '/after', message: 'unknown cursor' },
  ]);
}

export function productEndpoints(pool: Pool) {
  // Queries outside a transaction, each statement prepared once per connection.
  const db = preparedQueries(pool);
  return [
    endpoint(products.create, async ({ sku, name, description, price, initialStock }) => {
      const trimmedName = name.trim();
      if (!trimmedName) {
        throw new ServiceError('VALIDATION_FAILED', 'name must not be blank', [{ path: '/name', message: 'blank' }]);
      }
      try {
        return await insertProduct(db, {
          id: randomUUID(),
          sku,
          name: trimmedName,
          description: description?.trim() ?? '',
          price,
          onHand: initialStock ?? 0,
        });
      } catch (error) {
        if (isUniqueViolation(error, SKU_CONSTRAINT)) throw new ServiceError('SKU_TAKEN', `sku ${sku} exists`);
        throw error;
      }
    }),

    endpoint(products.get, async ({ id }) => {
      const product: Product | undefined = await findProduct(db, id);
      if (!product) throw new ServiceError('PRODUCT_NOT_FOUND', `no product ${id}`);
      return product;
    }),

    endpoint(products.getMany, async ({ ids }) => ({ products: await findProducts(db, ids) })),

    endpoint(products.list, async ({ search, first, after }) => {
      const limit = first ?? DEFAULT_PAGE_SIZE;
      const searched = search?.trim() || undefined;
      // One row more than the page tells whether another page follows. A
      // search is planned for its own text, never prepared: a generic plan
      // knows no pattern and may settle on reading the whole catalog
      // (docs/decisions.md, "Catalog search").
      const rows = await listProducts(searched ? pool : db, {
        limit: limit + 1,
        after: after === undefined ? undefined : decodeCursor(after),
        search: searched,
      });
      const items = rows.slice(0, limit);
      const last = items.at(-1);
      return { items, nextCursor: rows.length > limit && last ? encodeCursor(last) : null };
    }),

    endpoint(products.restock, async ({ productId, quantity }) => {
      const product = await addStock(db, productId, quantity);
      if (!product) throw new ServiceError('PRODUCT_NOT_FOUND', `no product ${productId}`);
      return product;
    }),
  ];
}
