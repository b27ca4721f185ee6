// The one error type that crosses process boundaries. Handlers throw it with a
// stable code from subjects/errors.ts; the RPC server sends it as a NATS micro
// error; the RPC client rebuilds it, so callers `catch` the same type.
import { ContractViolation, ErrorCodes, type ErrorCode } from '../../subjects/index.ts';

export class ServiceError extends Error {
  override readonly name = 'ServiceError';
  readonly code: ErrorCode;
  readonly details: unknown;
  constructor(code: ErrorCode, message: string, details?: unknown) {
    super(message);
    this.code = code;
    this.details = details;
  }
  /** The numeric status of the micro protocol (400, 404, 409, 500, …). */
  get status(): number {
    return ErrorCodes[this.code];
  }
  /** Worth trying again later: the remote was unreachable or slow, not wrong. */
  get transient(): boolean {
    return this.code === 'TIMEOUT' || this.code === 'SERVICE_UNAVAILABLE';
  }
}

// PostgreSQL refuses text it cannot store: a NUL character (\u0000) in a text
// value (22021) or a JSON value (22P05). Contracts allow it in strings, so it
// comes from the caller's input; the transaction rolled back, nothing changed.
const UNSTORABLE_TEXT = new Set(['22021', '22P05']);

// The database could not be reached (no connection to be had: too many
// clients, refused, starting up, the pool's connect timeout), or it ended our
// session (57P01/57P02: the statement was cancelled, its transaction rolled
// back): nothing was done, so it is an outage to retry later, not a bug of
// ours. A connection that merely vanishes (no code) stays INTERNAL: a COMMIT
// may have gone through.
const NO_CONNECTION = new Set(['53300', '57P01', '57P02', '57P03', '08001', '08004', 'ECONNREFUSED']);
const POOL_CONNECT_TIMEOUT = 'timeout exceeded when trying to connect';
// A database closed to new sessions (ALLOW_CONNECTIONS false, as during a
// failover or maintenance) refuses the login with 55000; the same code in a
// statement means something else, so the message decides.
const NOT_ACCEPTING = /is not currently accepting connections/;

/** Maps anything thrown to a ServiceError; unknown failures become INTERNAL without internals. */
export function toServiceError(error: unknown): ServiceError {
  if (error instanceof ServiceError) return error;
  if (error instanceof ContractViolation) return new ServiceError('VALIDATION_FAILED', error.message, error.issues);
  const code = (error as { code?: string } | null)?.code ?? '';
  if (UNSTORABLE_TEXT.has(code)) {
    return new ServiceError('VALIDATION_FAILED', 'text contains a character that cannot be stored (NUL, \\u0000)');
  }
  const message = (error as Error | null)?.message ?? '';
  if (NO_CONNECTION.has(code) || message === POOL_CONNECT_TIMEOUT || (code === '55000' && NOT_ACCEPTING.test(message))) {
    return new ServiceError('SERVICE_UNAVAILABLE', 'the database is unavailable; try again shortly');
  }
  return new ServiceError('INTERNAL', 'internal error');
}
