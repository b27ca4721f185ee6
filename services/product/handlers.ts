// Request-reply endpoints of the product service: the catalog and restocking.
import { randomUUID } from 'node:crypto';
import { decodeCatalogCursor, encodeCatalogCursor, products, type CatalogPosition, type Product } from '../../subjects/index.ts';
import {
  ServiceError,
  endpoint,
  preparedQueries,
  isUniqueViolation,
  withTransaction,
  writeEvent,
  writeStates,
  type Pool,
  type Transaction,
} from '../kit/index.ts';
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
} from './store.ts';

const DEFAULT_PAGE_SIZE = 20;

function decodeCursor(cursor: string): CatalogPosition {
  const position = decodeCatalogCursor(cursor);
  if (position) return position;
  throw new ServiceError('VALIDATION_FAILED', 'after is not a cursor this service gave out', [
    { path: '/after', message: 'unknown cursor' },
  ]);
}

/** Every change of a product's public view goes to the catalog bucket in its own transaction. */
async function published(tx: Transaction, product: Product | undefined): Promise<Product | undefined> {
  if (product) await writeStates(tx, products.catalog, [product]);
  return product;
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
        const product = {
          id: randomUUID(),
          sku,
          name: trimmedName,
          description: description?.trim() ?? '',
          price,
          onHand: initialStock ?? 0,
        };
        return (await withTransaction(pool, async (tx) => published(tx, await insertProduct(tx, product))))!;
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
      return { items, nextCursor: rows.length > limit && last ? encodeCatalogCursor(last) : null };
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
        return (await published(tx, updated))!;
      });
    }),

    endpoint(products.archive, async ({ id }) =>
      withTransaction(pool, async (tx) => {
        const current = await lockProduct(tx, id);
        if (!current) throw new ServiceError('PRODUCT_NOT_FOUND', `no product ${id}`);
        if (current.archivedAt) return current;
        const archived = await archiveProduct(tx, id);
        await writeEvent(tx, products.archived, { productId: id, sku: archived.sku, archivedAt: archived.archivedAt! });
        return (await published(tx, archived))!;
      }),
    ),

    endpoint(products.restock, async ({ productId, quantity }) => {
      const product = await withTransaction(pool, async (tx) => published(tx, await addStock(tx, productId, quantity)));
      if (!product) throw new ServiceError('PRODUCT_NOT_FOUND', `no product ${productId}`);
      return product;
    }),
  ];
}
