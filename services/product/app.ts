// The product service: the catalog, and the stock held for orders.
import { join } from 'node:path';
import { inventory, products } from '../../subjects/index.ts';
import { ServiceSettings, type ServiceDefinition } from '../kit/index.ts';
import { productEndpoints } from './handlers.ts';
import { productConsumers } from './events.ts';

export const ProductSettings = { ...ServiceSettings };

export const productService: ServiceDefinition = {
  name: 'products',
  version: '1.0.0',
  description: 'Product catalog and inventory',
  migrations: join(import.meta.dirname, 'migrations'),
  emits: [inventory.reserved, inventory.rejected, inventory.released, products.updated, products.archived],
  states: [products.catalog],
  calls: [],
  settings: ProductSettings,
  build({ pool }) {
    return { endpoints: productEndpoints(pool), consumers: productConsumers() };
  },
};
