CREATE TABLE IF NOT EXISTS shop.invoice (
    id           bigserial PRIMARY KEY,
    customer_id  bigint    NOT NULL REFERENCES shop.customer (id) ON DELETE CASCADE,
    currency     char(3)   NOT NULL REFERENCES shop.currency (code),
    amount_minor bigint    NOT NULL CHECK (amount_minor >= 0),
    paid         boolean   NOT NULL DEFAULT false
) INHERITS (hectic.created_at, hectic.updated_at);

CREATE INDEX IF NOT EXISTS invoice_customer_idx ON shop.invoice (customer_id);
