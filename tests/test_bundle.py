"""The hectic SQL bundle against a real cluster: version, secrets, migration, inheritance."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

from db_tool import bundle
from db_tool.errors import Error
from tests.helpers import base_env, run_cmd, script

if TYPE_CHECKING:
    from tests.conftest import PG


@pytest.fixture
def hectic_url(db_url: str) -> str:
    bundle.apply(db_url)
    return db_url


def psql_fails(pg: PG, sql: str, url: str) -> str:
    """Run sql expecting failure; return psql's stderr."""
    with pytest.raises(AssertionError) as info:
        pg.psql(sql, url)
    return str(info.value)


def psql_script(pg: PG, url: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [pg.install.tool("psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", "-"],
        input=script, capture_output=True, text=True, check=False,
    )


# ---------------------------------------------------------------- files and rendering


def test_files_are_ordered_and_shipped() -> None:
    paths = bundle.files()
    assert [p.name for p in paths] == ["version.sql", "secret.sql", "migration.sql",
                                       "inheritance.sql"]
    assert all(p.is_file() for p in paths)
    assert bundle.PLACEHOLDER in paths[0].read_text()


def test_render_fills_in_the_one_version_constant() -> None:
    sql = bundle.render()
    assert bundle.PLACEHOLDER not in sql
    assert f"want constant text := '{bundle.VERSION}';" in sql
    assert bundle.VERSION == "0.1.0"
    # In order, each file once.
    positions = [sql.index(f": {p.name} ====") for p in bundle.files()]
    assert positions == sorted(positions)


def test_materialized_paths_are_usable_with_include(
    pg: PG, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    paths = bundle.materialized_paths()
    assert paths[0] == tmp_path / "cache" / "db-tool" / "bundle" / bundle.VERSION / "version.sql"
    assert paths[1:] == bundle.files()[1:]
    assert bundle.PLACEHOLDER not in paths[0].read_text()
    stamp = paths[0].stat().st_mtime_ns
    assert bundle.materialized_paths() == paths
    assert paths[0].stat().st_mtime_ns == stamp, "an up-to-date cache file is not rewritten"

    # An init script the way external consumers write one.
    script = "".join(f"\\i '{p}'\n" for p in paths)
    done = psql_script(pg, db_url, script)
    assert done.returncode == 0, done.stderr
    assert pg.psql("SELECT name, version FROM hectic.version", db_url) == f"hectic|{bundle.VERSION}"


def test_materialized_paths_fall_back_when_the_cache_is_unwritable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    paths = bundle.materialized_paths({"XDG_CACHE_HOME": str(blocker / "cache"),
                                       "HOME": str(tmp_path / "no-home"), "TMPDIR": str(tmp)})
    assert paths[0].is_relative_to(tmp / f"db-tool-cache-{os.geteuid()}")
    assert paths[0].is_file()


def test_materialized_paths_need_some_writable_cache(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    (tmp_path / f"db-tool-cache-{os.geteuid()}").write_text("in the way")
    with pytest.raises(Error, match="set XDG_CACHE_HOME to a writable directory"):
        bundle.materialized_paths({"XDG_CACHE_HOME": str(blocker / "cache"),
                                   "TMPDIR": str(tmp_path)})


def test_unrendered_version_file_is_refused(pg: PG, db_url: str) -> None:
    done = psql_script(pg, db_url, f"\\i '{bundle.files()[0]}'\n")
    assert done.returncode != 0
    assert "unrendered template" in done.stderr


# ---------------------------------------------------------------- version


def test_apply_records_the_version(pg: PG, hectic_url: str) -> None:
    row = pg.psql("SELECT name, version, installed_at IS NOT NULL FROM hectic.version",
                  hectic_url)
    assert row == f"hectic|{bundle.VERSION}|t"


def test_version_mismatch_stops_before_anything_else(pg: PG, hectic_url: str) -> None:
    pg.psql("UPDATE hectic.version SET version = '0.0.9'; DROP FUNCTION hectic.get_secret(text)",
            hectic_url)
    with pytest.raises(Error) as info:
        bundle.apply(hectic_url)
    assert info.value.message == (
        "applying the hectic bundle failed: "
        f"hectic schema version mismatch: database has 0.0.9, code expects {bundle.VERSION}"
    )
    assert "HINT:" in info.value.detail
    # Nothing of the later files ran (get_secret would have been recreated).
    assert pg.psql("SELECT to_regprocedure('hectic.get_secret(text)') IS NULL", hectic_url) == "t"
    assert pg.psql("SELECT version FROM hectic.version", hectic_url) == "0.0.9"


def test_apply_is_all_or_nothing(pg: PG, db_url: str) -> None:
    # A conflicting object in the last file makes the bundle fail ...
    pg.psql("CREATE SCHEMA hectic; "
            "CREATE FUNCTION hectic.set_updated_at() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            db_url)
    with pytest.raises(Error) as info:
        bundle.apply(db_url)
    assert "cannot change return type" in info.value.message
    # ... and leaves nothing of the earlier ones behind.
    assert pg.psql("SELECT to_regclass('hectic.version') IS NULL AND "
                   "to_regclass('hectic.secret') IS NULL AND "
                   "NOT EXISTS (SELECT 1 FROM pg_event_trigger)", db_url) == "t"


def test_concurrent_applies_on_a_fresh_database(pg: PG, db_url: str) -> None:
    errors: list[BaseException] = []

    def apply() -> None:
        try:
            bundle.apply(db_url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=apply) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert pg.psql("SELECT count(*) FROM hectic.version", db_url) == "1"


# ---------------------------------------------------------------- idempotency

SNAPSHOT = r"""
SELECT 'class', concat_ws(':', c.relname, c.relkind, c.oid, c.relacl)
  FROM pg_class c WHERE c.relnamespace = 'hectic'::regnamespace
UNION ALL
SELECT 'column', concat_ws(':', attrelid::regclass, attname, format_type(atttypid, atttypmod),
                           attnotnull, pg_get_expr(d.adbin, d.adrelid))
  FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  JOIN pg_class c ON c.oid = a.attrelid
  WHERE c.relnamespace = 'hectic'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'constraint', concat_ws(':', conrelid::regclass, conname, pg_get_constraintdef(oid))
  FROM pg_constraint WHERE connamespace = 'hectic'::regnamespace
UNION ALL
SELECT 'function', concat_ws(':', p.oid, p.oid::regprocedure, md5(pg_get_functiondef(p.oid)),
                             p.proacl)
  FROM pg_proc p WHERE p.pronamespace = 'hectic'::regnamespace
UNION ALL
SELECT 'trigger', concat_ws(':', oid, tgrelid::regclass, tgname, pg_get_triggerdef(oid))
  FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'event trigger', concat_ws(':', oid, evtname, evtevent, evtfoid::regproc, evtenabled,
                                  evttags)
  FROM pg_event_trigger
UNION ALL
SELECT 'version', concat_ws(':', name, version, installed_at) FROM hectic.version
UNION ALL
SELECT 'schema', concat_ws(':', oid, nspacl) FROM pg_namespace WHERE nspname = 'hectic'
ORDER BY 1, 2
"""


def test_applying_twice_changes_nothing(pg: PG, hectic_url: str) -> None:
    pg.psql("CREATE TABLE t_upd (id int) INHERITS (hectic.created_at, hectic.updated_at); "
            "CREATE TABLE t_imm (id int) INHERITS (hectic.created_at, hectic.immutable)",
            hectic_url)
    before = pg.psql(SNAPSHOT, hectic_url)
    bundle.apply(hectic_url)
    bundle.apply(hectic_url)
    assert pg.psql(SNAPSHOT, hectic_url) == before
    assert triggers_of(pg, hectic_url) == [
        "t_imm hectic_block_immutable_dml", "t_imm hectic_block_immutable_truncate",
        "t_upd hectic_set_updated_at"]


def test_event_trigger_of_another_build_is_replaced(pg: PG, db_url: str) -> None:
    pg.psql("CREATE SCHEMA hectic; "
            "CREATE FUNCTION hectic.old_check() RETURNS event_trigger LANGUAGE plpgsql "
            "AS 'BEGIN END'; "
            "CREATE EVENT TRIGGER hectic_enforce_created_at_inheritance ON ddl_command_end "
            "WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION hectic.old_check()", db_url)
    bundle.apply(db_url)
    row = pg.psql("SELECT evtfoid::regproc, evttags FROM pg_event_trigger "
                  "WHERE evtname = 'hectic_enforce_created_at_inheritance'", db_url)
    assert row == 'hectic.enforce_created_at_inheritance|{"CREATE TABLE"}'


# ---------------------------------------------------------------- secrets

NASTY = {
    "dollar_quotes": "a$$b$$c",
    "ps_env_tag": "x$ps_env$y$ps_env$;DROP TABLE hectic.secret;",
    "single_quotes": "it's 'quoted' inside",
    "double_quotes": 'say "hi" there',
    "backslashes": "C:\\dir\\n\\t\\\\ and \\x41 \\N \\.",
    "semicolons": "a;b;;c; SELECT 1;",
    "non_ascii": "pässwörd — 日本語 🔑 ü",
    "psql_variable": ":'dotenv' :dotenv :\"x\" \\gexec",
    "comment_markers": "-- not a comment /* nor this */ # nor this",
    "equals": "a=b==c",
    "tab_inside": "left\tright",
    "percent": "%s %I %L %%",
}


@pytest.fixture(scope="module")
def secrets_url(pg: PG) -> Iterator[str]:
    name = "t_secrets_" + uuid.uuid4().hex[:8]
    pg.psql(f'CREATE DATABASE "{name}"')
    url = pg.url_for(name)
    bundle.apply(url)
    try:
        yield url
    finally:
        pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def stored_hex(pg: PG, url: str, key: str) -> str:
    return pg.psql(
        f"SELECT coalesce(encode(convert_to(hectic.get_secret('{key}'), 'UTF8'), 'hex'), 'NULL')",
        url,
    )


@pytest.mark.parametrize("key", sorted(NASTY))
def test_secret_values_load_byte_for_byte(pg: PG, secrets_url: str, key: str) -> None:
    value = NASTY[key]
    assert bundle.load_secrets(secrets_url, f"{key}={value}\n") == 1
    assert stored_hex(pg, secrets_url, key) == value.encode().hex()


def test_all_nasty_values_in_one_file(pg: PG, secrets_url: str) -> None:
    content = "".join(f"{k}={v}\n" for k, v in NASTY.items())
    assert bundle.load_secrets(secrets_url, content) == len(NASTY)
    for key, value in NASTY.items():
        assert stored_hex(pg, secrets_url, key) == value.encode().hex(), key


def test_large_content_is_not_limited_by_argv(pg: PG, secrets_url: str) -> None:
    big = "v" * 300_000  # above Linux's 128 KiB limit for one argv string
    assert bundle.load_secrets(secrets_url, f"BIG={big}\nSMALL=1\n") == 2
    assert pg.psql("SELECT length(hectic.get_secret('BIG'))", secrets_url) == "300000"


def test_dotenv_parsing_rules(pg: PG, secrets_url: str) -> None:
    content = (
        "# a comment\n"
        "   # an indented comment\n"
        "\n"
        "   \t \n"
        "PLAIN=value\n"
        "  SPACED  =   padded value  \n"
        "FIRST_EQ=a=b=c\n"
        'DQ="double quoted"\n'
        "SQ='single quoted'\n"
        "NESTED=\"'inner kept'\"\n"
        "TWICE=\"\"x\"\"\n"
        "UNMATCHED=\"left only'\n"
        'ONE_QUOTE="\n'
        "EMPTY=\n"
        'EMPTY_QUOTED=""\n'
        "INLINE=keep # this too\n"
        "CRLF=windows\r\n"
        "DUP=first\n"
        "DUP=second\n"
        "QUOTED_PAD=\"  inner spaces kept  \"\n"
        "NO_NEWLINE_AT_END=last"
    )
    assert bundle.load_secrets(secrets_url, content) == 16  # 17 pairs, DUP twice
    rows = pg.psql("SELECT key || '=[' || value || ']' FROM hectic.secret ORDER BY key",
                   secrets_url).splitlines()
    assert rows == sorted([
        "PLAIN=[value]",
        "SPACED=[padded value]",
        "FIRST_EQ=[a=b=c]",
        "DQ=[double quoted]",
        "SQ=[single quoted]",
        "NESTED=['inner kept']",
        'TWICE=["x"]',
        "UNMATCHED=[\"left only']",
        'ONE_QUOTE=["]',
        "EMPTY=[]",
        "EMPTY_QUOTED=[]",
        "INLINE=[keep # this too]",
        "CRLF=[windows]",
        "DUP=[second]",
        "QUOTED_PAD=[  inner spaces kept  ]",
        "NO_NEWLINE_AT_END=[last]",
    ])


@pytest.mark.parametrize(("content", "seen"), [
    ("\ufeffA=1\n", "A=1\n"),
    ("A=\ufeff\n", "A=\ufeff\n"),  # only a leading BOM is one
    ("export A=1\n  export\tB=2\r\n", "A=1\n  B=2\r\n"),
    ("export=1\nexported=2\nexport A\n", "export=1\nexported=2\nexport A\n"),
    ("A=export B=1\n", "A=export B=1\n"),
])
def test_normalize_dotenv(content: str, seen: str) -> None:
    assert bundle.normalize_dotenv(content) == seen


def test_export_and_bom_keep_the_line_numbers_of_errors(secrets_url: str) -> None:
    with pytest.raises(Error, match='line 3 has no "="'):
        bundle.load_secrets(secrets_url, "\ufeffexport A=1\nexport B=2\nexport C\n")


def test_loading_replaces_every_row(pg: PG, secrets_url: str) -> None:
    bundle.load_secrets(secrets_url, "OLD=1\nKEEP=1\n")
    assert bundle.load_secrets(secrets_url, "KEEP=2\nNEW=3\n") == 2
    assert pg.psql("SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM hectic.secret",
                   secrets_url) == "KEEP=2,NEW=3"
    assert bundle.load_secrets(secrets_url, "") == 0
    assert pg.psql("SELECT count(*) FROM hectic.secret", secrets_url) == "0"


@pytest.mark.parametrize(("content", "message"), [
    ("A=1\nno equals sign here\n", 'line 2 has no "="'),
    ("A=1\n\n = value\n", "line 3 has an empty key"),
])
def test_bad_lines_fail_without_echoing_secrets(
    pg: PG, secrets_url: str, content: str, message: str
) -> None:
    bundle.load_secrets(secrets_url, "KEPT=1\n")
    with pytest.raises(Error) as info:
        bundle.load_secrets(secrets_url, content)
    assert message in info.value.message
    assert "value" not in info.value.message and "equals sign" not in info.value.detail
    # The failed load changed nothing.
    assert pg.psql("SELECT string_agg(key, ',') FROM hectic.secret", secrets_url) == "KEPT"


def test_unloadable_content_is_refused_before_psql(secrets_url: str) -> None:
    with pytest.raises(Error, match="NUL byte") as info:
        bundle.load_secrets(secrets_url, "A=x\x00y\n")
    assert info.value.exit_code == 3
    with pytest.raises(Error, match="not valid UTF-8"):
        bundle.load_secrets(secrets_url, "A=\udcff\n")


def test_get_secret_of_a_missing_key_is_null(pg: PG, secrets_url: str) -> None:
    bundle.load_secrets(secrets_url, "A=1\n")
    assert stored_hex(pg, secrets_url, "MISSING") == "NULL"
    assert pg.psql("SELECT hectic.get_secret(NULL) IS NULL", secrets_url) == "t"


def test_public_cannot_read_secrets(pg: PG, hectic_url: str) -> None:
    role = "nobody_" + uuid.uuid4().hex[:8]
    bundle.load_secrets(hectic_url, "TOKEN=s3cret\n")
    db = hectic_url.split("@/", 1)[1].split("?", 1)[0]
    pg.psql(f'CREATE ROLE "{role}" LOGIN', hectic_url)
    try:
        # Even with USAGE on the schema, neither the table nor the functions are open.
        pg.psql(f'GRANT USAGE ON SCHEMA hectic TO "{role}"', hectic_url)
        as_role = f"postgresql://{role}@/{db}?host={quote(pg.sockdir)}&port={pg.port}"
        assert "permission denied for table secret" in psql_fails(
            pg, "SELECT * FROM hectic.secret", as_role)
        assert "permission denied for function get_secret" in psql_fails(
            pg, "SELECT hectic.get_secret('TOKEN')", as_role)
        assert "permission denied for function load_secrets_from_env" in psql_fails(
            pg, "SELECT hectic.load_secrets_from_env('A=1')", as_role)
        assert pg.psql("SELECT has_table_privilege('public', 'hectic.secret', 'SELECT')",
                       hectic_url) == "f"
    finally:
        pg.psql(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"', hectic_url)


# ---------------------------------------------------------------- migration table

GOOD_HASH = "a" * 64


def test_migration_table_checks(pg: PG, hectic_url: str) -> None:
    insert = "INSERT INTO hectic.migration (name, hash) VALUES ('{}', '{}')"
    pg.psql(insert.format("20240101000000-first", GOOD_HASH), hectic_url)
    # Identical contents (same hash) under another name are fine.
    pg.psql(insert.format("20240101000001-same content", GOOD_HASH), hectic_url)
    assert "migration_name_key" in psql_fails(
        pg, insert.format("20240101000000-first", "b" * 64), hectic_url)
    for bad_name in ("2024010100000-short", "20240101000000first", "x20240101000000-a"):
        assert 'domain hectic.migration_name violates check constraint "migration_name_check"' \
            in psql_fails(pg, insert.format(bad_name, GOOD_HASH), hectic_url), bad_name
    for bad_hash in ("A" * 64, "a" * 63, "g" * 64, ""):
        assert 'domain hectic.sha256 violates check constraint "sha256_check"' in psql_fails(
            pg, insert.format("20240101000009-x", bad_hash), hectic_url), bad_hash
    assert "value too long for type character(64)" in psql_fails(
        pg, insert.format("20240101000009-x", "a" * 65), hectic_url)
    # The original's column types: serial id, the two domains.
    cols = pg.psql("SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ','"
                   " ORDER BY attnum) FROM pg_attribute "
                   "WHERE attrelid = 'hectic.migration'::regclass AND attnum > 0", hectic_url)
    assert cols == ("id integer,name hectic.migration_name,hash hectic.sha256,"
                    "applied_at timestamp with time zone")


@pytest.mark.parametrize("unique_hash", [
    "CREATE TABLE hectic.migration (id serial PRIMARY KEY, name text UNIQUE NOT NULL, "
    "hash text UNIQUE NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE hectic.migration (id serial PRIMARY KEY, name text UNIQUE NOT NULL, "
    "hash text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now()); "
    "CREATE UNIQUE INDEX migration_hash_idx ON hectic.migration (hash)",
], ids=["constraint", "index"])
def test_unique_hash_of_the_original_is_dropped(pg: PG, db_url: str, unique_hash: str) -> None:
    pg.psql(f"CREATE SCHEMA hectic; {unique_hash}", db_url)
    bundle.apply(db_url)
    bundle.apply(db_url)
    insert = "INSERT INTO hectic.migration (name, hash) VALUES ('{}', '" + GOOD_HASH + "')"
    pg.psql(insert.format("20240101000000-a") + ";" + insert.format("20240101000001-b"), db_url)
    assert pg.psql("SELECT count(*) FROM hectic.migration", db_url) == "2"


# ---------------------------------------------------------------- inheritance

def test_create_table_must_inherit_created_at(pg: PG, hectic_url: str) -> None:
    err = psql_fails(pg, "CREATE TABLE plain (id int)", hectic_url)
    assert "hectic: table public.plain must INHERITS (hectic.created_at)" in err
    assert "HINT:  add INHERITS (hectic.created_at)" in err
    assert pg.psql("SELECT to_regclass('public.plain') IS NULL", hectic_url) == "t"
    pg.psql("CREATE TABLE ok (id int) INHERITS (hectic.created_at)", hectic_url)
    # Inheriting through another user table counts as well.
    pg.psql("CREATE TABLE ok_child (x int) INHERITS (ok)", hectic_url)
    # As in the original, schema elements of CREATE SCHEMA are not checked ...
    pg.psql("CREATE SCHEMA s CREATE TABLE inner_t (x int)", hectic_url)
    # ... but they get the triggers their parents ask for.
    pg.psql("CREATE SCHEMA s2 CREATE TABLE frozen (x int) INHERITS (hectic.immutable)",
            hectic_url)
    assert triggers_of(pg, hectic_url) == ["s2.frozen hectic_block_immutable_dml",
                                           "s2.frozen hectic_block_immutable_truncate"]


@pytest.mark.parametrize("sql", [
    "CREATE TABLE ctas AS SELECT 1 AS x",
    "SELECT 1 AS x INTO sel_into",
])
def test_create_table_as_and_select_into_are_allowed(pg: PG, hectic_url: str, sql: str) -> None:
    # As in the original: they cannot declare INHERITS, and existing scripts use them.
    pg.psql(sql, hectic_url)
    assert pg.psql("SELECT count(*) FROM pg_class WHERE relname IN ('ctas', 'sel_into')",
                   hectic_url) == "1"


@pytest.mark.parametrize("setup", [
    pytest.param("CREATE TABLE hectic.own (x int)", id="schema hectic"),
    pytest.param("CREATE TABLE information_schema.own (x int)", id="information_schema"),
    pytest.param("SET allow_system_table_mods = on; CREATE SCHEMA pg_custom; "
                 "RESET allow_system_table_mods; CREATE TABLE pg_custom.own (x int)",
                 id="pg_ prefix"),
    pytest.param("CREATE SCHEMA legacy; CREATE SCHEMA etl; "
                 "SET hectic.inheritance_extra_excluded_schemas = ' legacy , etl'; "
                 "CREATE TABLE etl.own (x int)", id="extra excluded GUC"),
    pytest.param("CREATE TABLE parted (id int, created_at timestamptz NOT NULL) "
                 "PARTITION BY RANGE (id) ; "
                 "CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (10)",
                 id="partitions"),
    pytest.param("CREATE TEMPORARY TABLE tmp (x int); "
                 "CREATE TEMPORARY TABLE tmp_as AS SELECT 1 AS x", id="temporary"),
])
def test_exemptions(pg: PG, hectic_url: str, setup: str) -> None:
    pg.psql(setup, hectic_url)


def test_extra_excluded_schemas_via_alter_database(pg: PG, hectic_url: str) -> None:
    db = hectic_url.split("@/", 1)[1].split("?", 1)[0]
    pg.psql(f"CREATE SCHEMA legacy; "
            f"ALTER DATABASE \"{db}\" SET hectic.inheritance_extra_excluded_schemas = 'legacy,etl'",
            hectic_url)
    pg.psql("CREATE TABLE legacy.t (x int); CREATE TABLE legacy.t2 AS SELECT 1 AS x", hectic_url)
    # Only the listed schemas.
    assert "must INHERITS" in psql_fails(pg, "CREATE TABLE public.t (x int)", hectic_url)


def test_updated_at_trigger(pg: PG, hectic_url: str) -> None:
    pg.psql("CREATE TABLE item (id int, v text) INHERITS (hectic.created_at, hectic.updated_at); "
            "INSERT INTO item (id, v, updated_at) VALUES (1, 'a', '2000-01-01')", hectic_url)
    trig = pg.psql("SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'item'::regclass",
                   hectic_url)
    assert trig == ("CREATE TRIGGER hectic_set_updated_at BEFORE UPDATE ON public.item "
                    "FOR EACH ROW EXECUTE FUNCTION hectic.set_updated_at()")
    done = psql_script(pg, hectic_url,
                       "BEGIN; UPDATE item SET v = 'b', updated_at = '2001-01-01'; "
                       "SELECT updated_at = now() FROM item; COMMIT;")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "t"


@pytest.mark.parametrize("dml", [
    "INSERT INTO frozen (id) VALUES (2)",
    "UPDATE frozen SET id = 3",
    "DELETE FROM frozen",
    "TRUNCATE frozen",
    "UPDATE hectic.created_at SET created_at = now()",  # through a parent table
    "DELETE FROM hectic.created_at",
    "COPY frozen (id) FROM PROGRAM 'echo 5'",
])
def test_immutable_tables_reject_changes(pg: PG, hectic_url: str, dml: str) -> None:
    pg.psql("CREATE TABLE frozen (id int) INHERITS (hectic.created_at, hectic.immutable); "
            "BEGIN; SET LOCAL hectic.migration_mode = 'on'; "
            "INSERT INTO frozen (id) VALUES (1); COMMIT", hectic_url)
    err = psql_fails(pg, dml, hectic_url)
    assert "hectic: table public.frozen inherits hectic.immutable; " in err
    assert " blocked outside migration_mode" in err
    assert "SET LOCAL hectic.migration_mode = 'on'" in err
    assert pg.psql("SELECT string_agg(id::text, ',') FROM frozen", hectic_url) == "1"


def test_migration_mode_allows_changes_only_inside_its_transaction(
    pg: PG, hectic_url: str
) -> None:
    pg.psql("CREATE TABLE frozen (id int) INHERITS (hectic.created_at, hectic.immutable)",
            hectic_url)
    done = psql_script(pg, hectic_url, """
        BEGIN;
        SET LOCAL hectic.migration_mode = 'on';
        INSERT INTO frozen (id) VALUES (1), (2);
        UPDATE frozen SET id = id * 10;
        DELETE FROM frozen WHERE id = 20;
        COMMIT;
        BEGIN;
        SET LOCAL hectic.migration_mode = 'on';
        TRUNCATE frozen;
        ROLLBACK;
        SELECT string_agg(id::text, ',') FROM frozen;
        SELECT coalesce(current_setting('hectic.migration_mode', true), '') = 'on';
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["10", "f"]
    assert "INSERT blocked outside migration_mode" in psql_fails(
        pg, "INSERT INTO frozen (id) VALUES (3)", hectic_url)
    # Any other value than 'on' does not open the gate.
    assert "DELETE blocked outside migration_mode" in psql_fails(
        pg, "SET hectic.migration_mode = 'true'; DELETE FROM frozen", hectic_url)


def triggers_of(pg: PG, url: str) -> list[str]:
    return pg.psql("SELECT tgrelid::regclass || ' ' || tgname FROM pg_trigger "
                   "WHERE NOT tgisinternal AND tgrelid <> 'hectic.migration'::regclass "
                   "ORDER BY 1", url).splitlines()


def test_alter_table_inherit_attaches_and_detaches_triggers(pg: PG, hectic_url: str) -> None:
    pg.psql("CREATE TABLE later (id int, updated_at timestamptz NOT NULL DEFAULT now()) "
            "INHERITS (hectic.created_at); "
            "CREATE TABLE later_child () INHERITS (later)", hectic_url)
    assert triggers_of(pg, hectic_url) == []
    pg.psql("ALTER TABLE later INHERIT hectic.updated_at; "
            "ALTER TABLE later INHERIT hectic.immutable", hectic_url)
    assert triggers_of(pg, hectic_url) == [
        "later hectic_block_immutable_dml", "later hectic_block_immutable_truncate",
        "later hectic_set_updated_at",
        "later_child hectic_block_immutable_dml", "later_child hectic_block_immutable_truncate",
        "later_child hectic_set_updated_at",
    ]
    pg.psql("ALTER TABLE later NO INHERIT hectic.immutable", hectic_url)
    assert triggers_of(pg, hectic_url) == ["later hectic_set_updated_at",
                                           "later_child hectic_set_updated_at"]
    pg.psql("INSERT INTO later (id) VALUES (1)", hectic_url)


def test_reapplying_backfills_missing_triggers(pg: PG, hectic_url: str) -> None:
    pg.psql("ALTER EVENT TRIGGER hectic_attach_immutable_triggers DISABLE; "
            "CREATE TABLE frozen (id int) INHERITS (hectic.created_at, hectic.immutable); "
            "ALTER EVENT TRIGGER hectic_attach_immutable_triggers ENABLE", hectic_url)
    assert triggers_of(pg, hectic_url) == []
    bundle.apply(hectic_url)
    assert triggers_of(pg, hectic_url) == ["frozen hectic_block_immutable_dml",
                                           "frozen hectic_block_immutable_truncate"]


def test_database_bundle_sql_pipes_into_psql(pg: PG, db_url: str) -> None:
    """External consumers: `database bundle sql | psql -f -`, twice (idempotent)."""
    env = base_env()
    r = run_cmd([script("database"), "bundle", "sql"], env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == bundle.render()
    for _ in range(2):
        done = subprocess.run(
            [pg.install.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db_url,
             "-f", "-"], input=r.stdout, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    assert pg.psql("SELECT name, version FROM hectic.version", db_url) == "hectic|0.1.0"
    assert pg.psql("SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'hectic_%'",
                   db_url) == "3"


def test_database_bundle_path_lists_includable_files_in_order(
    pg: PG, db_url: str, tmp_path: Path
) -> None:
    env = base_env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    r = run_cmd([script("database"), "bundle", "path"], env)
    assert r.returncode == 0, r.stderr
    paths = [Path(p) for p in r.stdout.splitlines()]
    assert [p.name for p in paths] == ["version.sql", "secret.sql", "migration.sql",
                                       "inheritance.sql"]
    assert all(p.is_absolute() and p.is_file() for p in paths)
    init_script = "".join(f"\\i '{p}'\n" for p in paths)
    done = subprocess.run(
        [pg.install.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db_url, "-f", "-"],
        input=init_script, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert pg.psql("SELECT version FROM hectic.version", db_url) == bundle.VERSION
    r = run_cmd([script("database"), "bundle", "nope"], env)
    assert r.returncode == 9 and "nope" in r.stderr


def test_secret_table_shape_and_unique_key(pg: PG, db_url: str) -> None:
    bundle.apply(db_url)
    cols = pg.psql("SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute "
                   "WHERE attrelid = 'hectic.secret'::regclass AND attnum > 0 "
                   "AND NOT attisdropped", db_url)
    assert cols == "id,key,value"
    pg.psql("INSERT INTO hectic.secret (key, value) VALUES ('K', '1')", db_url)
    with pytest.raises(AssertionError, match="duplicate key"):
        pg.psql("INSERT INTO hectic.secret (key, value) VALUES ('K', '2')", db_url)


def test_dotenv_as_a_psql_variable_loads_byte_for_byte(pg: PG, db_url: str) -> None:
    """The documented by-hand path: the content as a psql variable, never pasted into SQL."""
    bundle.apply(db_url)
    value = "a$$b $ps_env$ it's \"q\" back\\slash ; DROP TABLE x; — ü 🔑"
    # (-c does not interpolate psql variables: the statement goes on stdin.)
    done = subprocess.run(
        [pg.install.tool("psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", db_url,
         "-v", f"dotenv=TOKEN={value}\n# c\n\nOTHER = 'x'", "-f", "-"],
        input="SELECT hectic.load_secrets_from_env(:'dotenv');\n",
        capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""  # RETURNS void, as the original's
    got = pg.psql("SELECT encode(convert_to(hectic.get_secret('TOKEN'), 'UTF8'), 'hex')", db_url)
    assert bytes.fromhex(got).decode() == value
    assert pg.psql("SELECT hectic.get_secret('OTHER')", db_url) == "x"
