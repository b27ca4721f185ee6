// Requests per window, counted per user when a valid token came, else per
// address (plugins/auth.ts sets `request.auth` first). The limit and window
// are live settings, read per request: a change of bff.rate_limit_max or
// bff.rate_limit_window_ms applies to the next one. Health probes opt out
// with `config: { rateLimit: false }`. A refused GraphQL request answers 429
// with the code RATE_LIMITED (errors.ts); any other route a JSON 429.
import rateLimit from '@fastify/rate-limit';
import fp from 'fastify-plugin';
import { settings as live } from '../../subjects/index.ts';
import { rateLimitKey } from './auth.ts';

export default fp(
  async (app) => {
    await app.register(rateLimit, {
      global: true,
      max: () => app.liveSettings.get(live.bff.rateLimitMax),
      timeWindow: () => app.liveSettings.get(live.bff.rateLimitWindowMs),
      keyGenerator: rateLimitKey,
    });
  },
  { name: 'rate-limit', fastify: '5.x', dependencies: ['shop', 'auth'] },
);
