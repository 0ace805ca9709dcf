-- hectic bundle, step 4 of 4: inheritance rules.
--
-- Parents:
--   hectic.created_at  every user table must inherit it (directly or through another table).
--   hectic.updated_at  optional; inheriting tables get a BEFORE UPDATE FOR EACH ROW trigger
--                      `hectic_set_updated_at` calling hectic.set_updated_at().
--   hectic.immutable   marker; inheriting tables get `hectic_immutable_rows` (BEFORE INSERT OR
--                      UPDATE OR DELETE, FOR EACH ROW: catches changes made through a parent
--                      table too) and `hectic_immutable_truncate` (BEFORE TRUNCATE), both
--                      raising unless current_setting('hectic.migration_mode', true) = 'on'.
--                      Meant as `SET LOCAL hectic.migration_mode = 'on'` inside a migration's
--                      transaction so the permission ends with COMMIT.
--
-- Event triggers (ddl_command_end, need a superuser to install):
--   hectic_enforce_created_at_inheritance  CREATE TABLE not inheriting hectic.created_at
--       raises (with a HINT). CREATE TABLE AS and SELECT INTO cannot declare INHERITS, so
--       they raise as well outside exempt schemas (the HINT shows the CREATE TABLE ...
--       INHERITS + INSERT ... SELECT form). Only creation is checked: ALTER TABLE on a table
--       that predates the bundle keeps working.
--   hectic_sync_inheritance_triggers  after CREATE TABLE and ALTER TABLE (e.g. INHERIT /
--       NO INHERIT added later) the table and its inheritance descendants get exactly the
--       triggers their ancestry asks for: missing ones are created, ours are dropped when the
--       table no longer descends from hectic.updated_at / hectic.immutable.
--
-- Exempt from the created_at rule: schemas hectic, information_schema, pg_*, the schemas in
-- the comma-separated GUC hectic.inheritance_extra_excluded_schemas (e.g. ALTER DATABASE db
-- SET hectic.inheritance_extra_excluded_schemas = 'legacy,etl'), declarative partitions
-- (relispartition), partitioned tables themselves (PostgreSQL forbids them to inherit, so
-- they could never comply), temporary tables and tables created by an extension.
-- Triggers for updated_at / immutable follow inheritance everywhere: inheriting is opt-in.

CREATE TABLE IF NOT EXISTS hectic.created_at (
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE TABLE IF NOT EXISTS hectic.updated_at (
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE TABLE IF NOT EXISTS hectic.immutable ();

CREATE OR REPLACE FUNCTION hectic.set_updated_at()
RETURNS trigger
LANGUAGE plpgsql
AS $hectic_fn$
BEGIN
    NEW.updated_at := pg_catalog.now();
    RETURN NEW;
END
$hectic_fn$;

CREATE OR REPLACE FUNCTION hectic.reject_immutable_dml()
RETURNS trigger
LANGUAGE plpgsql
AS $hectic_fn$
BEGIN
    IF pg_catalog.current_setting('hectic.migration_mode', true) = 'on' THEN
        IF TG_LEVEL = 'STATEMENT' THEN
            RETURN NULL;
        ELSIF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% on %.% is not allowed: the table inherits hectic.immutable',
        TG_OP, pg_catalog.quote_ident(TG_TABLE_SCHEMA), pg_catalog.quote_ident(TG_TABLE_NAME)
        USING HINT = 'change immutable data in a migration: BEGIN; SET LOCAL hectic.migration_mode = ''on''; ...; COMMIT;';
END
$hectic_fn$;

-- Whether rel has `ancestor` among its inheritance ancestors (any depth).
CREATE OR REPLACE FUNCTION hectic.descends_from(rel pg_catalog.regclass, ancestor pg_catalog.regclass)
RETURNS boolean
LANGUAGE sql
STABLE
AS $hectic_fn$
    WITH RECURSIVE up(oid) AS (
        SELECT i.inhparent FROM pg_catalog.pg_inherits AS i WHERE i.inhrelid = rel
        UNION
        SELECT i.inhparent FROM pg_catalog.pg_inherits AS i JOIN up ON i.inhrelid = up.oid
    )
    SELECT EXISTS (SELECT 1 FROM up WHERE up.oid = ancestor)
$hectic_fn$;

-- Whether rel is exempt from the created_at rule (see the header for the list).
CREATE OR REPLACE FUNCTION hectic.inheritance_exempt(rel pg_catalog.regclass)
RETURNS boolean
LANGUAGE sql
STABLE
AS $hectic_fn$
    SELECT c.relpersistence = 't'
        OR c.relispartition
        OR c.relkind = 'p'
        OR n.nspname IN ('hectic', 'information_schema')
        OR n.nspname LIKE 'pg\_%'
        OR n.nspname IN (
            SELECT pg_catalog.btrim(s)
            FROM pg_catalog.regexp_split_to_table(
                COALESCE(
                    pg_catalog.current_setting('hectic.inheritance_extra_excluded_schemas', true), ''),
                ',') AS s
        )
        OR EXISTS (
            SELECT 1 FROM pg_catalog.pg_depend AS d
            WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
              AND d.objid = c.oid AND d.deptype = 'e'
        )
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.oid = rel
$hectic_fn$;

-- Give rel exactly the hectic triggers its ancestry asks for. A trigger counts as present
-- when it has our name, or calls our function with the same timing/events under another
-- name (so a database set up by another bundle build gets no duplicates).
CREATE OR REPLACE FUNCTION hectic.sync_inheritance_triggers(rel pg_catalog.regclass)
RETURNS void
LANGUAGE plpgsql
AS $hectic_fn$
DECLARE
    qualified text;
    t record;
BEGIN
    SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) INTO qualified
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.oid = rel AND c.relkind = 'r';
    IF qualified IS NULL THEN
        RETURN;
    END IF;
    -- tgtype bits: ROW 1, BEFORE 2, INSERT 4, DELETE 8, UPDATE 16, TRUNCATE 32.
    FOR t IN
        SELECT *
        FROM (VALUES
            ('hectic_set_updated_at', 'hectic.updated_at', 'hectic.set_updated_at()', 19,
             'BEFORE UPDATE ON %s FOR EACH ROW'),
            ('hectic_immutable_rows', 'hectic.immutable', 'hectic.reject_immutable_dml()', 31,
             'BEFORE INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW'),
            ('hectic_immutable_truncate', 'hectic.immutable', 'hectic.reject_immutable_dml()', 34,
             'BEFORE TRUNCATE ON %s FOR EACH STATEMENT')
        ) AS v(name, parent, fn, tgtype, spec)
    LOOP
        IF hectic.descends_from(rel, t.parent::pg_catalog.regclass) THEN
            IF NOT EXISTS (
                SELECT 1 FROM pg_catalog.pg_trigger AS tg
                WHERE tg.tgrelid = rel AND NOT tg.tgisinternal
                  AND (tg.tgname = t.name
                       OR (tg.tgfoid = t.fn::pg_catalog.regprocedure AND tg.tgtype = t.tgtype))
            ) THEN
                EXECUTE pg_catalog.format(
                    'CREATE TRIGGER %I ' || pg_catalog.format(t.spec, qualified)
                        || ' EXECUTE FUNCTION ' || t.fn,
                    t.name);
            END IF;
        ELSIF EXISTS (
            SELECT 1 FROM pg_catalog.pg_trigger AS tg
            WHERE tg.tgrelid = rel AND tg.tgname = t.name
              AND tg.tgfoid = t.fn::pg_catalog.regprocedure
        ) THEN
            EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', t.name, qualified);
        END IF;
    END LOOP;
END
$hectic_fn$;

CREATE OR REPLACE FUNCTION hectic.enforce_created_at_inheritance()
RETURNS event_trigger
LANGUAGE plpgsql
AS $hectic_fn$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.objid::pg_catalog.regclass AS rel, c.command_tag, c.object_identity, c.schema_name
        FROM pg_catalog.pg_event_trigger_ddl_commands() AS c
        WHERE c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
          AND c.object_type = 'table'
          AND NOT c.in_extension
          AND c.command_tag IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO')
    LOOP
        CONTINUE WHEN hectic.inheritance_exempt(r.rel)
                   OR hectic.descends_from(r.rel, 'hectic.created_at'::pg_catalog.regclass);
        IF r.command_tag = 'CREATE TABLE' THEN
            RAISE EXCEPTION 'table % does not inherit hectic.created_at', r.object_identity
                USING ERRCODE = 'invalid_table_definition',
                      HINT = pg_catalog.format(
                          'add INHERITS (hectic.created_at) to the CREATE TABLE, or exempt the '
                          'schema: ALTER DATABASE ... SET hectic.inheritance_extra_excluded_schemas = %L',
                          r.schema_name);
        END IF;
        RAISE EXCEPTION '% cannot create table %: it would not inherit hectic.created_at',
            r.command_tag, r.object_identity
            USING ERRCODE = 'invalid_table_definition',
                  HINT = 'create it with CREATE TABLE ... INHERITS (hectic.created_at) and fill it '
                         'with INSERT ... SELECT, or use a temporary table';
    END LOOP;
END
$hectic_fn$;

CREATE OR REPLACE FUNCTION hectic.sync_inheritance_triggers_for_ddl()
RETURNS event_trigger
LANGUAGE plpgsql
AS $hectic_fn$
DECLARE
    r record;
BEGIN
    FOR r IN
        WITH RECURSIVE touched(oid) AS (
            SELECT c.objid
            FROM pg_catalog.pg_event_trigger_ddl_commands() AS c
            WHERE c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
              AND c.object_type = 'table'
              AND NOT c.in_extension
            UNION
            SELECT i.inhrelid FROM pg_catalog.pg_inherits AS i JOIN touched ON i.inhparent = touched.oid
        )
        SELECT touched.oid::pg_catalog.regclass AS rel FROM touched
    LOOP
        PERFORM hectic.sync_inheritance_triggers(r.rel);
    END LOOP;
END
$hectic_fn$;

-- There is no CREATE EVENT TRIGGER IF NOT EXISTS: create when missing, recreate when an
-- existing one points elsewhere, otherwise leave it alone (an admin's DISABLE included).
DO $hectic_event_triggers$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT v.name, v.fn::pg_catalog.regprocedure AS fn, v.tags
        FROM (VALUES
            ('hectic_enforce_created_at_inheritance', 'hectic.enforce_created_at_inheritance()',
             ARRAY['CREATE SCHEMA', 'CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO']),
            ('hectic_sync_inheritance_triggers', 'hectic.sync_inheritance_triggers_for_ddl()',
             ARRAY['ALTER TABLE', 'CREATE SCHEMA', 'CREATE TABLE'])
        ) AS v(name, fn, tags)
    LOOP
        IF EXISTS (
            SELECT 1 FROM pg_catalog.pg_event_trigger AS e
            WHERE e.evtname = t.name
              AND (e.evtevent <> 'ddl_command_end'
                   OR e.evtfoid <> t.fn
                   OR (SELECT pg_catalog.array_agg(x ORDER BY x COLLATE "C") FROM pg_catalog.unnest(e.evttags) AS x)
                      IS DISTINCT FROM
                      (SELECT pg_catalog.array_agg(x ORDER BY x COLLATE "C") FROM pg_catalog.unnest(t.tags) AS x))
        ) THEN
            EXECUTE pg_catalog.format('DROP EVENT TRIGGER %I', t.name);
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger AS e WHERE e.evtname = t.name) THEN
            EXECUTE pg_catalog.format(
                'CREATE EVENT TRIGGER %I ON ddl_command_end WHEN TAG IN (%s) EXECUTE FUNCTION %s',
                t.name,
                (SELECT pg_catalog.string_agg(pg_catalog.quote_literal(x), ', ')
                 FROM pg_catalog.unnest(t.tags) AS x),
                t.fn::text);
        END IF;
    END LOOP;
END
$hectic_event_triggers$;

-- Tables that inherited updated_at / immutable before these event triggers existed.
DO $hectic_backfill$
BEGIN
    PERFORM hectic.sync_inheritance_triggers(down.rel::pg_catalog.regclass)
    FROM (
        WITH RECURSIVE d(rel) AS (
            SELECT i.inhrelid FROM pg_catalog.pg_inherits AS i
            WHERE i.inhparent IN ('hectic.updated_at'::pg_catalog.regclass,
                                  'hectic.immutable'::pg_catalog.regclass)
            UNION
            SELECT i.inhrelid FROM pg_catalog.pg_inherits AS i JOIN d ON i.inhparent = d.rel
        )
        SELECT d.rel FROM d
    ) AS down;
END
$hectic_backfill$;
