// The one customer bench:rpc's no-I/O servers answer (bench/no-io-server.ts
// for the kit and the raw responder, bench/moleculer-server.ts for Moleculer):
// the same reply everywhere, so only the request-reply path differs.
import type { Customer } from '../subjects/index.ts';

export const fixedCustomer: Customer = {
  id: process.env.BENCH_CUSTOMER_ID ?? '00000000-0000-4000-8000-000000000000',
  email: 'bench@example.com',
  name: 'Bench Customer',
  role: 'customer',
  createdAt: '2024-01-01T00:00:00.000Z',
};
