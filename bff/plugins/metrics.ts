// Every answered HTTP request counted and timed by route pattern
// (shop_http_requests_total and its histogram, kit/metrics.ts), served on the
// operations port by main.ts. Without `metrics` (tests) nothing is counted.
import fp from 'fastify-plugin';
import { observeHttp, type ProcessMetrics } from '../../services/kit/index.ts';

export default fp<{ metrics?: ProcessMetrics | undefined }>(
  async (app, { metrics }) => {
    if (metrics) observeHttp(app, metrics);
  },
  { name: 'metrics', fastify: '5.x' },
);
