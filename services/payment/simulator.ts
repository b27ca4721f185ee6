/*
 * The built-in payment simulator: a stand-in for a real card provider, with
 * deterministic rules, so the whole saga runs (and is tested) without one.
 *
 * Charges, with the rules checked in this order:
 *   1. a declining token                -> declined with its reason; by default
 *      `tok_decline` ("card declined") and `tok_insufficient_funds`
 *      ("insufficient funds"), live setting `payments.decline_tokens`
 *   2. amount > PAYMENT_AMOUNT_LIMIT    -> declined, reason "amount over limit"
 *      (minor units, any currency; default 100000000, i.e. 1 000 000.00)
 *   3. any other token                  -> captured, reference `sim_ch_<uuid>`
 *
 * The service hands the simulator a view of its live settings
 * (subjects/settings.ts, `payments.*`), read at every call: a change in the
 * `config` bucket applies to the next charge.
 *
 * Refunds give back a captured charge, whole or in part, once:
 *   -> refunded, reference `sim_re_<uuid>`; a refund of an unknown or declined
 *      charge, of more than was charged, or of a charge already refunded under
 *      another key is rejected (ProviderRejectedError).
 *
 * Idempotency: like a real provider, the simulator keeps its own ledger
 * (table `simulator_ledger`) keyed by the idempotency key. A key it has seen
 * gets the first answer back, captured or declined, whatever the new request
 * says, and no money moves again. It uses its own connections, not the
 * service's transaction: a charge stays made even when the caller's
 * transaction rolls back, as with a real provider.
 *
 * Lookups: `findCharge(key)` reads the ledger entry of the charge made under
 *   `key` (captured with its reference and amount, or declined), moving no
 *   money: the way a caller that died after the provider's answer finds out
 *   what happened.
 *
 * Faults, for exercising retries (every call, charge or refund):
 *   - PAYMENT_DELAY_MS (default 0): latency added to every call.
 *   - PAYMENT_FAIL_FIRST_ATTEMPTS (default 0): the first N calls with each
 *     idempotency key fail with a transient error; deterministic, so tests
 *     can drive a retry. Calls are counted in table `simulator_calls`.
 *   - PAYMENT_FAILURE_RATE (0..1, default 0): probability that a call fails
 *     with a transient error (1 = every call).
 *   Lookups get the latency and the failure rate, but are not counted in
 *   `simulator_calls` nor failed by PAYMENT_FAIL_FIRST_ATTEMPTS: those are
 *   about the attempts to move money under a key.
 *   A transient error (ProviderUnavailableError) happens before the ledger is
 *   touched, so nothing is charged; the service naks the event and retries
 *   with the same key. It is never turned into a decline.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Static, TObject } from '@sinclair/typebox';
import { settings as liveSettings, settingVariables } from '../../subjects/index.ts';
import { createPool, preparedQueries, type Pool, type Queryable } from '../kit/index.ts';
import {
  ProviderRejectedError,
  ProviderUnavailableError,
  type ChargeOutcome,
  type ChargeRecord,
  type ChargeRequest,
  type PaymentProvider,
  type RefundOutcome,
  type RefundRequest,
} from './provider.ts';

/**
 * The simulator's variables of the environment: those of its live settings
 * (subjects/settings.ts, `payments.*`), declared there with their bounds and
 * defaults.
 */
export const SimulatorSettings = settingVariables(
  liveSettings.payments.amountLimit,
  liveSettings.payments.delayMs,
  liveSettings.payments.failureRate,
  liveSettings.payments.failFirstAttempts,
);
export type SimulatorSettings = Static<TObject<typeof SimulatorSettings>> & {
  /** Declining tokens and their reasons, checked first; `DEFAULT_DECLINE_TOKENS` when absent. */
  PAYMENT_DECLINE_TOKENS?: Readonly<Record<string, string>>;
};

export const DECLINING_TOKEN = 'tok_decline';
export const INSUFFICIENT_FUNDS_TOKEN = 'tok_insufficient_funds';
export const DEFAULT_DECLINE_TOKENS: Readonly<Record<string, string>> = liveSettings.payments.declineTokens.default;

interface LedgerRow {
  operation: 'charge' | 'refund';
  amount: number;
  currency: string;
  outcome: 'captured' | 'declined' | 'refunded';
  reason: string | null;
  reference: string | null;
}

export class PaymentSimulator implements PaymentProvider {
  readonly #pool: Pool;
  readonly #db: Queryable;
  readonly #settings: SimulatorSettings;
  readonly #random: () => number;

  /** `db` should be a pool of its own: the service's pool is busy holding its consumers' transactions. */
  constructor(db: Pool, settings: SimulatorSettings, random: () => number = Math.random) {
    this.#pool = db;
    this.#db = preparedQueries(db);
    this.#settings = settings;
    this.#random = random;
  }

  /** A simulator on its own small pool to the database at `databaseUrl` (migration 002 made its tables). */
  static open(databaseUrl: string, settings: SimulatorSettings): PaymentSimulator {
    return new PaymentSimulator(createPool(databaseUrl, 4), settings);
  }

  async charge({ idempotencyKey, token, amount }: ChargeRequest): Promise<ChargeOutcome> {
    await this.#latency();
    const declining = this.#settings.PAYMENT_DECLINE_TOKENS ?? DEFAULT_DECLINE_TOKENS;
    // Own keys only: a token such as `constructor` is just a token.
    const reason = Object.hasOwn(declining, token)
      ? declining[token]!
      : amount.amount > this.#settings.PAYMENT_AMOUNT_LIMIT
        ? 'amount over limit'
        : null;
    // The faults are decided before the statement that counts the call and records the charge
    // (one round trip), so that it records nothing when the call is to fail.
    const failFirst = this.#settings.PAYMENT_FAIL_FIRST_ATTEMPTS;
    const outage = this.#random() < this.#settings.PAYMENT_FAILURE_RATE;
    const { rows } = await this.#db.query<{ calls: number } & { [K in keyof LedgerRow]: LedgerRow[K] | null }>(
      `WITH call AS (
         INSERT INTO simulator_calls (idempotency_key, calls) VALUES ($1, 1)
         ON CONFLICT (idempotency_key) DO UPDATE SET calls = simulator_calls.calls + 1, last_call_at = now()
         RETURNING calls
       ), recorded AS (
         INSERT INTO simulator_ledger (idempotency_key, operation, amount, currency, outcome, reason, reference)
         SELECT $1, 'charge', $2::bigint, $3::text, $4::text, $5::text, $6::text FROM call
          WHERE call.calls > $7::int AND NOT $8::boolean
         ON CONFLICT DO NOTHING
         RETURNING operation, amount, currency, outcome, reason, reference
       )
       -- What the insert recorded, or else what the ledger held for the key already.
       SELECT call.calls, entry.* FROM call LEFT JOIN (
         SELECT * FROM recorded
         UNION ALL
         SELECT operation, amount, currency, outcome, reason, reference FROM simulator_ledger WHERE idempotency_key = $1
       ) AS entry ON true`,
      [
        idempotencyKey,
        amount.amount,
        amount.currency,
        reason === null ? 'captured' : 'declined',
        reason,
        reason === null ? `sim_ch_${randomUUID()}` : null,
        failFirst,
        outage,
      ],
    );
    const { calls, ...entry } = rows[0]!;
    if (calls <= failFirst) throw new ProviderUnavailableError(`simulated outage: call ${calls} with key ${idempotencyKey}`);
    if (outage) throw new ProviderUnavailableError('simulated transient provider failure');
    // Neither recorded nor found: a call with the same key committed its entry while this
    // statement waited on it (too late for the statement's snapshot). Read it now.
    const row = entry.operation === null ? await this.#entry(idempotencyKey) : (entry as LedgerRow);
    if (row?.operation !== 'charge') {
      throw new ProviderRejectedError(`idempotency key ${idempotencyKey} was used for a refund`);
    }
    return row.outcome === 'captured'
      ? { status: 'captured', reference: row.reference! }
      : { status: 'declined', reason: row.reason ?? 'declined' };
  }

  async refund({ idempotencyKey, chargeReference, amount }: RefundRequest): Promise<RefundOutcome> {
    await this.#call(idempotencyKey);
    const { rows } = await this.#db.query<LedgerRow>(
      `SELECT operation, amount, currency, outcome, reason, reference FROM simulator_ledger
        WHERE reference = $1 AND operation = 'charge' AND outcome = 'captured'`,
      [chargeReference],
    );
    const charge = rows[0];
    if (!charge) throw new ProviderRejectedError(`no captured charge ${chargeReference}`);
    if (charge.currency !== amount.currency || amount.amount > charge.amount) {
      throw new ProviderRejectedError(`refund of ${amount.amount} ${amount.currency} exceeds charge ${chargeReference}`);
    }
    const row = await this.#record(
      idempotencyKey,
      {
        operation: 'refund',
        amount: amount.amount,
        currency: amount.currency,
        outcome: 'refunded',
        reason: null,
        reference: `sim_re_${randomUUID()}`,
      },
      chargeReference,
    );
    // No row under this key: the charge was refunded under another key.
    if (!row) throw new ProviderRejectedError(`charge ${chargeReference} is already refunded`);
    if (row.operation !== 'refund') throw new ProviderRejectedError(`idempotency key ${idempotencyKey} was used for a charge`);
    return { reference: row.reference! };
  }

  async findCharge(idempotencyKey: string): Promise<ChargeRecord | undefined> {
    await this.#latency();
    this.#randomOutage();
    const { rows } = await this.#db.query<LedgerRow>(
      `SELECT operation, amount, currency, outcome, reason, reference FROM simulator_ledger
        WHERE idempotency_key = $1 AND operation = 'charge'`,
      [idempotencyKey],
    );
    const row = rows[0];
    if (!row) return undefined;
    return row.outcome === 'captured'
      ? { status: 'captured', reference: row.reference!, amount: { amount: row.amount, currency: row.currency } }
      : { status: 'declined', reason: row.reason ?? 'declined' };
  }

  async close(): Promise<void> {
    await this.#pool.end();
  }

  /**
   * Latency and injected faults of a refund, before anything is recorded: a
   * failed call moves no money. (A charge does the same inside its one statement.)
   */
  async #call(idempotencyKey: string): Promise<void> {
    await this.#latency();
    const { rows } = await this.#db.query<{ calls: number }>(
      `INSERT INTO simulator_calls (idempotency_key, calls) VALUES ($1, 1)
       ON CONFLICT (idempotency_key) DO UPDATE SET calls = simulator_calls.calls + 1, last_call_at = now()
       RETURNING calls`,
      [idempotencyKey],
    );
    const calls = rows[0]!.calls;
    if (calls <= this.#settings.PAYMENT_FAIL_FIRST_ATTEMPTS) {
      throw new ProviderUnavailableError(`simulated outage: call ${calls} with key ${idempotencyKey}`);
    }
    this.#randomOutage();
  }

  async #latency(): Promise<void> {
    if (this.#settings.PAYMENT_DELAY_MS > 0) await sleep(this.#settings.PAYMENT_DELAY_MS);
  }

  #randomOutage(): void {
    if (this.#random() < this.#settings.PAYMENT_FAILURE_RATE) {
      throw new ProviderUnavailableError('simulated transient provider failure');
    }
  }

  /**
   * Records `entry` under `idempotencyKey` unless the key is known, and
   * returns what the ledger holds for the key: the first answer wins, also
   * when two calls race. Undefined when another unique rule refused the row.
   */
  async #record(idempotencyKey: string, entry: LedgerRow, chargeReference: string | null = null): Promise<LedgerRow | undefined> {
    const inserted = await this.#db.query<LedgerRow>(
      `INSERT INTO simulator_ledger (idempotency_key, operation, amount, currency, outcome, reason, reference, charge_reference)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING
       RETURNING operation, amount, currency, outcome, reason, reference`,
      [idempotencyKey, entry.operation, entry.amount, entry.currency, entry.outcome, entry.reason, entry.reference, chargeReference],
    );
    // A new key (the usual case) is answered by the insert; a known one by what the ledger holds.
    return inserted.rows[0] ?? this.#entry(idempotencyKey);
  }

  async #entry(idempotencyKey: string): Promise<LedgerRow | undefined> {
    const { rows } = await this.#db.query<LedgerRow>(
      'SELECT operation, amount, currency, outcome, reason, reference FROM simulator_ledger WHERE idempotency_key = $1',
      [idempotencyKey],
    );
    return rows[0];
  }
}
