// Batched lookups behind the nested fields (mercurius loaders): every field of
// one kind asked in one tick of one request becomes one call. Products and
// customers come from the read models (read-models.ts); only those a replica
// does not hold cost a call: a page of 20 orders with 3 lines each costs at
// most one products.getMany and one customers.getMany, not 60 + 20 calls.
// Results are cached for the request.
import type { MercuriusContext } from 'mercurius';
import {
  customers,
  notifications,
  orders,
  payments,
  products,
  shipments,
  type Customer,
  type Notification,
  type Order,
  type Payment,
  type Product,
  type Shipment,
} from '../subjects/index.ts';
import type { RpcClient } from '../services/kit/index.ts';
import type { Auth } from './plugins/auth.ts';
import { forbidden } from './errors.ts';
import { toConnection, type Connection } from './resolvers.ts';
import type { ReadModels } from './read-models.ts';

type OrderLine = Order['lines'][number];
interface Query<Obj, Params = Record<string, never>> {
  obj: Obj;
  params: Params;
}
type Context = MercuriusContext & { auth: Auth };

/** The getMany contracts take at most 500 ids per call. */
const MAX_IDS = 500;

function unique(ids: Iterable<string>): string[] {
  return [...new Set(ids)];
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * Looks ids up in `replica`, and fetches those it does not hold in as few
 * calls as the contract allows; an id nobody knows maps to null.
 */
async function byIds<T extends { id: string }>(
  replica: { get(id: string): T | undefined },
  ids: readonly string[],
  fetch: (ids: string[]) => Promise<(T | null)[]>,
): Promise<Map<string, T | null>> {
  const found = new Map<string, T | null>();
  const missing: string[] = [];
  for (const id of unique(ids)) {
    const item = replica.get(id);
    if (item) found.set(id, item);
    else missing.push(id);
  }
  const pages = await Promise.all(chunks(missing, MAX_IDS).map(fetch));
  for (const page of pages) for (const item of page) if (item) found.set(item.id, item);
  return found;
}

export function makeLoaders(client: RpcClient, { catalog, profiles }: ReadModels) {
  return {
    OrderLine: {
      async product(queries: Query<OrderLine>[]): Promise<(Product | null)[]> {
        const found = await byIds(
          catalog,
          queries.map((q) => q.obj.productId),
          async (ids) => (await client.call(products.getMany, { ids })).products,
        );
        return queries.map((q) => found.get(q.obj.productId) ?? null);
      },
    },

    Order: {
      async customer(queries: Query<Order>[]): Promise<(Customer | null)[]> {
        const found = await byIds(
          profiles,
          queries.map((q) => q.obj.customerId),
          async (ids) => (await client.call(customers.getMany, { ids })).customers,
        );
        return queries.map((q) => found.get(q.obj.customerId) ?? null);
      },

      // One payments.getByOrders per page (500 orders a call), not one call per order.
      async payment(queries: Query<Order>[]): Promise<(Payment | null | Error)[]> {
        const ids = unique(queries.map((q) => q.obj.id));
        const byOrder = new Map<string, Payment | null | Error>();
        await Promise.all(
          chunks(ids, MAX_IDS).map(async (orderIds) => {
            try {
              const found = (await client.call(payments.getByOrders, { orderIds })).payments;
              for (const [i, id] of orderIds.entries()) byOrder.set(id, found[i] ?? null);
            } catch (error) {
              for (const id of orderIds) byOrder.set(id, error instanceof Error ? error : new Error(String(error)));
            }
          }),
        );
        return queries.map((q) => byOrder.get(q.obj.id) ?? null);
      },

      // Like payments: one notifications.listByOrders per page. Each order goes with its own
      // customer, so only that customer's emails come back.
      async notifications(queries: Query<Order>[]): Promise<(Notification[] | Error)[]> {
        const distinct = [...new Map(queries.map((q) => [q.obj.id, q.obj])).values()];
        const byOrder = new Map<string, Notification[] | Error>();
        await Promise.all(
          chunks(distinct, MAX_IDS).map(async (page) => {
            try {
              const { lists } = await client.call(notifications.listByOrders, {
                orders: page.map((order) => ({ orderId: order.id, customerId: order.customerId })),
              });
              for (const [i, order] of page.entries()) byOrder.set(order.id, lists[i] ?? []);
            } catch (error) {
              for (const order of page) byOrder.set(order.id, error instanceof Error ? error : new Error(String(error)));
            }
          }),
        );
        return queries.map((q) => byOrder.get(q.obj.id)!);
      },

      // One shipments.getByOrders for the orders of the tick (a page of 20 orders: one call).
      // Not cached: a subscription keeps its context across pushes, and a shipment
      // moves on while its order (the cache key) stays the same.
      shipment: {
        opts: { cache: false },
        async loader(queries: Query<Order>[]): Promise<(Shipment | null)[]> {
          const ids = unique(queries.map((q) => q.obj.id));
          const pages = await Promise.all(
            chunks(ids, MAX_IDS).map(async (orderIds) => (await client.call(shipments.getByOrders, { orderIds })).shipments),
          );
          const byOrder = new Map(pages.flat().flatMap((shipment) => (shipment ? [[shipment.orderId, shipment] as const] : [])));
          return queries.map((q) => byOrder.get(q.obj.id) ?? null);
        },
      },
    },

    Customer: {
      // The same customer's orders asked twice on a page (through Order.customer) cost one call.
      async orders(
        queries: Query<Customer, { first?: number; after?: string | null }>[],
        context: Context,
      ): Promise<(Connection<Order> | Error)[]> {
        const user = context.auth.user;
        const key = (q: (typeof queries)[number]) => JSON.stringify([q.obj.id, q.params.first ?? 20, q.params.after ?? null]);
        const pages = new Map<string, Promise<Connection<Order> | Error>>();
        for (const q of queries) {
          if (!user || (user.role !== 'admin' && user.id !== q.obj.id)) continue;
          const k = key(q);
          if (!pages.has(k)) {
            pages.set(
              k,
              client
                .call(orders.listByCustomer, {
                  customerId: q.obj.id,
                  first: q.params.first ?? 20,
                  ...(q.params.after ? { after: q.params.after } : {}),
                })
                .then(toConnection, (error: unknown) => error as Error),
            );
          }
        }
        return Promise.all(queries.map((q) => pages.get(key(q)) ?? forbidden()));
      },
    },
  };
}
