// Who is calling: a JWT (HS256, @fastify/jwt) naming the customer and their
// role, read once per request, before any other hook (the rate limit keys on
// it), and checked by every resolver through requireUser / requireAdmin.
// Subscriptions read theirs from connection_init (plugins/graphql.ts).
import fastifyJwt from '@fastify/jwt';
import fp from 'fastify-plugin';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Customer, Role } from '../../subjects/index.ts';
import { forbidden, unauthenticated } from '../errors.ts';

export interface User {
  id: string;
  role: Role;
}

/** What a request knows about its caller: a user, or why there is none. */
export interface Auth {
  user: User | null;
  /** Set when a token was sent but refused (expired, bad signature, malformed). */
  problem?: string;
}

interface Claims {
  sub: string;
  role: Role;
}

declare module '@fastify/jwt' {
  interface FastifyJWT {
    payload: Claims;
    user: Claims;
  }
}

declare module 'fastify' {
  interface FastifyRequest {
    auth: Auth;
  }
}

/** Verified tokens remembered: about one per client active in the last minutes. */
const TOKEN_CACHE_SIZE = 10_000;

const ANONYMOUS: Auth = Object.freeze({ user: null });

/** JWT_TTL: seconds ("3600") or a number with a unit s, m, h or d ("15m", "1h", "7d"). */
export const TTL_PATTERN = '^[1-9][0-9]*[smhd]?$';

export function ttlSeconds(ttl: string): number {
  const match = /^(\d+)([smhd]?)$/.exec(ttl);
  if (!match) throw new Error(`bad JWT_TTL ${ttl}`);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86_400 }[match[2] as '' | 's' | 'm' | 'h' | 'd'];
  return Number(match[1]) * unit;
}

export interface AuthSettings {
  JWT_SECRET: string;
  JWT_TTL: string;
}

/** @fastify/jwt, and every request decorated with its `auth`. */
export default fp<AuthSettings>(
  async (app, settings) => {
    await app.register(fastifyJwt, {
      secret: settings.JWT_SECRET,
      sign: { algorithm: 'HS256', expiresIn: ttlSeconds(settings.JWT_TTL) },
      // A verified token is remembered (fast-jwt's LRU, keyed by a hash of it, never past its exp):
      // a client sends the same one with every request, and checking its HMAC again is the dearest
      // part of a catalog page after the HTTP itself. Refused tokens are not cached.
      verify: { algorithms: ['HS256'], cache: TOKEN_CACHE_SIZE },
    });
    app.decorateRequest('auth', null as unknown as Auth);
    app.addHook('onRequest', async (request) => {
      request.auth = readBearer(app, request.headers.authorization);
    });
  },
  { name: 'auth', fastify: '5.x' },
);

/** Verifies `Bearer <token>`; never throws: a refused token leaves the caller anonymous with a reason. */
export function readBearer(app: FastifyInstance, header: unknown): Auth {
  if (typeof header !== 'string' || header === '') return ANONYMOUS;
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  if (!match) return { user: null, problem: 'the Authorization header must be "Bearer <token>"' };
  try {
    const claims = app.jwt.verify<Claims>(match[1]!);
    if (typeof claims.sub !== 'string' || (claims.role !== 'customer' && claims.role !== 'admin')) {
      return { user: null, problem: 'invalid token' };
    }
    return { user: { id: claims.sub, role: claims.role } };
  } catch (error) {
    const code = (error as { code?: string }).code;
    return { user: null, problem: code === 'FAST_JWT_EXPIRED' ? 'token expired; sign in again' : 'invalid token' };
  }
}

/** A token for `customer`, with the instant it expires. */
export function issueToken(app: FastifyInstance, customer: Customer): { token: string; expiresAt: string } {
  const token = app.jwt.sign({ sub: customer.id, role: customer.role });
  const { exp } = app.jwt.decode<{ exp: number }>(token) ?? { exp: 0 };
  return { token, expiresAt: new Date(exp * 1000).toISOString() };
}

export function requireUser(auth: Auth | undefined): User {
  if (!auth?.user) throw unauthenticated(auth?.problem ?? 'sign in first');
  return auth.user;
}

export function requireAdmin(auth: Auth | undefined): User {
  const user = requireUser(auth);
  if (user.role !== 'admin') throw forbidden();
  return user;
}

/** The key the rate limit counts under: the user when a valid token came, else the address. */
export function rateLimitKey(request: FastifyRequest): string {
  const user = request.auth?.user;
  return user ? `user:${user.id}` : `ip:${request.ip}`;
}
