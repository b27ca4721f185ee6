// Request-reply endpoints of the notification service.
import { notifications } from '../../subjects/index.ts';
import { endpoint, type Pool } from '../kit/index.ts';
import { listByCustomer, listByOrder } from './store.ts';

export function notificationEndpoints(pool: Pool) {
  return [
    endpoint(notifications.listByCustomer, async ({ customerId, first = 20, after }) =>
      listByCustomer(pool, customerId, first, after),
    ),
    endpoint(notifications.listByOrder, async ({ orderId, customerId }) => ({
      items: await listByOrder(pool, orderId, customerId),
    })),
  ];
}
