// One catalog of the error codes that travel on the wire. Each stable string
// code maps to the numeric status the NATS micro protocol carries in
// `Nats-Service-Error-Code`; callers switch on the string, never on the text.
export const ErrorCodes = {
  VALIDATION_FAILED: 400,
  INVALID_CREDENTIALS: 401,
  CUSTOMER_NOT_FOUND: 404,
  PRODUCT_NOT_FOUND: 404,
  ORDER_NOT_FOUND: 404,
  PAYMENT_NOT_FOUND: 404,
  ADDRESS_NOT_FOUND: 404,
  EMAIL_TAKEN: 409,
  SKU_TAKEN: 409,
  CURRENCY_MISMATCH: 409,
  PRODUCT_ARCHIVED: 409,
  ORDER_NOT_CANCELLABLE: 409,
  // The IETF Idempotency-Key draft answers a key reused with another request 422.
  IDEMPOTENCY_KEY_REUSED: 422,
  INTERNAL: 500,
  SERVICE_UNAVAILABLE: 503,
  TIMEOUT: 504,
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ErrorCodes, value);
}

/** Header carrying our string code beside the micro protocol's numeric one. */
export const ERROR_CODE_HEADER = 'Shop-Error-Code';
