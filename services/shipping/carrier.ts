/*
 * The built-in carrier simulator: a stand-in for a parcel carrier's API, so
 * shipments move (and are tested) without one.
 *
 *   pickUp(shipment)   the carrier collects the parcel -> its tracking number
 *   deliver(shipment)  the carrier delivers it
 *
 * Both are idempotent, as a carrier's API keyed by our shipment id would be:
 * the tracking number is derived from the shipment id, so a pickup asked again
 * after a crash gives the same number.
 *
 * Its live settings (subjects/settings.ts, `shipments.*`) are read at every
 * call, so a change in the `config` bucket applies to the next one:
 *   - shipments.carrier_delay_ms: latency of every call;
 *   - shipments.failure_rate: probability that a call fails (transient);
 *   - shipments.fail_first_attempts: the first N calls of each step of each
 *     shipment fail (deterministic, for tests);
 *   - shipments.ship_after_ms / deliver_after_ms: how long the parcel waits
 *     before each step (the service schedules the steps with them).
 * A failure (CarrierUnavailableError) changes nothing; the service retries
 * the step later.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Static, TObject } from '@sinclair/typebox';
import { settings as live, settingVariables } from '../../subjects/index.ts';

export const CarrierSettings = settingVariables(
  live.shipments.shipAfterMs,
  live.shipments.deliverAfterMs,
  live.shipments.failureRate,
  live.shipments.failFirstAttempts,
  live.shipments.carrierDelayMs,
);
export type CarrierSettings = Static<TObject<typeof CarrierSettings>>;

/** The simulated carrier's name, on every shipment. */
export const CARRIER = 'SimPost';

export class CarrierUnavailableError extends Error {
  override readonly name = 'CarrierUnavailableError';
}

/** What a step needs to know: the shipment, and how many calls for this step failed before. */
export interface CarrierCall {
  shipmentId: string;
  failedAttempts: number;
}

export class CarrierSimulator {
  readonly #settings: CarrierSettings;
  readonly #random: () => number;

  constructor(settings: CarrierSettings, random: () => number = Math.random) {
    this.#settings = settings;
    this.#random = random;
  }

  async pickUp(call: CarrierCall): Promise<{ trackingNumber: string }> {
    await this.#call(call);
    return { trackingNumber: trackingNumberOf(call.shipmentId) };
  }

  async deliver(call: CarrierCall): Promise<void> {
    await this.#call(call);
  }

  async #call({ shipmentId, failedAttempts }: CarrierCall): Promise<void> {
    const delay = this.#settings.SHIPPING_CARRIER_DELAY_MS;
    if (delay > 0) await sleep(delay);
    if (failedAttempts < this.#settings.SHIPPING_FAIL_FIRST_ATTEMPTS) {
      throw new CarrierUnavailableError(`simulated carrier outage: attempt ${failedAttempts + 1} for shipment ${shipmentId}`);
    }
    if (this.#random() < this.#settings.SHIPPING_FAILURE_RATE) throw new CarrierUnavailableError('simulated transient carrier failure');
  }
}

/** `SP` and 16 upper-case hex digits of the shipment id: the same shipment always gets the same number. */
export function trackingNumberOf(shipmentId: string): string {
  return `SP${shipmentId.replaceAll('-', '').slice(0, 16).toUpperCase()}`;
}
