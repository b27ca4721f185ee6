// The payment-provider adapter: all the payment service needs from whoever
// moves the money. Every operation carries an idempotency key, and a provider
// answers a repeated key with its first answer without moving money again;
// that is what makes redelivered events and retries after a crash safe (the
// provider may have charged although our transaction never committed).
import type { Money } from '../../subjects/index.ts';

export interface ChargeRequest {
  idempotencyKey: string;
  /** The card token the customer gave with the order. */
  token: string;
  amount: Money;
}

export type ChargeOutcome = { status: 'captured'; reference: string } | { status: 'declined'; reason: string };

export interface RefundRequest {
  idempotencyKey: string;
  /** The provider's reference of the captured charge to give back. */
  chargeReference: string;
  amount: Money;
}

export interface RefundOutcome {
  reference: string;
}

/** What the provider's books hold for a charge: its outcome and, when captured, how much was taken. */
export type ChargeRecord = { status: 'captured'; reference: string; amount: Money } | { status: 'declined'; reason: string };

export interface PaymentProvider {
  /** Captures `amount`, or declines; throws ProviderUnavailableError when it cannot tell. */
  charge(request: ChargeRequest): Promise<ChargeOutcome>;
  /**
   * The charge made under `idempotencyKey`, or undefined when none was; moves
   * no money. Real providers offer this lookup: it is how a caller whose
   * process died after the provider's answer learns what it did.
   * Throws ProviderUnavailableError when it cannot tell.
   */
  findCharge(idempotencyKey: string): Promise<ChargeRecord | undefined>;
  /** Gives a captured charge back; throws ProviderUnavailableError (try later) or ProviderRejectedError. */
  refund(request: RefundRequest): Promise<RefundOutcome>;
  /** Releases connections; called once the service has stopped using it. */
  close(): Promise<void>;
}

/**
 * The provider could not be reached or failed on its side: the outcome is
 * unknown, so the caller retries with the same key. Never a decline.
 */
export class ProviderUnavailableError extends Error {
  override readonly name = 'ProviderUnavailableError';
}

/** The provider refused a request that cannot succeed as asked (e.g. refund of an unknown charge). */
export class ProviderRejectedError extends Error {
  override readonly name = 'ProviderRejectedError';
}
