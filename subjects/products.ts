import { Type, type Static } from '@sinclair/typebox';
import { event, rpc, state } from './contract.ts';
import { ById, ByIds, Id, Money, Page, PageRequest, StateVersion, Timestamp } from './common.ts';

export const Product = Type.Object(
  {
    id: Id,
    sku: Type.String(),
    name: Type.String(),
    description: Type.String(),
    price: Money,
    available: Type.Integer({ minimum: 0, description: 'Units on hand and not reserved.' }),
    createdAt: Timestamp,
    updatedAt: Timestamp,
    version: Type.Optional(StateVersion),
    archivedAt: Type.Optional(
      Type.String({
        format: 'date-time',
        description: 'When it was archived (no longer listed nor orderable); absent while it is for sale.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type Product = Static<typeof Product>;

const ProductName = Type.String({ minLength: 1, maxLength: 200, pattern: '\\S', description: 'Not blank.' });
const Description = Type.String({ maxLength: 5000 });

export const products = {
  create: rpc({
    subject: 'products.create',
    description: 'Add a product to the catalog; SKU_TAKEN when the sku exists.',
    idempotent: false,
    request: Type.Object(
      {
        sku: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' }),
        name: Type.String({ minLength: 1, maxLength: 200 }),
        description: Type.Optional(Description),
        price: Money,
        initialStock: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000_000 })),
      },
      { additionalProperties: false },
    ),
    reply: Product,
  }),
  get: rpc({
    subject: 'products.get',
    description: 'One product by id; PRODUCT_NOT_FOUND when unknown.',
    idempotent: true,
    request: ById,
    reply: Product,
  }),
  getMany: rpc({
    subject: 'products.getMany',
    description: 'Products by id, in the order asked, null where unknown (for loaders).',
    idempotent: true,
    request: ByIds,
    reply: Type.Object({ products: Type.Array(Type.Union([Product, Type.Null()])) }, { additionalProperties: false }),
  }),
  list: rpc({
    subject: 'products.list',
    description: 'Catalog page by name, optionally filtered by text in name, sku or description.',
    idempotent: true,
    request: Type.Object({ search: Type.Optional(Type.String({ maxLength: 200 })), ...PageRequest }, { additionalProperties: false }),
    reply: Page(Product),
  }),
  restock: rpc({
    subject: 'products.restock',
    description: 'Add units to the stock of a product.',
    idempotent: false,
    request: Type.Object(
      { productId: Id, quantity: Type.Integer({ minimum: 1, maximum: 1_000_000_000 }) },
      { additionalProperties: false },
    ),
    reply: Product,
  }),
  catalog: state({
    bucket: 'catalog',
    owner: 'products',
    description: "Every product's public view, the newest version per product, for the BFF's replica.",
    value: Product,
  }),
  update: rpc({
    subject: 'products.update',
    description:
      'Admin: change the name, description or price of a product; placed orders keep the price they were placed at. ' +
      'Emits products.events.updated when something changed (the same values again change nothing). ' +
      'PRODUCT_NOT_FOUND, PRODUCT_ARCHIVED; VALIDATION_FAILED when nothing is given.',
    idempotent: true,
    request: Type.Object(
      { id: Id, name: Type.Optional(ProductName), description: Type.Optional(Description), price: Type.Optional(Money) },
      { additionalProperties: false },
    ),
    reply: Product,
  }),
  archive: rpc({
    subject: 'products.archive',
    description:
      'Admin: take a product off sale: no longer listed nor orderable (PRODUCT_ARCHIVED at orders.place); placed orders are untouched ' +
      'and products.get still answers it. Emits products.events.archived once; archiving it again answers it unchanged.',
    idempotent: true,
    request: ById,
    reply: Product,
  }),
  updated: event({
    subject: 'products.events.updated',
    stream: 'PRODUCTS',
    description: "A product's name, description or price changed; carries the new values and the price before.",
    data: Type.Object(
      { productId: Id, sku: Type.String(), name: Type.String(), description: Type.String(), price: Money, previousPrice: Money },
      { additionalProperties: false },
    ),
  }),
  archived: event({
    subject: 'products.events.archived',
    stream: 'PRODUCTS',
    description: 'A product was taken off sale.',
    data: Type.Object({ productId: Id, sku: Type.String(), archivedAt: Timestamp }, { additionalProperties: false }),
  }),
} as const;

/** Where a page of the catalog starts: after this name and id (products.list and the BFF's replica page alike). */
export interface CatalogPosition {
  name: string;
  id: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The cursor is opaque to callers: base64url of the last item's name and id. */
export function encodeCatalogCursor(position: CatalogPosition): string {
  return Buffer.from(JSON.stringify([position.name, position.id])).toString('base64url');
}

/** The position a cursor of encodeCatalogCursor names, or undefined when it is not one. */
export function decodeCatalogCursor(cursor: string): CatalogPosition | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (!Array.isArray(parsed) || parsed.length !== 2) return undefined;
  const [name, id] = parsed as unknown[];
  return typeof name === 'string' && typeof id === 'string' && UUID.test(id) ? { name, id } : undefined;
}
