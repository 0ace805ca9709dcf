-- Tests of the example project. `database test` runs this file inside a transaction that is
-- rolled back, so nothing done here stays in the database.
--
-- Output is TAP (what pgTAP prints), written by hand here so the example needs no extension:
-- `database test` counts the `ok N` / `not ok N` lines and checks them against `1..N`.
-- psql runs with -tA (tuples only, unaligned), so each result is one bare line.

-- helpers live in pg_temp: they vanish with the session (and the rollback) ---------------
CREATE FUNCTION pg_temp.tap(n int, passed boolean, description text) RETURNS text
LANGUAGE sql AS $$
    SELECT format('%s %s - %s', CASE WHEN passed THEN 'ok' ELSE 'not ok' END, n, description)
$$;

-- true when the statement raises (the error is caught in a subtransaction)
CREATE FUNCTION pg_temp.raises(statement text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN false;
EXCEPTION WHEN OTHERS THEN
    RETURN true;
END
$$;

-- runs a statement in migration mode; the SET clause ends with the function call
CREATE FUNCTION pg_temp.in_migration_mode(statement text) RETURNS void
LANGUAGE plpgsql SET hectic.migration_mode = 'on' AS $$
BEGIN
    EXECUTE statement;
END
$$;

SELECT '1..10';

SELECT pg_temp.tap(1, count(*) >= 4, 'reference currencies are loaded')
FROM shop.currency;

SELECT pg_temp.tap(2, pg_temp.raises(
    $$INSERT INTO shop.currency (code, name, minor_units) VALUES ('XTS', 'Test', 2)$$),
    'immutable shop.currency rejects INSERT outside migration mode');

SELECT pg_temp.tap(3, pg_temp.raises($$DELETE FROM shop.currency WHERE code = 'JPY'$$),
    'immutable shop.currency rejects DELETE outside migration mode');

\o /dev/null
SELECT pg_temp.in_migration_mode(
    $$INSERT INTO shop.currency (code, name, minor_units) VALUES ('XTS', 'Test', 2)$$);
\o
SELECT pg_temp.tap(4, EXISTS (SELECT FROM shop.currency WHERE code = 'XTS'),
    'migration mode allows changing reference data');

SELECT pg_temp.tap(5, pg_temp.raises($$CREATE TABLE shop.rogue (id int)$$),
    'a table not inheriting hectic.created_at is rejected');

INSERT INTO shop.customer (email, name) VALUES ('test-runner@example.org', 'Test Runner');
SELECT pg_temp.tap(6, created_at IS NOT NULL AND updated_at IS NOT NULL,
    'created_at / updated_at are filled in')
FROM shop.customer WHERE email = 'test-runner@example.org';

UPDATE shop.customer SET updated_at = '2000-01-01', name = 'Renamed Runner'
WHERE email = 'test-runner@example.org';
SELECT pg_temp.tap(7, updated_at > '2000-01-01', 'UPDATE refreshes updated_at')
FROM shop.customer WHERE email = 'test-runner@example.org';

SELECT pg_temp.tap(8,
    shop.format_amount(12950, 'EUR') = '129.50 EUR'
    AND shop.format_amount(15000, 'JPY') = '15000 JPY',
    'format_amount honours minor units');

INSERT INTO shop.invoice (customer_id, currency, amount_minor)
SELECT id, 'CHF', 500 FROM shop.customer WHERE email = 'test-runner@example.org';
SELECT pg_temp.tap(9, coalesce((
        SELECT b.amount_minor FROM shop.open_balance AS b
        JOIN shop.customer AS c ON c.id = b.customer_id
        WHERE c.email = 'test-runner@example.org' AND b.currency = 'CHF'), 0) = 500,
    'open_balance sums unpaid invoices');

SELECT pg_temp.tap(10, hectic.get_secret('PAYMENT_API_KEY') IS NOT NULL,
    'secrets from .env.development are loaded (ENVIRONMENT=development)');
