// The storefront: the files of public/ (index.html at /), served by
// @fastify/static. Browsers revalidate them on each visit (ETag, no-cache),
// so a deploy shows at once; the page may talk only to this origin.
import { join } from 'node:path';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';

const PUBLIC_DIR = join(import.meta.dirname, '..', 'public');
const CONTENT_SECURITY_POLICY = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'";

export default async function storefrontRoutes(app: FastifyInstance): Promise<void> {
  await app.register(fastifyStatic, {
    root: PUBLIC_DIR,
    index: 'index.html',
    cacheControl: false,
    setHeaders(reply) {
      reply.header('cache-control', 'no-cache');
      reply.header('x-content-type-options', 'nosniff');
      reply.header('content-security-policy', CONTENT_SECURITY_POLICY);
    },
  });
}
