-- Reference data: inherits hectic.immutable, so rows can only change in migration mode
-- (an INSERT/UPDATE/DELETE/TRUNCATE outside it raises). Every table inherits
-- hectic.created_at — the bundle's event trigger rejects a CREATE TABLE that does not.
CREATE TABLE IF NOT EXISTS shop.currency (
    code        char(3)  PRIMARY KEY CHECK (code ~ '^[A-Z]{3}$'),
    name        text     NOT NULL,
    minor_units smallint NOT NULL CHECK (minor_units BETWEEN 0 AND 4)
) INHERITS (hectic.created_at, hectic.immutable);

BEGIN;
SET LOCAL hectic.migration_mode = 'on';
INSERT INTO shop.currency (code, name, minor_units) VALUES
    ('EUR', 'Euro', 2),
    ('USD', 'US Dollar', 2),
    ('JPY', 'Japanese Yen', 0),
    ('CHF', 'Swiss Franc', 2)
ON CONFLICT (code) DO NOTHING;
COMMIT;
