// Request-reply endpoints of the product service: the catalog and restocking.
import { randomUUID } from 'node:crypto';
import { products, type Product } from '../../subjects/index.ts';
import { ServiceError, endpoint, preparedQueries, isUniqueViolation, withTransaction, writeEvent, type Pool } from '../kit/index.ts';
import {
  SKU_CONSTRAINT,
  addStock,
  archiveProduct,
  findProduct,
  findProducts,
  insertProduct,
  listProducts,
  lockProduct,
  updateCatalogData,
  type CatalogPosition,
} from './store.ts';

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
      // One row more than the page tells whether another page follows.
      const rows = await listProducts(db, {
        limit: limit + 1,
        after: after === undefined ? undefined : decodeCursor(after),
        search: search?.trim() || undefined,
      });
      const items = rows.slice(0, limit);
      const last = items.at(-1);
      return { items, nextCursor: rows.length > limit && last ? encodeCursor(last) : null };
    }),

    endpoint(products.update, async ({ id, name, description, price }) => {
      if (name === undefined && description === undefined && price === undefined) {
        throw new ServiceError('VALIDATION_FAILED', 'give a name, a description or a price to change', [
          { path: '', message: 'nothing to change' },
        ]);
      }
      return withTransaction(pool, async (tx) => {
        const current = await lockProduct(tx, id);
        if (!current) throw new ServiceError('PRODUCT_NOT_FOUND', `no product ${id}`);
        if (current.archivedAt) throw new ServiceError('PRODUCT_ARCHIVED', `product ${current.sku} is archived; it cannot change`);
        const wanted = {
          name: name?.trim() ?? current.name,
          description: description?.trim() ?? current.description,
          price: price ?? current.price,
        };
        const unchanged =
          wanted.name === current.name &&
          wanted.description === current.description &&
          wanted.price.amount === current.price.amount &&
          wanted.price.currency === current.price.currency;
        // The same values again are no change, and no event: a retry repeats nothing.
        if (unchanged) return current;
        const updated = await updateCatalogData(tx, id, wanted);
        await writeEvent(tx, products.updated, {
          productId: id,
          sku: updated.sku,
          name: updated.name,
          description: updated.description,
          price: updated.price,
          previousPrice: current.price,
        });
        return updated;
      });
    }),

    endpoint(products.archive, async ({ id }) =>
      withTransaction(pool, async (tx) => {
        const current = await lockProduct(tx, id);
        if (!current) throw new ServiceError('PRODUCT_NOT_FOUND', `no product ${id}`);
        if (current.archivedAt) return current;
        const archived = await archiveProduct(tx, id);
        await writeEvent(tx, products.archived, { productId: id, sku: archived.sku, archivedAt: archived.archivedAt! });
        return archived;
      }),
    ),

    endpoint(products.restock, async ({ productId, quantity }) => {
      const product = await addStock(db, productId, quantity);
      if (!product) throw new ServiceError('PRODUCT_NOT_FOUND', `no product ${productId}`);
      return product;
    }),
  ];
}
