import { Type, type Static } from '@sinclair/typebox';
import { rpc } from './contract.ts';
import { ById, ByIds, Id, Money, Page, PageRequest, Timestamp } from './common.ts';

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
  },
  { additionalProperties: false },
);
export type Product = Static<typeof Product>;

export const products = {
  create: rpc({
    subject: 'products.create',
    description: 'Add a product to the catalog; SKU_TAKEN when the sku exists.',
    idempotent: false,
    request: Type.Object(
      {
        sku: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' }),
        name: Type.String({ minLength: 1, maxLength: 200 }),
        description: Type.Optional(Type.String({ maxLength: 5000 })),
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
} as const;
