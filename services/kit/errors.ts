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

/** Maps anything thrown to a ServiceError; unknown failures become INTERNAL without internals. */
export function toServiceError(error: unknown): ServiceError {
  if (error instanceof ServiceError) return error;
  if (error instanceof ContractViolation) return new ServiceError('VALIDATION_FAILED', error.message, error.issues);
  return new ServiceError('INTERNAL', 'internal error');
}
