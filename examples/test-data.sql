-- Test data for the development database: applied by `database patch` and `database deploy`
-- (`database pull_staging` would replace it with data pulled from staging).
INSERT INTO shop.customer (email, name, phone) VALUES
    ('ada@example.org', 'Ada Lovelace', '+44 20 7946 0000'),
    ('alan@example.org', 'Alan Turing', NULL),
    ('grace@example.org', 'Grace Hopper', '+1 202 555 0100')
ON CONFLICT (email) DO NOTHING;

INSERT INTO shop.invoice (customer_id, currency, amount_minor, paid)
SELECT c.id, v.currency, v.amount_minor, v.paid
FROM (VALUES
        ('ada@example.org', 'EUR', 12950, false),
        ('ada@example.org', 'EUR', 4000, true),
        ('alan@example.org', 'JPY', 15000, false),
        ('grace@example.org', 'USD', 9999, false)
     ) AS v (email, currency, amount_minor, paid)
JOIN shop.customer AS c ON c.email = v.email;
