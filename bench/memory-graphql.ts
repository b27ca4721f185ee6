// Bench-only child process for the BFF benchmark (bench/bff.ts): fastify +
// mercurius serving the BFF's own schema (bff/schema.graphql) with the same
// mercurius options (JIT after the first call), every answer from memory.
// BENCH_MEMORY_DATA names a JSON file { order, customer, products,
// catalogPage } as the BFF answered them; the server answers `order(id)` with
// its customer and its lines' products, and `products` with the catalog page,
// from that data, and nothing else. Prints "listening <port>".
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import Fastify from 'fastify';
import mercurius from 'mercurius';

interface Data {
  order: { id: string; lines: { productId: string }[] } & Record<string, unknown>;
  customer: { role: string } & Record<string, unknown>;
  products: ({ id: string } & Record<string, unknown>)[];
  /** The BFF's answer to the catalog's first page. */
  catalogPage: unknown;
}

const data = JSON.parse(await readFile(process.env.BENCH_MEMORY_DATA!, 'utf8')) as Data;
const products = new Map(data.products.map((product) => [product.id, product]));

const app = Fastify();
await app.register(mercurius, {
  schema: await readFile(join(import.meta.dirname, '..', 'bff', 'schema.graphql'), 'utf8'),
  resolvers: {
    Query: {
      order: (_: unknown, { id }: { id: string }) => (id === data.order.id ? data.order : null),
      products: () => data.catalogPage,
    },
    Order: {
      customer: () => data.customer,
      currency: (order: { total: { currency: string } }) => order.total.currency,
    },
    OrderLine: {
      product: (line: { productId: string }) => products.get(line.productId) ?? null,
    },
    Customer: {
      role: (customer: { role: string }) => customer.role.toUpperCase(),
    },
  } as never,
  jit: 1,
});
const address = await app.listen({ port: 0, host: '127.0.0.1' });
process.stdout.write(`listening ${new URL(address).port}\n`);
process.once('SIGTERM', () => void app.close().then(() => process.exit(0)));
