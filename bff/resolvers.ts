// The GraphQL resolvers: each one authorizes its caller, then answers from a
// read model (read-models.ts: products and customers' profiles in memory) or
// asks a service through the kit's RpcClient. A write answers with the new
// state and puts it in the read model at once, so the next read sees it
// (read your writes). Nested fields that need another service are
// loaders (loaders.ts), so they batch and fail on their own: a service that is
// down nulls its fields with an error beside the rest of the data.
import { randomUUID } from 'node:crypto';
import { GraphQLError, Kind, type ValueNode } from 'graphql';
import type { FastifyInstance } from 'fastify';
import type { MercuriusContext } from 'mercurius';
import {
  customers,
  decodeCatalogCursor,
  encodeCatalogCursor,
  orders,
  products,
  type AddressInput,
  type Customer,
  type Order,
  type Product,
} from '../subjects/index.ts';
import { ServiceError, type RpcClient } from '../services/kit/index.ts';
import { issueToken, requireAdmin, requireUser, type Auth } from './plugins/auth.ts';
import { ApiError, asPublicGraphQLError, forbidden } from './errors.ts';
import type { OrderFeed, OrderUpdate } from './feed.ts';
import type { ReadModels } from './read-models.ts';

export type Context = MercuriusContext & {
  auth: Auth;
  /** The request's Idempotency-Key header, over HTTP (Node joins repeated ones with ", ", which no key may hold). */
  idempotencyKeyHeader?: string | undefined;
};

export interface Connection<T> {
  edges: { node: T }[];
  pageInfo: { endCursor: string | null; hasNextPage: boolean };
}

/** A service page (`items` + `nextCursor`) as a Relay connection. */
export function toConnection<T>(page: { items: T[]; nextCursor: string | null }): Connection<T> {
  return {
    edges: page.items.map((node) => ({ node })),
    pageInfo: { endCursor: page.nextCursor, hasNextPage: page.nextCursor !== null },
  };
}

interface PageArgs {
  first?: number | null;
  after?: string | null;
}

/** Paging arguments checked here, so the message speaks of the argument, not of a subject. */
function paging({ first, after }: PageArgs): { first: number; after?: string } {
  const size = first ?? 20;
  if (!Number.isInteger(size) || size < 1 || size > 100) throw new ApiError('BAD_USER_INPUT', '`first` must be 1 to 100');
  return after ? { first: size, after } : { first: size };
}

const MAX_CENTS = 1_000_000_000_00;

function centsValue(value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0 || value > MAX_CENTS) {
    throw new GraphQLError(`Cents must be an integer from 0 to ${MAX_CENTS}`);
  }
  return value;
}

export interface ResolverDeps {
  app: FastifyInstance;
  client: RpcClient;
  feed: OrderFeed;
  readModels: ReadModels;
}

export function makeResolvers({ app, client, feed, readModels: { catalog, profiles } }: ResolverDeps) {
  const signIn = (customer: Customer) => ({ ...issueToken(app, customer), customer });
  /** A product a write answered with, kept in the catalog replica for the next read. */
  const kept = (product: Product) => {
    catalog.apply(product);
    return product;
  };
  /** An unfiltered catalog page from the replica, paged as products.list pages (same cursors). */
  const catalogPage = (args: PageArgs) => {
    const { first, after } = paging(args);
    const position = after === undefined ? undefined : decodeCatalogCursor(after);
    // The same refusal as products.list's, whichever of the two answers the page.
    if (after !== undefined && !position) {
      throw new ServiceError('VALIDATION_FAILED', 'after is not a cursor this service gave out', [
        { path: '/after', message: 'unknown cursor' },
      ]);
    }
    const { items, hasMore } = catalog.page(first, position);
    const last = items.at(-1);
    return toConnection({ items, nextCursor: hasMore && last ? encodeCatalogCursor(last) : null });
  };
  /** Orders another customer owns are answered as not found (by the order service). */
  const ownerFilter = (auth: Auth) => {
    const user = requireUser(auth);
    return user.role === 'admin' ? {} : { customerId: user.id };
  };

  return {
    Cents: {
      serialize: centsValue,
      parseValue: centsValue,
      parseLiteral(node: ValueNode) {
        if (node.kind !== Kind.INT) throw new GraphQLError('Cents must be an integer literal');
        return centsValue(Number(node.value));
      },
    },

    Query: {
      me: (_: unknown, _args: unknown, { auth }: Context) => {
        const { id } = requireUser(auth);
        return profiles.get(id) ?? client.call(customers.get, { id });
      },

      // Search stays with the product service (its index); the plain catalog comes from memory once caught up.
      products: async (_: unknown, args: PageArgs & { search?: string | null }) =>
        !args.search && catalog.ready
          ? catalogPage(args)
          : toConnection(await client.call(products.list, { ...paging(args), ...(args.search ? { search: args.search } : {}) })),

      product: (_: unknown, { id }: { id: string }) => catalog.get(id) ?? client.call(products.get, { id }),

      order: (_: unknown, { id }: { id: string }, { auth }: Context) => client.call(orders.get, { id, ...ownerFilter(auth) }),

      orders: async (_: unknown, args: PageArgs, { auth }: Context) =>
        toConnection(await client.call(orders.listByCustomer, { customerId: requireUser(auth).id, ...paging(args) })),
    },

    Mutation: {
      register: async (_: unknown, args: { email: string; name: string; password: string }) => {
        const customer = await client.call(customers.register, args);
        profiles.apply(customer);
        return signIn(customer);
      },

      login: async (_: unknown, args: { email: string; password: string }) => signIn(await client.call(customers.authenticate, args)),

      placeOrder: (
        _: unknown,
        args: {
          lines: { productId: string; quantity: number }[];
          paymentToken: string;
          idempotencyKey?: string | null;
          shippingAddressId?: string | null;
        },
        { auth, idempotencyKeyHeader }: Context,
      ) => {
        const user = requireUser(auth);
        return client.call(orders.place, {
          customerId: user.id,
          idempotencyKey: placementKey(args.idempotencyKey, idempotencyKeyHeader),
          lines: args.lines.map(({ productId, quantity }) => ({ productId, quantity })),
          paymentToken: args.paymentToken,
          ...(args.shippingAddressId ? { shippingAddressId: args.shippingAddressId } : {}),
        });
      },

      updateProfile: async (_: unknown, { name }: { name: string }, { auth }: Context) => {
        const customer = await client.call(customers.rename, { id: requireUser(auth).id, name });
        profiles.apply(customer);
        return customer;
      },

      addAddress: (_: unknown, args: { input: AddressFields; makeDefault?: boolean | null }, { auth }: Context) =>
        client.call(customers.addAddress, {
          customerId: requireUser(auth).id,
          address: addressInput(args.input),
          makeDefault: args.makeDefault ?? false,
        }),

      updateAddress: (_: unknown, args: { id: string; input: AddressFields }, { auth }: Context) =>
        client.call(customers.updateAddress, { customerId: requireUser(auth).id, addressId: args.id, address: addressInput(args.input) }),

      setDefaultAddress: (_: unknown, { id }: { id: string }, { auth }: Context) =>
        client.call(customers.setDefaultAddress, { customerId: requireUser(auth).id, addressId: id }),

      removeAddress: async (_: unknown, { id }: { id: string }, { auth }: Context) =>
        (await client.call(customers.removeAddress, { customerId: requireUser(auth).id, addressId: id })).items,

      cancelOrder: async (_: unknown, { id, reason }: { id: string; reason?: string | null }, { auth }: Context) => {
        const user = requireUser(auth);
        // An admin cancels on behalf of the owner; a customer only their own.
        const customerId = user.role === 'admin' ? (await client.call(orders.get, { id })).customerId : user.id;
        return client.call(orders.cancel, { id, customerId, ...(reason ? { reason } : {}) });
      },

      createProduct: (
        _: unknown,
        {
          input,
        }: {
          input: {
            sku: string;
            name: string;
            description?: string | null;
            price: { amount: number; currency: string };
            initialStock?: number | null;
          };
        },
        { auth }: Context,
      ) => {
        requireAdmin(auth);
        return client
          .call(products.create, {
            sku: input.sku,
            name: input.name,
            price: { amount: input.price.amount, currency: input.price.currency },
            ...(input.description != null ? { description: input.description } : {}),
            ...(input.initialStock != null ? { initialStock: input.initialStock } : {}),
          })
          .then(kept);
      },

      restock: (_: unknown, args: { productId: string; quantity: number }, { auth }: Context) => {
        requireAdmin(auth);
        return client.call(products.restock, args).then(kept);
      },

      updateProduct: (
        _: unknown,
        {
          id,
          input,
        }: {
          id: string;
          input: { name?: string | null; description?: string | null; price?: { amount: number; currency: string } | null };
        },
        { auth }: Context,
      ) => {
        requireAdmin(auth);
        return client
          .call(products.update, {
            id,
            ...(input.name != null ? { name: input.name } : {}),
            ...(input.description != null ? { description: input.description } : {}),
            ...(input.price != null ? { price: { amount: input.price.amount, currency: input.price.currency } } : {}),
          })
          .then(kept);
      },

      archiveProduct: (_: unknown, { id }: { id: string }, { auth }: Context) => {
        requireAdmin(auth);
        return client.call(products.archive, { id }).then(kept);
      },
    },

    Subscription: {
      orderUpdated: {
        // Authorized once, here: the first value is the order as it is now,
        // fetched with the caller as owner, so someone else's order fails as
        // ORDER_NOT_FOUND before anything is sent.
        subscribe: async (_: unknown, { id }: { id: string }, context: Context & { request?: { auth?: Auth } }) => {
          let release: (() => void) | undefined;
          try {
            // The token of connection_init, else an Authorization header on the upgrade request.
            const filter = ownerFilter(context.auth ?? context.request?.auth);
            // Listen before reading, so no change between the read and the listen is lost.
            const updates = await context.pubsub.subscribe(feed.topic(id));
            release = feed.watch(id);
            const current = await client.call(orders.get, { id, ...filter });
            return follow(current, untilClosed(updates), release);
          } catch (error) {
            release?.();
            (context.pubsub as unknown as { close(): void }).close();
            throw asPublicGraphQLError(error, app.log);
          }
        },
        // A subscription sent over plain HTTP is executed, not subscribed: there is no event to resolve.
        resolve: (event: { orderUpdated?: unknown } | undefined) => {
          if (!event?.orderUpdated) throw new ApiError('BAD_REQUEST', 'subscriptions are served over WebSocket only');
          return event.orderUpdated;
        },
      },
    },

    Customer: {
      role: (customer: Customer) => customer.role.toUpperCase(),
      addresses: async (customer: Customer, _args: unknown, { auth }: Context) => {
        const user = requireUser(auth);
        if (user.role !== 'admin' && user.id !== customer.id) throw forbidden();
        return (await client.call(customers.listAddresses, { customerId: customer.id })).items;
      },
    },

    Order: {
      currency: (order: Order) => order.total.currency,
    },
  };
}

/** AddressInput as GraphQL hands it over (line2 may be null). */
type AddressFields = Omit<AddressInput, 'line2'> & { line2?: string | null };

function addressInput({ name, line1, line2, city, postalCode, country }: AddressFields): AddressInput {
  return { name, line1, city, postalCode, country, ...(line2 != null ? { line2 } : {}) };
}

/**
 * The idempotency key of a placement: the argument or the Idempotency-Key
 * header (the same value when both are sent). Without either, a key of the
 * BFF's own still makes its retries of this one call safe.
 */
function placementKey(argument: string | null | undefined, header: string | undefined): string {
  if (argument != null && header !== undefined && argument !== header) {
    throw new ApiError('BAD_USER_INPUT', 'the idempotencyKey argument and the Idempotency-Key header differ; send one of them');
  }
  return argument ?? header ?? randomUUID();
}

/**
 * The pubsub queue (a Readable) as an iterable that leaves the stream alone
 * when we stop early; mercurius ends it when the subscription closes.
 */
function untilClosed(queue: unknown): AsyncIterable<OrderUpdate> {
  const readable = queue as AsyncIterable<OrderUpdate> & {
    iterator?(options: { destroyOnReturn: boolean }): AsyncIterable<OrderUpdate>;
  };
  return typeof readable.iterator === 'function' ? readable.iterator({ destroyOnReturn: false }) : readable;
}

/** The current order, then each later state with a longer history or a shipment's step; ends after CANCELLED. */
async function* follow(current: Order, updates: AsyncIterable<OrderUpdate>, release: () => void) {
  try {
    let seen = current.history.length;
    yield { orderUpdated: current };
    if (current.status === 'CANCELLED') return;
    for await (const { order, shipmentChanged } of updates) {
      // Fetches may land out of order; the history only grows, so it orders them.
      if (order.history.length < seen || (order.history.length === seen && !shipmentChanged)) continue;
      seen = order.history.length;
      yield { orderUpdated: order };
      if (order.status === 'CANCELLED') return;
    }
  } finally {
    release();
  }
}
