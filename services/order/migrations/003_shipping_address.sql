-- Where the order ships: a copy of the customer's address when it was placed
-- (the contract's ShippingAddress as JSON), so a later edit or removal of the
-- saved address changes nothing here. Null when the customer had none.
ALTER TABLE orders ADD COLUMN shipping_address jsonb;
