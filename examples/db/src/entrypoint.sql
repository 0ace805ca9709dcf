-- Entrypoint of the example project's database source: `database hydrate` runs this file
-- with psql (ON_ERROR_STOP) after the hectic bundle. Every file is included with \ir, so the
-- paths are relative to this file wherever psql is started.
--
-- The schema is the *desired state*: a fresh deploy builds it from here. Migrations in
-- ../migration describe how an existing (production) database gets to the same state, so
-- everything they do is also written here.

\ir schema.sql
\ir tables/currency.sql
\ir tables/customer.sql
\ir tables/invoice.sql
\ir functions.sql

-- `database deploy --mock` / `hydrate --mock` pass -v USE_MOCK=1.
\if :{?USE_MOCK}
\ir mock.sql
\endif
