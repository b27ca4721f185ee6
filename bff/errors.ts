// What a GraphQL client sees when something fails. Every error carries a
// stable `extensions.code`: the services' own codes (ServiceError.code) pass
// through, auth failures are UNAUTHENTICATED / FORBIDDEN, malformed queries
// GRAPHQL_VALIDATION_FAILED, and anything unexpected INTERNAL with a generic
// message (the real one goes to the log, never to the client).
import type { ExecutionResult } from 'graphql';
import { GraphQLError } from 'graphql';
import type { FastifyBaseLogger } from 'fastify';
import { ErrorCodes } from '../subjects/index.ts';
import { ServiceError } from '../services/kit/index.ts';

/** Codes of the BFF's own, beside the services' (subjects/errors.ts). */
export const ApiCodes = [
  'UNAUTHENTICATED',
  'FORBIDDEN',
  'BAD_USER_INPUT',
  'BAD_REQUEST',
  'GRAPHQL_VALIDATION_FAILED',
  'QUERY_TOO_DEEP',
  'QUERY_TOO_COMPLEX',
  'RATE_LIMITED',
] as const;
export type ApiCode = (typeof ApiCodes)[number];

/** An error the BFF raises itself (auth, input it checks before any call). */
export class ApiError extends Error {
  override readonly name = 'ApiError';
  readonly code: ApiCode;
  constructor(code: ApiCode, message: string) {
    super(message);
    this.code = code;
  }
  /** graphql-js copies these onto the GraphQLError, so the code survives paths that skip the formatter. */
  get extensions(): { code: ApiCode } {
    return { code: this.code };
  }
}

export const unauthenticated = (why = 'sign in first') => new ApiError('UNAUTHENTICATED', why);
export const forbidden = () => new ApiError('FORBIDDEN', 'not allowed for your role');

export interface PublicError {
  message: string;
  locations?: readonly { line: number; column: number }[] | undefined;
  path?: readonly (string | number)[] | undefined;
  extensions: { code: string; [key: string]: unknown };
}

// Codes whose message says something the caller can act on; the others (a
// service down, a timeout, a bug) get a fixed text that leaks no subject names.
const GENERIC: Partial<Record<string, string>> = {
  SERVICE_UNAVAILABLE: 'a service this field depends on is unavailable; try again shortly',
  TIMEOUT: 'a service this field depends on did not answer in time; try again shortly',
  INTERNAL: 'internal error',
};

/** One error as the client sees it; logs what it hides. */
export function publicError(error: GraphQLError, log: FastifyBaseLogger): PublicError {
  const original = error.originalError;
  const where = { locations: error.locations, path: error.path };
  if (original instanceof ServiceError) {
    const extensions: PublicError['extensions'] = { code: original.code };
    let message = GENERIC[original.code] ?? original.message;
    if (original.code === 'VALIDATION_FAILED' && Array.isArray(original.details)) {
      // The contract check names the failing fields; keep those, drop the subject.
      extensions.issues = original.details;
      message = `invalid input: ${original.message.replace(/^.*does not match its contract: /, '')}`;
    }
    if (ErrorCodes[original.code] >= 500) log.warn({ err: original, path: error.path }, 'service call failed');
    return { message, ...where, extensions };
  }
  if (original instanceof ApiError) return { message: original.message, ...where, extensions: { code: original.code } };
  if (original instanceof GraphQLError && typeof original.extensions?.code === 'string') {
    // Made public already (asPublicGraphQLError, on the subscription path): keep it as it is.
    return { message: original.message, ...where, extensions: { code: original.extensions.code } };
  }
  if ((original === undefined || original === null) && error.path) {
    // graphql-js itself failed a field during execution (e.g. null for a non-null field): a bug of ours.
    log.error({ err: error, path: error.path }, 'execution error');
    return { message: GENERIC.INTERNAL!, ...where, extensions: { code: 'INTERNAL' } };
  }
  if (original === undefined || original === null) {
    // Raised by graphql-js itself (syntax, validation, variable coercion) or the depth limit.
    const code = typeof error.extensions?.code === 'string' ? error.extensions.code : 'GRAPHQL_VALIDATION_FAILED';
    return { message: error.message, ...where, extensions: { code } };
  }
  const status = (original as { statusCode?: unknown }).statusCode;
  if (status === 429) return { message: 'too many requests; slow down', ...where, extensions: { code: 'RATE_LIMITED' } };
  if (typeof status === 'number' && status >= 400 && status < 500) {
    // A fastify/mercurius refusal of the HTTP request (bad body, wrong method).
    return { message: original.message, ...where, extensions: { code: 'BAD_REQUEST' } };
  }
  if (!error.path) {
    // No path: raised before execution, i.e. variable coercion, where graphql-js keeps the
    // scalar's own error (a mistyped or out-of-range value) as originalError.
    return { message: error.message, ...where, extensions: { code: 'BAD_USER_INPUT' } };
  }
  log.error({ err: original, path: error.path }, 'unexpected error in a resolver');
  return { message: GENERIC.INTERNAL!, ...where, extensions: { code: 'INTERNAL' } };
}

/** Mercurius's validation wrapper holds the real errors in `.errors`. */
function flatten(errors: readonly GraphQLError[]): GraphQLError[] {
  return errors.flatMap((error) => {
    const inner = (error.originalError as { errors?: unknown } | undefined)?.errors;
    if (Array.isArray(inner)) {
      return inner.map((e) => {
        if (e instanceof GraphQLError) return e;
        const tooDeep = (e as { code?: string }).code === 'MER_ERR_GQL_QUERY_DEPTH';
        return new GraphQLError((e as Error).message.replace(/`/g, ''), {
          extensions: { code: tooDeep ? 'QUERY_TOO_DEEP' : 'GRAPHQL_VALIDATION_FAILED' },
        });
      });
    }
    return [error];
  });
}

/**
 * Mercurius's errorFormatter. An execution (data present, even partly) answers
 * 200 with `errors` beside `data`; a request refused before execution answers
 * 400 (invalid query), 429 (rate limit) or the status it came with.
 */
export function formatErrors(
  execution: ExecutionResult & { errors: readonly GraphQLError[] },
  log: FastifyBaseLogger,
): { statusCode: number; response: { data: Record<string, unknown> | null; errors: PublicError[] } } {
  const errors = flatten(execution.errors).map((error) => publicError(error, log));
  let statusCode = 200;
  if (execution.data === undefined || execution.data === null) {
    const codes = new Set(errors.map((e) => e.extensions.code));
    if (codes.has('RATE_LIMITED')) statusCode = 429;
    else if (
      ['GRAPHQL_VALIDATION_FAILED', 'QUERY_TOO_DEEP', 'QUERY_TOO_COMPLEX', 'BAD_REQUEST', 'BAD_USER_INPUT'].some((c) => codes.has(c))
    )
      statusCode = 400;
    else if (execution.data === undefined && codes.has('INTERNAL')) statusCode = 500;
  }
  return { statusCode, response: { data: (execution.data as Record<string, unknown> | null | undefined) ?? null, errors } };
}

/**
 * The public form of `error` as a GraphQLError, for the one path mercurius
 * does not format: an error while a subscription starts.
 */
export function asPublicGraphQLError(error: unknown, log: FastifyBaseLogger): GraphQLError {
  const wrapped = error instanceof GraphQLError ? error : new GraphQLError((error as Error).message, { originalError: error as Error });
  const { message, extensions } = publicError(wrapped, log);
  return new GraphQLError(message, { extensions });
}
