-- hectic bundle, step 4 of 4: inheritance rules.
--
-- The same objects as the original tool's bundle (names, signatures, messages), so either
-- bundle applies over the other and both keep working on one database:
--
-- Parents:
--   hectic.created_at  every user table must inherit it.
--   hectic.updated_at  optional; inheriting tables get the BEFORE UPDATE FOR EACH ROW trigger
--                      `hectic_set_updated_at` calling hectic.set_updated_at().
--   hectic.immutable   marker; inheriting tables get `hectic_block_immutable_dml` (BEFORE
--                      INSERT OR UPDATE OR DELETE, FOR EACH ROW: catches changes made through
--                      a parent table too) and `hectic_block_immutable_truncate` (BEFORE
--                      INSERT OR UPDATE OR DELETE OR TRUNCATE, FOR EACH STATEMENT), both
--                      calling hectic.block_immutable_dml(), which raises unless
--                      current_setting('hectic.migration_mode', true) = 'on'. Meant as
--                      `SET LOCAL hectic.migration_mode = 'on'` inside a migration's
--                      transaction, so the permission ends with COMMIT.
--
-- Event triggers (ddl_command_end; installing them needs a superuser):
--   hectic_enforce_created_at_inheritance  CREATE TABLE not inheriting hectic.created_at
--       raises (with a HINT). As in the original, CREATE TABLE AS, SELECT INTO and tables
--       made inside CREATE SCHEMA ... CREATE TABLE are not checked (existing scripts use
--       them). Only creation is checked: ALTER TABLE on a table that predates the bundle
--       keeps working.
--   hectic_attach_updated_at_trigger / hectic_attach_immutable_triggers  after CREATE TABLE
--       and ALTER TABLE (INHERIT / NO INHERIT added later) the table and its inheritance
--       descendants get exactly the triggers their ancestry asks for: missing ones are
--       created, ours are dropped when the table no longer descends from the parent.
--
-- Where db-tool goes further than the original (see docs/bundle.md):
--   * inheriting through another table counts (multi-level inheritance), for the created_at
--     rule and for the triggers;
--   * also exempt from the created_at rule: partitioned tables (PostgreSQL forbids them to
--     inherit, so they could never comply) and tables created by an extension;
--   * triggers follow ALTER TABLE ... [NO] INHERIT, and are attached to tables made inside
--     CREATE SCHEMA ... CREATE TABLE as well.
--
-- Exempt from the created_at rule as in the original: schemas hectic, information_schema,
-- pg_*, the schemas in the comma-separated GUC hectic.inheritance_extra_excluded_schemas
-- (e.g. ALTER DATABASE db SET hectic.inheritance_extra_excluded_schemas = 'legacy,etl'),
-- declarative partitions and temporary tables.

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

CREATE OR REPLACE FUNCTION hectic.block_immutable_dml()
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
    -- The message is the original's word for word: scripts may match it.
    RAISE EXCEPTION 'hectic: table %.% inherits hectic.immutable; % blocked outside migration_mode',
        pg_catalog.quote_ident(TG_TABLE_SCHEMA), pg_catalog.quote_ident(TG_TABLE_NAME), TG_OP
        USING HINT = 'change immutable data in a migration: BEGIN; SET LOCAL hectic.migration_mode = ''on''; ...; COMMIT;';
END
$hectic_fn$;

-- Whether p_schema is exempt from the created_at rule: hectic, information_schema, pg_*, or
-- listed in hectic.inheritance_extra_excluded_schemas.
CREATE OR REPLACE FUNCTION hectic._is_excluded_schema(p_schema text)
RETURNS boolean
LANGUAGE sql
STABLE
AS $hectic_fn$
    SELECT p_schema IN ('hectic', 'information_schema')
        OR p_schema LIKE 'pg\_%'
        OR p_schema IN (
            SELECT pg_catalog.btrim(s)
            FROM pg_catalog.regexp_split_to_table(
                COALESCE(
                    pg_catalog.current_setting('hectic.inheritance_extra_excluded_schemas', true), ''),
                ',') AS s
        )
$hectic_fn$;

-- Whether table p_oid has p_parent among its inheritance ancestors, at any depth (the
-- original looks at direct parents only).
CREATE OR REPLACE FUNCTION hectic._table_inherits(p_oid oid, p_parent pg_catalog.regclass)
RETURNS boolean
LANGUAGE sql
STABLE
AS $hectic_fn$
    WITH RECURSIVE up(oid) AS (
        SELECT i.inhparent FROM pg_catalog.pg_inherits AS i WHERE i.inhrelid = p_oid
        UNION
        SELECT i.inhparent FROM pg_catalog.pg_inherits AS i JOIN up ON i.inhrelid = up.oid
    )
    SELECT EXISTS (SELECT 1 FROM up WHERE up.oid = p_parent)
$hectic_fn$;

-- Give table p_rel exactly the hectic triggers that inheriting p_parent (hectic.updated_at or
-- hectic.immutable) asks for. A trigger counts as present when it has our name, or calls our
-- function with the same timing/events under another name (no duplicates on a database set
-- up by another bundle build).
CREATE OR REPLACE FUNCTION hectic._sync_inheritance_triggers(p_rel pg_catalog.regclass,
                                                             p_parent pg_catalog.regclass)
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
    WHERE c.oid = p_rel AND c.relkind = 'r';
    IF qualified IS NULL THEN
        RETURN;
    END IF;
    -- tgtype bits: ROW 1, BEFORE 2, INSERT 4, DELETE 8, UPDATE 16, TRUNCATE 32.
    FOR t IN
        SELECT *
        FROM (VALUES
            ('hectic_set_updated_at', 'hectic.updated_at', 'hectic.set_updated_at()', 19,
             'BEFORE UPDATE ON %s FOR EACH ROW'),
            ('hectic_block_immutable_dml', 'hectic.immutable', 'hectic.block_immutable_dml()', 31,
             'BEFORE INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW'),
            ('hectic_block_immutable_truncate', 'hectic.immutable', 'hectic.block_immutable_dml()',
             62, 'BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s FOR EACH STATEMENT')
        ) AS v(name, parent, fn, tgtype, spec)
        WHERE v.parent::pg_catalog.regclass = p_parent
    LOOP
        IF hectic._table_inherits(p_rel, p_parent) THEN
            IF NOT EXISTS (
                SELECT 1 FROM pg_catalog.pg_trigger AS tg
                WHERE tg.tgrelid = p_rel AND NOT tg.tgisinternal
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
            WHERE tg.tgrelid = p_rel AND tg.tgname = t.name
              AND tg.tgfoid = t.fn::pg_catalog.regprocedure
        ) THEN
            EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', t.name, qualified);
        END IF;
    END LOOP;
END
$hectic_fn$;

-- The tables a DDL command created or altered, and their inheritance descendants.
CREATE OR REPLACE FUNCTION hectic._ddl_touched_tables()
RETURNS SETOF pg_catalog.regclass
LANGUAGE sql
AS $hectic_fn$
    WITH RECURSIVE touched(oid) AS (
        SELECT c.objid
        FROM pg_catalog.pg_event_trigger_ddl_commands() AS c
        WHERE c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
          AND c.object_type = 'table'
          AND NOT c.in_extension
          AND c.command_tag IN ('CREATE TABLE', 'ALTER TABLE')
        UNION
        SELECT i.inhrelid FROM pg_catalog.pg_inherits AS i JOIN touched ON i.inhparent = touched.oid
    )
    SELECT touched.oid::pg_catalog.regclass FROM touched
$hectic_fn$;

CREATE OR REPLACE FUNCTION hectic.enforce_created_at_inheritance()
RETURNS event_trigger
LANGUAGE plpgsql
AS $hectic_fn$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT cl.oid, cl.relname, n.nspname
        FROM pg_catalog.pg_event_trigger_ddl_commands() AS c
        JOIN pg_catalog.pg_class AS cl ON cl.oid = c.objid
        JOIN pg_catalog.pg_namespace AS n ON n.oid = cl.relnamespace
        WHERE c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
          AND c.command_tag = 'CREATE TABLE'
          AND c.object_type = 'table'
          AND NOT c.in_extension
          AND cl.relpersistence <> 't'
          AND NOT cl.relispartition
          AND cl.relkind <> 'p'
    LOOP
        CONTINUE WHEN hectic._is_excluded_schema(r.nspname)
                   OR hectic._table_inherits(r.oid, 'hectic.created_at'::pg_catalog.regclass);
        -- The message and SQLSTATE (P0001) are the original's: scripts may match them.
        RAISE EXCEPTION 'hectic: table %.% must INHERITS (hectic.created_at)',
            pg_catalog.quote_ident(r.nspname), pg_catalog.quote_ident(r.relname)
            USING HINT = pg_catalog.format(
                'add INHERITS (hectic.created_at) to the CREATE TABLE, or exempt the '
                'schema: ALTER DATABASE ... SET hectic.inheritance_extra_excluded_schemas = %L',
                r.nspname);
    END LOOP;
END
$hectic_fn$;

CREATE OR REPLACE FUNCTION hectic.attach_updated_at_trigger()
RETURNS event_trigger
LANGUAGE plpgsql
AS $hectic_fn$
BEGIN
    PERFORM hectic._sync_inheritance_triggers(t, 'hectic.updated_at'::pg_catalog.regclass)
    FROM hectic._ddl_touched_tables() AS t;
END
$hectic_fn$;

CREATE OR REPLACE FUNCTION hectic.attach_immutable_triggers()
RETURNS event_trigger
LANGUAGE plpgsql
AS $hectic_fn$
BEGIN
    PERFORM hectic._sync_inheritance_triggers(t, 'hectic.immutable'::pg_catalog.regclass)
    FROM hectic._ddl_touched_tables() AS t;
END
$hectic_fn$;

-- Leftovers of an earlier db-tool build, which had other names for the same machinery.
DO $hectic_old_names$
DECLARE
    r record;
    fn text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger
               WHERE evtname = 'hectic_sync_inheritance_triggers') THEN
        DROP EVENT TRIGGER hectic_sync_inheritance_triggers;
    END IF;
    IF pg_catalog.to_regprocedure('hectic.reject_immutable_dml()') IS NOT NULL THEN
        FOR r IN
            SELECT tg.tgname, tg.tgrelid::pg_catalog.regclass AS rel
            FROM pg_catalog.pg_trigger AS tg
            WHERE tg.tgfoid = 'hectic.reject_immutable_dml()'::pg_catalog.regprocedure
        LOOP
            EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', r.tgname, r.rel);
        END LOOP;
    END IF;
    FOREACH fn IN ARRAY ARRAY[
        'hectic.reject_immutable_dml()',
        'hectic.sync_inheritance_triggers_for_ddl()',
        'hectic.sync_inheritance_triggers(pg_catalog.regclass)',
        'hectic.inheritance_exempt(pg_catalog.regclass)',
        'hectic.descends_from(pg_catalog.regclass, pg_catalog.regclass)']
    LOOP
        IF pg_catalog.to_regprocedure(fn) IS NOT NULL THEN
            EXECUTE 'DROP FUNCTION ' || pg_catalog.to_regprocedure(fn)::text;
        END IF;
    END LOOP;
END
$hectic_old_names$;

-- There is no CREATE EVENT TRIGGER IF NOT EXISTS: create when missing, recreate when an
-- existing one points elsewhere or listens to other tags (e.g. the original's, which listen
-- to CREATE TABLE only), otherwise leave it alone (an admin's DISABLE included).
DO $hectic_event_triggers$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT v.name, v.fn::pg_catalog.regprocedure AS fn, v.tags
        FROM (VALUES
            ('hectic_enforce_created_at_inheritance', 'hectic.enforce_created_at_inheritance()',
             ARRAY['CREATE TABLE']),
            ('hectic_attach_updated_at_trigger', 'hectic.attach_updated_at_trigger()',
             ARRAY['ALTER TABLE', 'CREATE SCHEMA', 'CREATE TABLE']),
            ('hectic_attach_immutable_triggers', 'hectic.attach_immutable_triggers()',
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

-- Tables that inherited updated_at / immutable before these event triggers existed (or
-- while they were disabled).
DO $hectic_backfill$
BEGIN
    PERFORM hectic._sync_inheritance_triggers(d.rel::pg_catalog.regclass, p.parent)
    FROM (VALUES ('hectic.updated_at'::pg_catalog.regclass),
                 ('hectic.immutable'::pg_catalog.regclass)) AS p(parent),
    LATERAL (
        WITH RECURSIVE down(rel) AS (
            SELECT i.inhrelid FROM pg_catalog.pg_inherits AS i WHERE i.inhparent = p.parent
            UNION
            SELECT i.inhrelid FROM pg_catalog.pg_inherits AS i JOIN down ON i.inhparent = down.rel
        )
        SELECT down.rel FROM down
    ) AS d;
END
$hectic_backfill$;
