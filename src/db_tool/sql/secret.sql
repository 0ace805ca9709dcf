-- hectic bundle, step 2 of 4: secrets.
--
-- hectic.secret holds key/value pairs loaded from a dotenv file. Values are stored as given
-- (the bundle does not encrypt them); protection is by privileges: PUBLIC can neither read the
-- table nor call the functions. Grant explicitly to roles that need a secret.
--
-- Same objects as the original tool's bundle (so either bundle applies over the other):
--   table    hectic.secret (id serial PRIMARY KEY, key text UNIQUE NOT NULL, value text NOT NULL)
--   function hectic.load_secrets_from_env(env_content text) RETURNS void
--   function hectic.get_secret(k text) RETURNS text
--
-- Load from psql WITHOUT pasting the content into SQL text, e.g.
--     psql -v dotenv="$(cat .env)" -c "SELECT hectic.load_secrets_from_env(:'dotenv')"
-- (db_tool sends it as COPY data on stdin instead, which keeps secrets out of argv.)

CREATE TABLE IF NOT EXISTS hectic.secret (
    id    serial PRIMARY KEY,
    key   text   NOT NULL,
    value text   NOT NULL,
    CONSTRAINT secret_key_key UNIQUE (key)
);

-- An earlier db-tool build made `key` the primary key and had no id column: give such a
-- table the original's shape (rows kept, numbered as stored).
DO $hectic_secret_shape$
DECLARE
    pk text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                   WHERE attrelid = 'hectic.secret'::pg_catalog.regclass
                     AND attname = 'id' AND NOT attisdropped) THEN
        SELECT conname INTO pk FROM pg_catalog.pg_constraint
        WHERE conrelid = 'hectic.secret'::pg_catalog.regclass AND contype = 'p';
        IF pk IS NOT NULL THEN
            EXECUTE pg_catalog.format('ALTER TABLE hectic.secret DROP CONSTRAINT %I', pk);
        END IF;
        ALTER TABLE hectic.secret ADD COLUMN id serial;
        ALTER TABLE hectic.secret ADD PRIMARY KEY (id);
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                       WHERE conrelid = 'hectic.secret'::pg_catalog.regclass AND contype = 'u') THEN
            ALTER TABLE hectic.secret ADD CONSTRAINT secret_key_key UNIQUE (key);
        END IF;
    END IF;
END
$hectic_secret_shape$;

REVOKE ALL ON TABLE hectic.secret FROM PUBLIC;

-- CREATE OR REPLACE cannot change a return type or a parameter name: an earlier db-tool build
-- declared these functions as load_secrets_from_env(content) RETURNS integer and
-- get_secret(key). Drop them only in that case, so that reruns change nothing.
DO $hectic_secret_functions$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_catalog.pg_proc
        WHERE oid = pg_catalog.to_regprocedure('hectic.load_secrets_from_env(text)')
          AND (prorettype <> 'pg_catalog.void'::pg_catalog.regtype
               OR proargnames IS DISTINCT FROM ARRAY['env_content'])
    ) THEN
        DROP FUNCTION hectic.load_secrets_from_env(text);
    END IF;
    IF EXISTS (
        SELECT 1 FROM pg_catalog.pg_proc
        WHERE oid = pg_catalog.to_regprocedure('hectic.get_secret(text)')
          AND (prorettype <> 'pg_catalog.text'::pg_catalog.regtype
               OR proargnames IS DISTINCT FROM ARRAY['k'])
    ) THEN
        DROP FUNCTION hectic.get_secret(text);
    END IF;
END
$hectic_secret_functions$;

-- Replaces every row with the pairs in `env_content` (dotenv format). Per line: blank lines
-- and lines starting with # (after leading blanks) are skipped; the line is split at the
-- FIRST '='; key and value are trimmed (spaces, tabs, CR, so CRLF files work); one pair of
-- matching outer quotes ('' or "") is stripped from the value; nothing else is interpreted
-- (no escapes, no inline comments). A later line wins over an earlier one with the same key.
-- A line without '=' or with an empty key is an error naming the line number only, so the
-- error never echoes a secret. (`export KEY=v` lines and a UTF-8 BOM are handled by db-tool
-- before it calls this function, as the original's function does not handle them either.)
CREATE OR REPLACE FUNCTION hectic.load_secrets_from_env(env_content text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
AS $hectic_fn$
DECLARE
    line   text;
    lineno bigint;
    eq     integer;
    name   text;
    val    text;
BEGIN
    IF env_content IS NULL THEN
        RAISE EXCEPTION 'hectic.load_secrets_from_env: content is NULL';
    END IF;
    DELETE FROM hectic.secret;
    FOR line, lineno IN
        SELECT l, n FROM pg_catalog.regexp_split_to_table(env_content, E'\n') WITH ORDINALITY AS t(l, n)
    LOOP
        line := pg_catalog.btrim(line, E' \t\r');
        CONTINUE WHEN line = '' OR pg_catalog.left(line, 1) = '#';
        eq := pg_catalog.strpos(line, '=');
        IF eq = 0 THEN
            RAISE EXCEPTION 'hectic.load_secrets_from_env: line % has no "="', lineno
                USING HINT = 'dotenv lines are KEY=VALUE; comments start with #';
        END IF;
        name := pg_catalog.btrim(pg_catalog.left(line, eq - 1), E' \t\r');
        val := pg_catalog.btrim(pg_catalog.substr(line, eq + 1), E' \t\r');
        IF name = '' THEN
            RAISE EXCEPTION 'hectic.load_secrets_from_env: line % has an empty key', lineno;
        END IF;
        IF pg_catalog.length(val) >= 2
           AND pg_catalog.left(val, 1) IN ('"', '''')
           AND pg_catalog.right(val, 1) = pg_catalog.left(val, 1) THEN
            val := pg_catalog.substr(val, 2, pg_catalog.length(val) - 2);
        END IF;
        INSERT INTO hectic.secret (key, value) VALUES (name, val)
            ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
    END LOOP;
END
$hectic_fn$;

-- The value for key `k`, or NULL when no such secret is loaded (so callers can COALESCE).
CREATE OR REPLACE FUNCTION hectic.get_secret(k text)
RETURNS text
LANGUAGE sql
STABLE
STRICT
AS $hectic_fn$
    SELECT s.value FROM hectic.secret AS s WHERE s.key = get_secret.k
$hectic_fn$;

REVOKE ALL ON FUNCTION hectic.load_secrets_from_env(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION hectic.get_secret(text) FROM PUBLIC;
