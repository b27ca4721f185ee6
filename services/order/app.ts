// The order service: places orders and drives the saga to CONFIRMED or CANCELLED.
import { Type } from '@sinclair/typebox';
import { join } from 'node:path';
import { orders } from '../../subjects/index.ts';
import { ServiceSettings, type ServiceDefinition } from '../kit/index.ts';
import { orderEndpoints } from './handlers.ts';
import { orderConsumers } from './events.ts';
import { deadlineSweeper } from './deadline.ts';

export const OrderSettings = {
  ...ServiceSettings,
  ORDER_DEADLINE_MS: Type.Integer({
    minimum: 100,
    maximum: 24 * 60 * 60 * 1000,
    default: 30_000,
    description: 'How long a PENDING order waits for stock and payment before it is cancelled.',
  }),
  ORDER_DEADLINE_SWEEP_MS: Type.Integer({
    minimum: 10,
    maximum: 10 * 60 * 1000,
    default: 1000,
    description: 'How often each instance looks for PENDING orders past their deadline.',
  }),
};

export const orderService: ServiceDefinition<{ ORDER_DEADLINE_MS: number; ORDER_DEADLINE_SWEEP_MS: number }> = {
  name: 'orders',
  version: '1.0.0',
  description: 'Orders and the saga that confirms or cancels them',
  migrations: join(import.meta.dirname, 'migrations'),
  emits: [orders.placed, orders.confirmed, orders.cancelled],
  build({ pool, client, log }, settings) {
    return {
      endpoints: orderEndpoints(pool, client, { deadlineMs: settings.ORDER_DEADLINE_MS }),
      consumers: orderConsumers(),
      background: [deadlineSweeper(pool, log, { intervalMs: settings.ORDER_DEADLINE_SWEEP_MS })],
    };
  },
};
