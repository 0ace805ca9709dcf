-- hectic bundle, step 2 of 4: secrets.
--
-- hectic.secret holds key/value pairs loaded from a dotenv file. Values are stored as given
-- (the bundle does not encrypt them); protection is by privileges: PUBLIC can neither read the
-- table nor call the functions. Grant explicitly to roles that need a secret.
--
-- Load from psql WITHOUT pasting the content into SQL text, e.g.
--     psql -v dotenv="$(cat .env)" -c "SELECT hectic.load_secrets_from_env(:'dotenv')"
-- (db_tool sends it as COPY data on stdin instead, which keeps secrets out of argv.)

CREATE TABLE IF NOT EXISTS hectic.secret (
    key   text PRIMARY KEY,
    value text NOT NULL
);

REVOKE ALL ON TABLE hectic.secret FROM PUBLIC;

-- An older bundle may have declared the loader with another return type, which
-- CREATE OR REPLACE cannot change; drop it only in that case so reruns change nothing.
DO $hectic_secret_loader$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_catalog.pg_proc
        WHERE oid = pg_catalog.to_regprocedure('hectic.load_secrets_from_env(text)')
          AND prorettype <> 'pg_catalog.int4'::pg_catalog.regtype
    ) THEN
        DROP FUNCTION hectic.load_secrets_from_env(text);
    END IF;
END
$hectic_secret_loader$;

-- Replaces every row with the pairs in `content` (dotenv format) and returns how many keys it
-- holds now. Per line: blank lines and lines starting with # (after leading blanks) are
-- skipped; the line is split at the FIRST '='; key and value are trimmed (spaces, tabs, CR);
-- one pair of matching outer quotes ('' or "") is stripped from the value; nothing else is
-- interpreted (no escapes, no inline comments, no `export`). A later line wins over an
-- earlier one with the same key. A line without '=' or with an empty key is an error naming
-- the line number only, so the error never echoes a secret.
CREATE OR REPLACE FUNCTION hectic.load_secrets_from_env(content text)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
AS $hectic_fn$
DECLARE
    line   text;
    lineno bigint;
    eq     integer;
    k      text;
    v      text;
    loaded integer;
BEGIN
    IF content IS NULL THEN
        RAISE EXCEPTION 'hectic.load_secrets_from_env: content is NULL';
    END IF;
    DELETE FROM hectic.secret;
    FOR line, lineno IN
        SELECT l, n FROM pg_catalog.regexp_split_to_table(content, E'\n') WITH ORDINALITY AS t(l, n)
    LOOP
        line := pg_catalog.btrim(line, E' \t\r');
        CONTINUE WHEN line = '' OR pg_catalog.left(line, 1) = '#';
        eq := pg_catalog.strpos(line, '=');
        IF eq = 0 THEN
            RAISE EXCEPTION 'hectic.load_secrets_from_env: line % has no "="', lineno
                USING HINT = 'dotenv lines are KEY=VALUE; comments start with #';
        END IF;
        k := pg_catalog.btrim(pg_catalog.left(line, eq - 1), E' \t\r');
        v := pg_catalog.btrim(pg_catalog.substr(line, eq + 1), E' \t\r');
        IF k = '' THEN
            RAISE EXCEPTION 'hectic.load_secrets_from_env: line % has an empty key', lineno;
        END IF;
        IF pg_catalog.length(v) >= 2
           AND pg_catalog.left(v, 1) IN ('"', '''')
           AND pg_catalog.right(v, 1) = pg_catalog.left(v, 1) THEN
            v := pg_catalog.substr(v, 2, pg_catalog.length(v) - 2);
        END IF;
        INSERT INTO hectic.secret (key, value) VALUES (k, v)
            ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
    END LOOP;
    SELECT pg_catalog.count(*) INTO loaded FROM hectic.secret;
    RETURN loaded;
END
$hectic_fn$;

-- The value for `key`, or NULL when no such secret is loaded (so callers can COALESCE).
CREATE OR REPLACE FUNCTION hectic.get_secret(key text)
RETURNS text
LANGUAGE sql
STABLE
STRICT
AS $hectic_fn$
    SELECT s.value FROM hectic.secret AS s WHERE s.key = get_secret.key
$hectic_fn$;

REVOKE ALL ON FUNCTION hectic.load_secrets_from_env(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION hectic.get_secret(text) FROM PUBLIC;
