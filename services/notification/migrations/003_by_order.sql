-- listByOrder: an order's notifications, newest first, found without reading
-- the customer's others (the order's few rows, in order, from the index).
CREATE INDEX notifications_by_order ON notifications (order_id, created_at DESC, id DESC);
