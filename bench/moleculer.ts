// Moleculer as a new user would set it up, for the Moleculer row of
// `npm run bench:rpc`: the same broker options for the server (a child
// process, bench/moleculer-server.ts) and the caller (in the bench process).
import { ServiceBroker } from 'moleculer';

/** The kit callers' deadline in bench/rpc.ts, so both sides run a timer per call. */
export const MOLECULER_TIMEOUT_MS = 5000;

/**
 * Moleculer 0.15's defaults (JSON serializer, fastest-validator, metrics and
 * tracing off, no retries, no circuit breaker, round-robin balancing by
 * Moleculer itself) and only what the comparison needs:
 * - the NATS transporter on the bench's nats-server, by its URL;
 * - a request timeout (the default is none) equal to the kit callers';
 * - log level warn, as the kit's no-I/O server runs (neither logs per call).
 */
export function moleculerBroker(nodeID: string, natsUrl: string, extra: { skipProcessEventRegistration?: boolean } = {}): ServiceBroker {
  return new ServiceBroker({
    nodeID,
    transporter: { type: 'NATS', options: { url: natsUrl } },
    requestTimeout: MOLECULER_TIMEOUT_MS,
    logLevel: 'warn',
    metrics: false,
    tracing: false,
    ...extra,
  });
}
