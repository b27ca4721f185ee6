// The GraphQL API (mercurius): POST and GET /graphql, subscriptions over a
// WebSocket on the same path (graphql-transport-ws), GraphiQL at /graphiql
// with GRAPHQL_DEV. Resolvers (resolvers.ts) answer from the read models or
// call the services; nested fields batch through loaders (loaders.ts). Before anything runs, a
// document is bounded in depth (GRAPHQL_DEPTH_LIMIT) and in fields
// (GRAPHQL_MAX_FIELDS, limits.ts), and without GRAPHQL_DEV introspection is
// refused. Every error leaves through errors.ts with a stable code.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import fp from 'fastify-plugin';
import mercurius from 'mercurius';
import { NoSchemaIntrospectionCustomRule, type GraphQLError } from 'graphql';
import { formatErrors } from '../errors.ts';
import { maxFieldsRule } from '../limits.ts';
import { makeLoaders } from '../loaders.ts';
import { makeResolvers } from '../resolvers.ts';
import type { BffConfig } from '../settings.ts';
import { readBearer } from './auth.ts';

type GraphQLSettings = Pick<BffConfig, 'GRAPHQL_DEV' | 'GRAPHQL_DEPTH_LIMIT' | 'GRAPHQL_MAX_FIELDS'>;

export default fp<GraphQLSettings>(
  async (app, settings) => {
    await app.register(mercurius, {
      schema: await readFile(join(import.meta.dirname, '..', 'schema.graphql'), 'utf8'),
      resolvers: makeResolvers({ app, client: app.rpc, feed: app.feed, readModels: app.readModels }) as never,
      loaders: makeLoaders(app.rpc, app.readModels) as never,
      jit: 1,
      queryDepth: settings.GRAPHQL_DEPTH_LIMIT,
      graphiql: settings.GRAPHQL_DEV,
      validationRules: [maxFieldsRule(settings.GRAPHQL_MAX_FIELDS), ...(settings.GRAPHQL_DEV ? [] : [NoSchemaIntrospectionCustomRule])],
      // The Idempotency-Key header rides beside the caller for placeOrder (resolvers.ts).
      context: (request) => ({ auth: request.auth, idempotencyKeyHeader: request.headers['idempotency-key'] as string | undefined }),
      subscription: {
        // Browsers cannot set headers on a WebSocket: the token rides in connection_init.
        onConnect: ({ payload }: { payload?: Record<string, unknown> }) => {
          const headers = (payload?.headers ?? payload ?? {}) as Record<string, unknown>;
          const header = headers.authorization ?? headers.Authorization;
          return header === undefined ? {} : { auth: readBearer(app, header) };
        },
        keepAlive: 30_000,
      },
      errorFormatter: (execution) => formatErrors(execution as typeof execution & { errors: readonly GraphQLError[] }, app.log),
    });
  },
  { name: 'graphql', fastify: '5.x', dependencies: ['shop', 'auth'] },
);
