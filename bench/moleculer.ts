// Moleculer as a new user would set it up, for the Moleculer row of
// `npm run bench:rpc`: the same broker options for the server (a child
// process, bench/moleculer-server.ts) and the caller (in the bench process).
// The child inherits the bench's environment, so both read the same knobs.
import { ServiceBroker } from 'moleculer';

const timeoutMs = Number(process.env.BENCH_MOLECULER_TIMEOUT_MS ?? 5000);
if (!Number.isInteger(timeoutMs) || timeoutMs < 0) {
  throw new Error('BENCH_MOLECULER_TIMEOUT_MS must be a whole number of milliseconds, 0 for none');
}

/** What the knobs chose; bench/rpc.ts writes it beside the results. */
export const moleculerSettings = {
  /**
   * The deadline of a call (Moleculer arms it on both brokers):
   * BENCH_MOLECULER_TIMEOUT_MS, by default the kit callers' 5000 ms;
   * 0 is Moleculer's own default, none.
   */
  timeoutMs,
  /** BENCH_MOLECULER_METRICS=1: Moleculer's metrics on (collected, no reporter); off by default, as Moleculer's. */
  metrics: process.env.BENCH_MOLECULER_METRICS === '1',
};

/**
 * Moleculer 0.15's defaults (JSON serializer, fastest-validator, metrics and
 * tracing off, no retries, no circuit breaker, its own round-robin balancing)
 * and only what the comparison needs:
 * - the NATS transporter on the bench's nats-server, by its URL;
 * - a request timeout, as the kit's callers have one (above);
 * - log level warn, as the kit's no-I/O server runs (neither logs per call).
 */
export function moleculerBroker(nodeID: string, natsUrl: string, extra: { skipProcessEventRegistration?: boolean } = {}): ServiceBroker {
  return new ServiceBroker({
    nodeID,
    transporter: { type: 'NATS', options: { url: natsUrl } },
    requestTimeout: moleculerSettings.timeoutMs,
    logLevel: 'warn',
    metrics: moleculerSettings.metrics,
    tracing: false,
    ...extra,
  });
}
