-- created_at and updated_at come from the hectic parents; the bundle attaches the trigger
-- that keeps updated_at current.
CREATE TABLE IF NOT EXISTS shop.customer (
    id    bigserial PRIMARY KEY,
    email text      NOT NULL UNIQUE CHECK (position('@' IN email) > 1),
    name  text      NOT NULL,
    phone text
) INHERITS (hectic.created_at, hectic.updated_at);
