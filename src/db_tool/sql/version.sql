-- hectic bundle, step 1 of 4: version.
--
-- A TEMPLATE: @HECTIC_VERSION@ is replaced by db_tool.bundle.VERSION when rendered
-- (`database bundle sql`, `database bundle path`, db_tool.bundle.render()). Do not \i this
-- file directly; the DO block below refuses an unrendered placeholder.
--
-- Runs first so that a database holding another bundle version fails before any other
-- statement of the bundle touches it. Idempotent: the second run changes nothing.

-- Serialise concurrent bundle runs (several `migrator migrate` at once on a fresh database
-- would otherwise race on CREATE SCHEMA IF NOT EXISTS). Released at transaction end; the
-- bundle is meant to run as one transaction (psql --single-transaction).
DO $hectic_lock$
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('hectic.bundle', 0));
END
$hectic_lock$;

CREATE SCHEMA IF NOT EXISTS hectic;

COMMENT ON SCHEMA hectic IS 'hectic bundle: version, secrets, migration history, inheritance rules';

CREATE TABLE IF NOT EXISTS hectic.version (
    name         text        PRIMARY KEY,
    version      text        NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

DO $hectic_version$
DECLARE
    want constant text := '@HECTIC_VERSION@';
    have text;
BEGIN
    IF want !~ '^[0-9]+\.[0-9]+\.[0-9]+' THEN
        RAISE EXCEPTION 'hectic version.sql is an unrendered template (version %)', want
            USING HINT = 'use the rendered bundle: `database bundle sql` or `database bundle path`';
    END IF;
    SELECT v.version INTO have FROM hectic.version AS v WHERE v.name = 'hectic';
    IF NOT FOUND THEN
        INSERT INTO hectic.version (name, version) VALUES ('hectic', want);
    ELSIF have IS DISTINCT FROM want THEN
        RAISE EXCEPTION 'hectic schema version mismatch: database has %, code expects %', have, want
            USING HINT = 'use the db-tool release that installed this database, or recreate the database';
    END IF;
END
$hectic_version$;

-- An earlier db-tool build allowed only the row 'hectic'; the original allows any name.
DO $hectic_version_name$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
               WHERE conrelid = 'hectic.version'::pg_catalog.regclass
                 AND conname = 'version_name_check') THEN
        ALTER TABLE hectic.version DROP CONSTRAINT version_name_check;
    END IF;
END
$hectic_version_name$;
