// Batched lookups behind the nested fields (mercurius loaders): every field of
// one kind asked in one tick of one request becomes one call. A page of 20
// orders with 3 lines each costs one products.getMany and one
// customers.getMany, not 60 + 20 calls. Results are cached for the request.
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
import { ServiceError, type RpcClient } from '../services/kit/index.ts';
import type { Auth } from './plugins/auth.ts';
import { forbidden } from './errors.ts';
import { toConnection, type Connection } from './resolvers.ts';

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

/** Fetches by id in as few calls as the contract allows; a missing id maps to null. */
async function byIds<T extends { id: string }>(
  ids: readonly string[],
  fetch: (ids: string[]) => Promise<(T | null)[]>,
): Promise<Map<string, T | null>> {
  const found = new Map<string, T | null>();
  const pages = await Promise.all(chunks(unique(ids), MAX_IDS).map(fetch));
  for (const page of pages) for (const item of page) if (item) found.set(item.id, item);
  return found;
}

export function makeLoaders(client: RpcClient) {
  return {
    OrderLine: {
      async product(queries: Query<OrderLine>[]): Promise<(Product | null)[]> {
        const found = await byIds(
          queries.map((q) => q.obj.productId),
          async (ids) => (await client.call(products.getMany, { ids })).products,
        );
        return queries.map((q) => found.get(q.obj.productId) ?? null);
      },
    },

    Order: {
      async customer(queries: Query<Order>[]): Promise<(Customer | null)[]> {
        const found = await byIds(
          queries.map((q) => q.obj.customerId),
          async (ids) => (await client.call(customers.getMany, { ids })).customers,
        );
        return queries.map((q) => found.get(q.obj.customerId) ?? null);
      },

      // No batch operation exists for payments: one call per distinct order,
      // all in parallel, each failing on its own.
      async payment(queries: Query<Order>[]): Promise<(Payment | null | Error)[]> {
        const ids = unique(queries.map((q) => q.obj.id));
        const results = await Promise.all(
          ids.map((orderId) =>
            client.call(payments.getByOrder, { orderId }).catch((error: unknown) => {
              if (error instanceof ServiceError && error.code === 'PAYMENT_NOT_FOUND') return null;
              return error instanceof Error ? error : new Error(String(error));
            }),
          ),
        );
        const byOrder = new Map(ids.map((id, i) => [id, results[i]!]));
        return queries.map((q) => byOrder.get(q.obj.id) ?? null);
      },

      // Like payments: one call per distinct order, all in parallel, each failing on its own.
      // The order's own customer goes with it, so only that customer's emails come back.
      async notifications(queries: Query<Order>[]): Promise<(Notification[] | Error)[]> {
        const distinct = [...new Map(queries.map((q) => [q.obj.id, q.obj])).values()];
        const lists = await Promise.all(
          distinct.map((order) =>
            client.call(notifications.listByOrder, { orderId: order.id, customerId: order.customerId }).then(
              (reply) => reply.items,
              (error: unknown) => (error instanceof Error ? error : new Error(String(error))),
            ),
          ),
        );
        const byOrder = new Map(distinct.map((order, i) => [order.id, lists[i]!]));
        return queries.map((q) => byOrder.get(q.obj.id)!);
      },

      // One shipments.getByOrders for the orders of the tick (a page of 20 orders: one call).
      async shipment(queries: Query<Order>[]): Promise<(Shipment | null)[]> {
        const ids = unique(queries.map((q) => q.obj.id));
        const pages = await Promise.all(
          chunks(ids, MAX_IDS).map(async (orderIds) => (await client.call(shipments.getByOrders, { orderIds })).shipments),
        );
        const byOrder = new Map(pages.flat().flatMap((shipment) => (shipment ? [[shipment.orderId, shipment] as const] : [])));
        return queries.map((q) => byOrder.get(q.obj.id) ?? null);
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
