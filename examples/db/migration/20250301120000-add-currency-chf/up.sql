-- shop.currency inherits hectic.immutable: its rows change only in migration mode, and
-- SET LOCAL keeps that permission inside this migration's transaction.
SET LOCAL hectic.migration_mode = 'on';
INSERT INTO shop.currency (code, name, minor_units)
VALUES ('CHF', 'Swiss Franc', 2)
ON CONFLICT (code) DO NOTHING;
