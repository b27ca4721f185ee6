// Errors of the plain HTTP routes (health, storefront) as JSON `{ error }`:
// the message for a client error, a fixed text for a server one (logged).
// GraphQL has its own: mercurius answers /graphql through errors.ts.
import fp from 'fastify-plugin';

export default fp(
  async (app) => {
    app.setErrorHandler((error: { statusCode?: number; message: string }, request, reply) => {
      const status = error.statusCode ?? 500;
      if (status >= 500) request.log.error({ err: error }, 'request failed');
      void reply.code(status).send({ error: status >= 500 ? 'internal error' : error.message });
    });
  },
  { name: 'http-errors', fastify: '5.x' },
);
