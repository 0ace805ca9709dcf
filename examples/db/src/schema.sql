CREATE SCHEMA IF NOT EXISTS shop;
COMMENT ON SCHEMA shop IS 'db-tool example: customers, invoices, currencies';
