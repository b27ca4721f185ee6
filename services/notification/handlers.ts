// Request-reply endpoints of the notification service.
import { notifications } from '../../subjects/index.ts';
import { endpoint, preparedQueries, type Pool } from '../kit/index.ts';
import { listByCustomer, listByOrder, listByOrders } from './store.ts';

export function notificationEndpoints(pool: Pool) {
  // Queries outside a transaction, each statement prepared once per connection.
  const db = preparedQueries(pool);
  return [
    endpoint(notifications.listByCustomer, async ({ customerId, first = 20, after }) => listByCustomer(db, customerId, first, after)),
    endpoint(notifications.listByOrder, async ({ orderId, customerId }) => ({
      items: await listByOrder(db, orderId, customerId),
    })),
    endpoint(notifications.listByOrders, async ({ orders }) => ({ lists: await listByOrders(db, orders) })),
  ];
}
