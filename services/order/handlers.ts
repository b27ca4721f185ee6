// Request-reply endpoints of the order service.
import { createHash, randomUUID } from 'node:crypto';
import {
  customers,
  orders,
  products,
  shipments,
  type Address,
  type Money,
  type Order,
  type Product,
  type RequestOf,
  type ShippingAddress,
} from '../../subjects/index.ts';
import { ServiceError, endpoint, preparedQueries, withTransaction, writeEvent, type Pool, type RpcClient } from '../kit/index.ts';
import { findKeyedOrder, findOrder, insertOrder, listOrders, transition, type Cursor, type NewLine } from './store.ts';

/** The largest amount a Money may carry (subjects/common.ts). */
const MAX_AMOUNT = 1_000_000_000_00;

export interface OrderOptions {
  /** How long a PENDING order waits for the saga before the sweeper cancels it. */
  deadlineMs: number;
}

export function orderEndpoints(pool: Pool, client: RpcClient, options: OrderOptions) {
  // Queries outside a transaction, each statement prepared once per connection.
  const db = preparedQueries(pool);
  return [
    endpoint(orders.place, async (request) => {
      const { customerId, idempotencyKey, lines, paymentToken, shippingAddressId } = request;
      const fingerprint = fingerprintOf(request);
      const wanted = mergeLines(lines);
      // The key's earlier order and both lookups at once; each failure keeps its own typed code, the customer's first.
      const [earlier, destination, found] = await Promise.allSettled([
        findKeyedOrder(db, customerId, idempotencyKey),
        client.call(customers.shippingAddress, { customerId, ...(shippingAddressId ? { addressId: shippingAddressId } : {}) }),
        client.call(products.getMany, { ids: [...wanted.keys()] }),
      ]);
      if (earlier.status === 'rejected') throw earlier.reason;
      // A repeat answers what the first attempt made, whatever the catalog says now.
      if (earlier.value) return sameRequest(earlier.value, fingerprint, idempotencyKey);
      if (destination.status === 'rejected') throw destination.reason;
      if (found.status === 'rejected') throw found.reason;
      const priced = priceLines(wanted, found.value.products);
      const id = randomUUID();
      return withTransaction(pool, async (tx) => {
        const order = await insertOrder(tx, {
          id,
          customerId,
          idempotencyKey,
          fingerprint,
          shippingAddress: shippingCopy(destination.value.address),
          currency: priced.total.currency,
          totalAmount: priced.total.amount,
          lines: priced.lines,
          deadlineMs: options.deadlineMs,
        });
        if (!order) {
          // A concurrent attempt with this key committed first (the claim waited for it): its order is the answer.
          return sameRequest((await findKeyedOrder(tx, customerId, idempotencyKey))!, fingerprint, idempotencyKey);
        }
        await writeEvent(tx, orders.placed, {
          orderId: id,
          customerId,
          lines: priced.lines.map((line) => ({ productId: line.productId, quantity: line.quantity })),
          payment: { token: paymentToken, amount: order.total },
          deadlineAt: order.deadlineAt,
        });
        return order;
      });
    }),

    endpoint(orders.get, async ({ id, customerId }) => {
      const order = await findOrder(db, id, customerId);
      if (!order) throw new ServiceError('ORDER_NOT_FOUND', `no order ${id}`);
      return order;
    }),

    endpoint(orders.listByCustomer, async ({ customerId, first = 20, after }) => {
      const page = await listOrders(db, customerId, first, after === undefined ? undefined : decodeCursor(after));
      return { items: page.items, nextCursor: page.next ? encodeCursor(page.next) : null };
    }),

    endpoint(orders.cancel, async ({ id, customerId, reason }) => {
      const text = reason?.trim() || 'cancelled by the customer';
      // The shipping service decides for a confirmed order: it holds the shipment (it will not ship)
      // or refuses, once shipped. The order moves only from the status the decision was made on, so
      // an order confirmed meanwhile goes round again and is asked about; at most three rounds
      // (PENDING, CONFIRMED, CANCELLED).
      for (;;) {
        const existing = await findOrder(db, id, customerId);
        if (!existing) throw new ServiceError('ORDER_NOT_FOUND', `no order ${id}`);
        if (existing.status === 'CANCELLED') {
          // A repeat of a cancel that succeeded (its reply lost, the client retried) answers
          // like the first one did; an order the saga cancelled for another reason is not ours to cancel.
          if (existing.cancelReason === 'CUSTOMER_CANCELLED') return existing;
          throw new ServiceError('ORDER_NOT_CANCELLABLE', `order ${id} is ${existing.status} (${existing.cancelReason})`);
        }
        if (existing.status === 'CONFIRMED') await client.call(shipments.hold, { orderId: id, customerId });
        const moved = await withTransaction(pool, async (tx) => {
          const moved = await transition(tx, {
            id,
            customerId,
            from: [existing.status],
            to: 'CANCELLED',
            cancelReason: 'CUSTOMER_CANCELLED',
            reason: text,
          });
          if (moved) {
            await writeEvent(tx, orders.cancelled, {
              orderId: id,
              customerId: moved.customerId,
              reasonCode: 'CUSTOMER_CANCELLED',
              reason: text,
              previousStatus: moved.previousStatus,
              total: moved.total,
            });
          }
          return moved;
        });
        if (moved) return (await findOrder(db, id, customerId))!;
      }
    }),
  ];
}

/**
 * What identifies a placement's request besides its customer and key: sha256
 * of the rest as JSON with sorted keys, so the order of fields does not count
 * (the order of lines does).
 */
export function fingerprintOf(request: RequestOf<typeof orders.place>): string {
  const { customerId: _customer, idempotencyKey: _key, ...rest } = request;
  return createHash('sha256').update(canonicalJson(rest)).digest('base64url');
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([key, item]) => `${JSON.stringify(key)}:${canonicalJson(item)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** The order a key made, for a repeat of the same request; IDEMPOTENCY_KEY_REUSED for another request. */
function sameRequest(earlier: { fingerprint: string; order: Order }, fingerprint: string, key: string): Order {
  if (earlier.fingerprint !== fingerprint) {
    throw new ServiceError(
      'IDEMPOTENCY_KEY_REUSED',
      `the idempotency key ${JSON.stringify(key)} was used for another request (order ${earlier.order.id}); use a new key for a new order`,
      { orderId: earlier.order.id },
    );
  }
  return earlier.order;
}

/** Sums the quantities of lines naming the same product, keeping first-seen order. */
function mergeLines(lines: readonly { productId: string; quantity: number }[]): Map<string, number> {
  const merged = new Map<string, number>();
  for (const line of lines) merged.set(line.productId, (merged.get(line.productId) ?? 0) + line.quantity);
  return merged;
}

/** What the order keeps of the address it ships to: a copy, so later edits of the saved one change nothing. */
function shippingCopy(address: Address | null): ShippingAddress | null {
  if (!address) return null;
  const { id, name, line1, line2, city, postalCode, country } = address;
  return { addressId: id, name, line1, line2, city, postalCode, country };
}

/** Lines at current prices, in integer minor units; every product must exist, be for sale and share one currency. */
function priceLines(wanted: ReadonlyMap<string, number>, found: readonly (Product | null)[]): { lines: NewLine[]; total: Money } {
  const ids = [...wanted.keys()];
  const missing = ids.filter((_, index) => !found[index]);
  if (missing.length > 0) {
    throw new ServiceError('PRODUCT_NOT_FOUND', `no product ${missing.join(', ')}`, { productIds: missing });
  }
  const known = found as Product[];
  const archived = known.filter((product) => product.archivedAt);
  if (archived.length > 0) {
    throw new ServiceError('PRODUCT_ARCHIVED', `no longer for sale: ${archived.map((product) => product.sku).join(', ')}`, {
      productIds: archived.map((product) => product.id),
    });
  }
  const currencies = [...new Set(known.map((product) => product.price.currency))];
  if (currencies.length > 1) {
    throw new ServiceError('CURRENCY_MISMATCH', `products are priced in ${currencies.join(' and ')}; an order has one currency`, {
      currencies,
    });
  }
  const lines = known.map((product) => {
    const quantity = wanted.get(product.id)!;
    return {
      productId: product.id,
      sku: product.sku,
      name: product.name,
      quantity,
      unitAmount: product.price.amount,
      lineAmount: product.price.amount * quantity,
    };
  });
  const amount = lines.reduce((sum, line) => sum + line.lineAmount, 0);
  if (amount > MAX_AMOUNT) throw new ServiceError('VALIDATION_FAILED', 'the order total is larger than an order may be');
  return { lines, total: { amount, currency: currencies[0]! } };
}

// The cursor is opaque to callers: base64url of "<created_at in µs>.<id>".
export function encodeCursor(cursor: Cursor): string {
  return Buffer.from(`${cursor.createdUs}.${cursor.id}`).toString('base64url');
}

const CURSOR = /^(\d{1,17})\.([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;

function decodeCursor(text: string): Cursor {
  const match = CURSOR.exec(Buffer.from(text, 'base64url').toString());
  if (!match) throw new ServiceError('VALIDATION_FAILED', 'after is not a cursor this service gave out');
  return { createdUs: Number(match[1]), id: match[2]! };
}
