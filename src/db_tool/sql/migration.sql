-- hectic bundle, step 3 of 4: migration history, read and written by `migrator`.
--
-- One row per applied migration: its directory/file name (YYYYMMDDHHMMSS-name) and the
-- sha256 of its up script. Same objects as the original tool's bundle:
--   domain   hectic.migration_name  text, '^[0-9]{14}-.*'
--   domain   hectic.sha256          char(64), lower-case hex
--   function hectic.sha256_lower()  BEFORE INSERT OR UPDATE row trigger: lower-cases hash
--   table    hectic.migration (id serial, name, hash, applied_at), trigger hectic_t_sha256_lower
-- One difference: the hash is NOT unique, because two migrations with identical contents are
-- legitimate (e.g. a re-run data fix); the original refuses to record the second one.

DO $hectic_migration_domains$
BEGIN
    IF pg_catalog.to_regtype('hectic.migration_name') IS NULL THEN
        CREATE DOMAIN hectic.migration_name AS text
            CONSTRAINT migration_name_check CHECK (VALUE ~ '^[0-9]{14}-.*');
    END IF;
    IF pg_catalog.to_regtype('hectic.sha256') IS NULL THEN
        CREATE DOMAIN hectic.sha256 AS char(64)
            CONSTRAINT sha256_check CHECK (VALUE ~ '^[0-9a-f]{64}$');
    END IF;
END
$hectic_migration_domains$;

CREATE OR REPLACE FUNCTION hectic.sha256_lower()
RETURNS trigger
LANGUAGE plpgsql
AS $hectic_fn$
BEGIN
    NEW.hash := pg_catalog.lower(NEW.hash);
    RETURN NEW;
END
$hectic_fn$;

CREATE TABLE IF NOT EXISTS hectic.migration (
    id         serial                PRIMARY KEY,
    name       hectic.migration_name NOT NULL,
    hash       hectic.sha256         NOT NULL,
    applied_at timestamptz           NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT migration_name_key UNIQUE (name)
);

-- An earlier db-tool build used plain text columns with table CHECK constraints: move them
-- onto the domains (the values already satisfy the same rules) and drop the old checks.
DO $hectic_migration_columns$
BEGIN
    IF (SELECT atttypid FROM pg_catalog.pg_attribute
        WHERE attrelid = 'hectic.migration'::pg_catalog.regclass AND attname = 'name')
       <> 'hectic.migration_name'::pg_catalog.regtype THEN
        ALTER TABLE hectic.migration DROP CONSTRAINT IF EXISTS migration_name_check;
        ALTER TABLE hectic.migration ALTER COLUMN name TYPE hectic.migration_name;
    END IF;
    IF (SELECT atttypid FROM pg_catalog.pg_attribute
        WHERE attrelid = 'hectic.migration'::pg_catalog.regclass AND attname = 'hash')
       <> 'hectic.sha256'::pg_catalog.regtype THEN
        ALTER TABLE hectic.migration DROP CONSTRAINT IF EXISTS migration_hash_check;
        ALTER TABLE hectic.migration ALTER COLUMN hash TYPE hectic.sha256;
    END IF;
END
$hectic_migration_columns$;

DO $hectic_migration_trigger$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_trigger
        WHERE tgrelid = 'hectic.migration'::pg_catalog.regclass
          AND tgname = 'hectic_t_sha256_lower' AND NOT tgisinternal
    ) THEN
        CREATE TRIGGER hectic_t_sha256_lower
            BEFORE INSERT OR UPDATE ON hectic.migration
            FOR EACH ROW EXECUTE FUNCTION hectic.sha256_lower();
    END IF;
END
$hectic_migration_trigger$;

-- The original declares hash UNIQUE, which breaks `migrate` for two migrations with identical
-- contents: drop that constraint (or a unique index on hash alone). Found by shape, not by
-- name; does nothing once it is gone. The original's bundle does not bring it back
-- (CREATE TABLE IF NOT EXISTS).
DO $hectic_migration_hash$
DECLARE
    r record;
    hash_col pg_catalog.int2 := (
        SELECT a.attnum FROM pg_catalog.pg_attribute AS a
        WHERE a.attrelid = 'hectic.migration'::pg_catalog.regclass AND a.attname = 'hash');
BEGIN
    FOR r IN
        SELECT c.conname
        FROM pg_catalog.pg_constraint AS c
        WHERE c.conrelid = 'hectic.migration'::pg_catalog.regclass
          AND c.contype = 'u'
          AND c.conkey = ARRAY[hash_col]
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE hectic.migration DROP CONSTRAINT %I', r.conname);
    END LOOP;
    FOR r IN
        SELECT ic.relname
        FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS ic ON ic.oid = i.indexrelid
        WHERE i.indrelid = 'hectic.migration'::pg_catalog.regclass
          AND i.indisunique
          AND i.indnkeyatts = 1
          AND i.indexprs IS NULL
          AND i.indkey[0] = hash_col
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint AS c WHERE c.conindid = i.indexrelid)
    LOOP
        EXECUTE pg_catalog.format('DROP INDEX hectic.%I', r.relname);
    END LOOP;
END
$hectic_migration_hash$;
