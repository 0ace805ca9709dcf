-- Amount of an invoice as text in its currency's major unit: 1234 EUR-cents -> '12.34 EUR'.
CREATE OR REPLACE FUNCTION shop.format_amount(amount_minor bigint, currency char(3))
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT CASE c.minor_units
               WHEN 0 THEN amount_minor::text
               ELSE to_char(amount_minor / (10 ^ c.minor_units)::numeric,
                            'FM999999999990.' || repeat('0', c.minor_units))
           END || ' ' || c.code
    FROM shop.currency AS c
    WHERE c.code = currency
$$;

-- What a customer owes, per currency.
CREATE OR REPLACE VIEW shop.open_balance AS
SELECT i.customer_id, i.currency, sum(i.amount_minor) AS amount_minor
FROM shop.invoice AS i
WHERE NOT i.paid
GROUP BY i.customer_id, i.currency;
