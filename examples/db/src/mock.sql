-- Only with --mock (USE_MOCK=1): a stand-in for an external payment provider.
CREATE OR REPLACE FUNCTION shop.payment_provider_status(invoice_id bigint)
RETURNS text
LANGUAGE sql
IMMUTABLE
AS $$ SELECT 'settled (mock)'::text $$;
