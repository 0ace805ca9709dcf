-- migrate:up
ALTER TABLE shop.customer ADD COLUMN IF NOT EXISTS phone text;

-- migrate:down
ALTER TABLE shop.customer DROP COLUMN IF EXISTS phone;
