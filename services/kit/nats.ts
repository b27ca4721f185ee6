// One NATS connection per process: reconnects forever (a service outlives a
// NATS restart), and skips the stack capture nats.js does per request.
// NATS_URL may name several servers (a cluster): it connects to one and, when
// that one dies or stops answering pings (a frozen machine: 2 missed 3 s
// pings, instead of nats.js's 2 minutes), reconnects to another. A node
// entering lame duck mode says so; the connection then moves at once rather
// than when the node closes it, seconds later (see connectNats).
import { connect, Events, type NatsConnection } from 'nats';
import type { Logger } from './log.ts';

export interface NatsSettings {
  NATS_URL: string;
  NATS_USER?: string | undefined;
  NATS_PASSWORD?: string | undefined;
}

/**
 * NATS_USER and NATS_PASSWORD; without NATS_USER, the process's own user of
 * nats.conf when its password variable (NATS_<NAME>_PASSWORD, which the server
 * reads too) is set, so one environment serves nats-server and every process.
 */
export function natsCredentials(name: string, settings: NatsSettings, env = process.env): { user: string; pass: string } | undefined {
  if (settings.NATS_USER) return { user: settings.NATS_USER, pass: settings.NATS_PASSWORD ?? '' };
  const own = env[`NATS_${name.toUpperCase()}_PASSWORD`];
  return own ? { user: name, pass: own } : undefined;
}

export async function connectNats(name: string, settings: NatsSettings, log: Logger): Promise<NatsConnection> {
  const nc = await connect({
    servers: settings.NATS_URL.split(',').map((url) => url.trim()),
    name,
    ...natsCredentials(name, settings),
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    pingInterval: 3000,
    maxPingOut: 2,
    waitOnFirstConnect: true,
    noAsyncTraces: true,
  });
  log.info({ server: nc.getServer() }, 'nats connected');
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === 'pingTimer') continue;
      log.info({ status: status.type, data: String(status.data) }, 'nats status');
      // The node is leaving: it has already shut its JetStream down and handed its leaderships
      // over, and pulls made through it are no longer served (docs/decisions.md, "Where a gap's
      // seconds went"). It closes this connection anyway within its lame duck duration;
      // moving now loses no more than that would, and consumers pull from another node at once.
      if (status.type === Events.LDM) {
        log.info({ server: nc.getServer() }, 'nats server entering lame duck mode; moving to another');
        nc.reconnect().catch((error: unknown) => log.warn({ err: error }, 'could not move off the lame duck server'));
      }
    }
  })();
  return nc;
}
