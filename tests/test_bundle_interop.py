"""Mixed use with the original tool on one database: its hectic bundle, applied the way its
apply-hectic-bundle.sh does, before and after ours.

The original's SQL is read at test time from ../shared/reference/original/lib/hook/sql/ beside
the repository (CI has it there). Without it these tests FAIL, saying what is missing."""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from db_tool import bundle
from db_tool.cli import database, db_ops
from db_tool.cli import migrator as migrator_cli
from tests.helpers import BIN

if TYPE_CHECKING:
    from tests.conftest import PG

REPO = Path(__file__).resolve().parent.parent
ORIGINAL_SQL = REPO.parent / "shared" / "reference" / "original" / "lib" / "hook" / "sql"
# The order apply-hectic-bundle.sh applies them in.
ORIGINAL_FILES = ("hectic-version.sql", "hectic-secret.sql", "hectic-migration.sql",
                  "hectic-inheritance.sql")


def original_sql_dir() -> Path:
    missing = [n for n in (*ORIGINAL_FILES, "HECTIC_VERSION") if not (ORIGINAL_SQL / n).is_file()]
    if missing:
        pytest.fail(
            f"the original tool's hectic bundle is missing: {', '.join(missing)} not found in "
            f"{ORIGINAL_SQL} (check out hectic-lab/util.nix's lib/hook/sql/ there, as "
            "../shared/reference/original/ beside the repository)", pytrace=False)
    return ORIGINAL_SQL


def apply_original(pg: PG, url: str, tmp_path: Path, dotenv: str | None = None,
                   version: str | None = None) -> subprocess.CompletedProcess[str]:
    """What the original's apply_hectic_bundle does: each file through its own
    `psql URL -v ON_ERROR_STOP=1 -f FILE`, version.sql rendered with HECTIC_VERSION (as its
    Nix build does), then the dotenv base64-encoded into load_secrets_from_env."""
    sql = original_sql_dir()
    want = version or (sql / "HECTIC_VERSION").read_text().strip()
    rendered = tmp_path / "original-hectic-version.sql"
    rendered.write_text((sql / "hectic-version.sql").read_text().replace("@HECTIC_VERSION@",
                                                                           want))
    paths = [rendered, *(sql / n for n in ORIGINAL_FILES[1:])]
    psql = pg.install.tool("psql")
    done = subprocess.CompletedProcess[str]([], 0, "", "")
    for path in paths:
        done = subprocess.run([psql, url, "-v", "ON_ERROR_STOP=1", "-f", str(path)],
                              capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            return done
    if dotenv:
        b64 = base64.b64encode(dotenv.encode()).decode()
        done = subprocess.run(
            [psql, url, "-v", "ON_ERROR_STOP=1"],
            input=("SELECT hectic.load_secrets_from_env("
                   f"convert_from(decode('{b64}', 'base64'), 'UTF8'));\n"),
            capture_output=True, text=True, check=False)
    return done


def must_apply_original(pg: PG, url: str, tmp_path: Path, dotenv: str | None = None) -> None:
    done = apply_original(pg, url, tmp_path, dotenv)
    assert done.returncode == 0, done.stderr


def psql_fails(pg: PG, sql: str, url: str) -> str:
    with pytest.raises(AssertionError) as info:
        pg.psql(sql, url)
    return str(info.value)


def triggers_of(pg: PG, url: str, table: str) -> list[str]:
    out = pg.psql(f"SELECT tgname FROM pg_trigger WHERE tgrelid = '{table}'::regclass "
                  "AND NOT tgisinternal ORDER BY 1", url)
    return out.splitlines() if out else []


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "HOME", "XDG_CACHE_HOME", "PG_BIN_DIR",
                                      "PG_OS_USER", "LANG") if k in os.environ}
    env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(extra)
    return env


# The same object list for both bundles: names and signatures (not bodies, not our additions).
OBJECTS = r"""
SELECT 'function ' || p.oid::regprocedure || ' -> ' || format_type(p.prorettype, NULL)
       || ' (' || coalesce(array_to_string(p.proargnames, ','), '') || ')'
  FROM pg_proc p WHERE p.pronamespace = 'hectic'::regnamespace
   AND p.proname NOT IN ('_sync_inheritance_triggers', '_ddl_touched_tables')
UNION ALL
SELECT 'column ' || attrelid::regclass || '.' || attname || ' ' || format_type(atttypid, atttypmod)
       || CASE WHEN attnotnull THEN ' not null' ELSE '' END
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
 WHERE c.relnamespace = 'hectic'::regnamespace AND c.relkind = 'r' AND a.attnum > 0
   AND NOT a.attisdropped
UNION ALL
SELECT 'domain ' || t.oid::regtype || ' ' || format_type(t.typbasetype, t.typtypmod) || ' '
       || (SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), ', ')
           FROM pg_constraint WHERE contypid = t.oid)
  FROM pg_type t WHERE t.typnamespace = 'hectic'::regnamespace AND t.typtype = 'd'
UNION ALL
SELECT 'event trigger ' || evtname || ' ' || evtevent || ' ' || evtfoid::regproc
  FROM pg_event_trigger
UNION ALL
SELECT 'trigger ' || tgrelid::regclass || ' ' || tgname || ' ' || tgfoid::regproc
  FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'version ' || name || ' ' || version FROM hectic.version
ORDER BY 1
"""


# ------------------------------------------------------------- the same schema objects


def test_our_version_is_the_originals_hectic_version() -> None:
    """Otherwise each bundle's version check refuses a database of the other."""
    assert (original_sql_dir() / "HECTIC_VERSION").read_text().strip() == bundle.VERSION


@pytest.mark.slow
def test_both_bundles_create_the_same_objects(
    pg: PG, make_db: Callable[[], str], tmp_path: Path
) -> None:
    ours, original = make_db(), make_db()
    bundle.apply(ours)
    must_apply_original(pg, original, tmp_path)
    assert pg.psql(OBJECTS, ours) == pg.psql(OBJECTS, original)


# ------------------------------------------------------------- original first, then ours


@pytest.fixture
def original_db(pg: PG, db_url: str, tmp_path: Path) -> str:
    """A database bootstrapped by the original, with a table of each kind and a secret."""
    must_apply_original(pg, db_url, tmp_path, dotenv="OLD=from-original\n")
    pg.psql("CREATE TABLE upd (id int, v text) INHERITS (hectic.created_at, hectic.updated_at); "
            "CREATE TABLE frozen (id int) INHERITS (hectic.created_at, hectic.immutable); "
            "BEGIN; SET LOCAL hectic.migration_mode = 'on'; "
            "INSERT INTO frozen (id) VALUES (1); COMMIT", db_url)
    return db_url


@pytest.mark.slow
def test_ours_applies_over_the_original_and_changes_no_trigger(pg: PG, original_db: str) -> None:
    before = pg.psql(OBJECTS, original_db)
    bundle.apply(original_db)
    bundle.apply(original_db)
    assert pg.psql(OBJECTS, original_db) == before
    assert triggers_of(pg, original_db, "frozen") == ["hectic_block_immutable_dml",
                                                      "hectic_block_immutable_truncate"]
    assert "hectic: table public.frozen inherits hectic.immutable; DELETE blocked outside " \
        "migration_mode" in psql_fails(pg, "DELETE FROM frozen", original_db)
    assert pg.psql("SELECT hectic.get_secret('OLD')", original_db) == "from-original"


@pytest.mark.slow
def test_migrator_on_a_database_of_the_original(
    pg: PG, original_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mdir = tmp_path / "migration"
    for name, up in [
        ("20250101000000-country", "CREATE TABLE country (code text) "
                                   "INHERITS (hectic.created_at, hectic.immutable);\n"),
        ("20250101000001-fill", "SET LOCAL hectic.migration_mode = 'on';\n"
                                "INSERT INTO country (code) VALUES ('DE');\n"),
    ]:
        (mdir / name).mkdir(parents=True)
        (mdir / name / "up.sql").write_text(up)
        (mdir / name / "down.sql").write_text("")
    env = clean_env(DB_URL=original_db, MIGRATION_DIR=str(mdir))
    for argv in (["init"], ["migrate", "up"], ["migrate", "up"]):
        rc = migrator_cli.main(argv, env)
        out, err = capsys.readouterr()
        assert rc == 0, (argv, out, err)
    assert pg.psql("SELECT string_agg(name, ',' ORDER BY id) FROM hectic.migration",
                   original_db) == "20250101000000-country,20250101000001-fill"
    assert pg.psql("SELECT code FROM country", original_db) == "DE"
    assert triggers_of(pg, original_db, "country") == ["hectic_block_immutable_dml",
                                                       "hectic_block_immutable_truncate"]


@pytest.mark.slow
def test_hydrate_on_a_database_of_the_original(
    pg: PG, original_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"
    (project / "db" / "src").mkdir(parents=True)
    (project / "db" / "src" / "entrypoint.sql").write_text(
        "CREATE TABLE item (id int) INHERITS (hectic.created_at, hectic.updated_at);\n"
        "SELECT 'token=' || hectic.get_secret('TOKEN');\n")
    (project / ".env.dev").write_text("TOKEN=t0k\n")
    env = clean_env(LOCAL_DIR=str(project), PGURL=original_db, ENVIRONMENT="dev")
    rc = database.main(["hydrate"], env=env)
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "token=t0k" in out
    assert triggers_of(pg, original_db, "item") == ["hectic_set_updated_at"]
    assert pg.psql("SELECT string_agg(key, ',') FROM hectic.secret", original_db) == "TOKEN"


@pytest.mark.slow
def test_db_ops_secrets_load_on_a_database_of_the_original(
    pg: PG, original_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = clean_env(PGURL=original_db, HECTIC_DOTENV_CONTENT="A=1\r\nexport B='two'\nA=3\n")
    rc = db_ops.main(["secrets", "load"], env=env)
    _, err = capsys.readouterr()
    assert rc == 0, err
    assert pg.psql("SELECT string_agg(key || '=' || value, ',' ORDER BY id) FROM hectic.secret",
                   original_db) == "A=3,B=two"


# ------------------------------------------------------------- ours first, then the original


@pytest.fixture
def ours_db(pg: PG, db_url: str) -> str:
    bundle.apply(db_url)
    bundle.load_secrets(db_url, "KEPT=1\n")
    pg.psql("CREATE TABLE upd (id int, v text) INHERITS (hectic.created_at, hectic.updated_at); "
            "CREATE TABLE frozen (id int) INHERITS (hectic.created_at, hectic.immutable); "
            "BEGIN; SET LOCAL hectic.migration_mode = 'on'; "
            "INSERT INTO frozen (id) VALUES (1); COMMIT; "
            "INSERT INTO hectic.migration (name, hash) "
            "VALUES ('20250101000000-one', repeat('a', 64))", db_url)
    return db_url


@pytest.mark.slow
def test_original_applies_over_ours_and_its_objects_work(
    pg: PG, ours_db: str, tmp_path: Path
) -> None:
    must_apply_original(pg, ours_db, tmp_path, dotenv="TOKEN=secret-1\nOTHER='x y'\n")
    must_apply_original(pg, ours_db, tmp_path)  # and again: idempotent over ours as well
    # Secrets: its loader replaced ours and loaded; get_secret reads them.
    assert pg.psql("SELECT hectic.get_secret('TOKEN') || '|' || hectic.get_secret('OTHER')",
                   ours_db) == "secret-1|x y"
    assert pg.psql("SELECT hectic.get_secret('KEPT') IS NULL", ours_db) == "t"
    # Immutable tables: old and new ones are blocked outside migration_mode, open inside.
    pg.psql("CREATE TABLE frozen2 (id int) INHERITS (hectic.created_at, hectic.immutable)",
            ours_db)
    for table in ("frozen", "frozen2"):
        assert triggers_of(pg, ours_db, table) == ["hectic_block_immutable_dml",
                                                   "hectic_block_immutable_truncate"]
        assert f"hectic: table public.{table} inherits hectic.immutable; INSERT blocked" in \
            psql_fails(pg, f"INSERT INTO {table} (id) VALUES (2)", ours_db)
        pg.psql(f"BEGIN; SET LOCAL hectic.migration_mode = 'on'; "
                f"INSERT INTO {table} (id) VALUES (3); COMMIT", ours_db)
    # Inheritance: created_at enforced, updated_at trigger attached by its event trigger.
    assert "hectic: table public.plain must INHERITS (hectic.created_at)" in psql_fails(
        pg, "CREATE TABLE plain (id int)", ours_db)
    pg.psql("CREATE TABLE upd2 (id int) INHERITS (hectic.created_at, hectic.updated_at)",
            ours_db)
    assert triggers_of(pg, ours_db, "upd2") == ["hectic_set_updated_at"]
    assert triggers_of(pg, ours_db, "upd") == ["hectic_set_updated_at"]
    # Migration history: its rows and ours side by side, lower-cased by its trigger.
    pg.psql("INSERT INTO hectic.migration (name, hash) "
            "VALUES ('20250101000001-two', repeat('b', 64))", ours_db)
    assert pg.psql("SELECT count(*) FROM hectic.migration", ours_db) == "2"


@pytest.mark.slow
def test_original_version_check_works_over_ours(pg: PG, ours_db: str, tmp_path: Path) -> None:
    done = apply_original(pg, ours_db, tmp_path, version="9.9.9")
    assert done.returncode != 0
    assert (f"hectic schema version mismatch: database has {bundle.VERSION}, code expects 9.9.9"
            in done.stderr)


@pytest.mark.slow
def test_ours_again_after_the_original_over_ours(pg: PG, ours_db: str, tmp_path: Path) -> None:
    """ours → original → ours: the last one restores our behaviour and keeps every row."""
    must_apply_original(pg, ours_db, tmp_path)
    bundle.apply(ours_db)
    pg.psql("CREATE TABLE parent_t (id int) INHERITS (hectic.created_at); "
            "CREATE TABLE child_t () INHERITS (parent_t, hectic.immutable)", ours_db)
    assert triggers_of(pg, ours_db, "child_t") == ["hectic_block_immutable_dml",
                                                   "hectic_block_immutable_truncate"]
    assert bundle.load_secrets(ours_db, "DUP=1\nDUP=2\n") == 1
    assert pg.psql("SELECT hectic.get_secret('DUP')", ours_db) == "2"
    assert pg.psql("SELECT count(*) FROM hectic.migration", ours_db) == "1"


def test_a_missing_original_bundle_fails_the_test_and_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(f"{__name__}.ORIGINAL_SQL", tmp_path / "nowhere")
    with pytest.raises(pytest.fail.Exception) as info:
        original_sql_dir()
    assert "hectic-version.sql" in str(info.value) and str(tmp_path / "nowhere") in str(
        info.value)


# ------------------------------------------------------------- a database of our earlier build

EARLIER_BUILD = r"""
CREATE SCHEMA hectic;
CREATE TABLE hectic.secret (key text PRIMARY KEY, value text NOT NULL);
INSERT INTO hectic.secret VALUES ('B', '2'), ('A', '1');
CREATE FUNCTION hectic.load_secrets_from_env(content text) RETURNS integer
    LANGUAGE sql AS 'SELECT 0';
CREATE FUNCTION hectic.get_secret(key text) RETURNS text LANGUAGE sql AS 'SELECT NULL::text';
CREATE TABLE hectic.migration (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name text NOT NULL,
    hash text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT migration_name_key UNIQUE (name),
    CONSTRAINT migration_name_check CHECK (name ~ '^[0-9]{14}-.*'),
    CONSTRAINT migration_hash_check CHECK (hash ~ '^[0-9a-f]{64}$'));
INSERT INTO hectic.migration (name, hash) VALUES ('20240101000000-a', repeat('c', 64));
CREATE TABLE hectic.created_at (created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE hectic.immutable ();
CREATE FUNCTION hectic.reject_immutable_dml() RETURNS trigger LANGUAGE plpgsql
    AS 'BEGIN RAISE EXCEPTION ''old build''; END';
CREATE TABLE frozen (id int) INHERITS (hectic.created_at, hectic.immutable);
CREATE TRIGGER hectic_immutable_rows BEFORE INSERT OR UPDATE OR DELETE ON frozen
    FOR EACH ROW EXECUTE FUNCTION hectic.reject_immutable_dml();
"""


@pytest.mark.slow
def test_a_database_of_our_earlier_build_gets_the_original_shape(
    pg: PG, db_url: str, tmp_path: Path
) -> None:
    pg.psql(EARLIER_BUILD, db_url)
    bundle.apply(db_url)
    assert pg.psql("SELECT string_agg(key || '=' || value, ',' ORDER BY key), "
                   "string_agg(id::text, ',' ORDER BY id) FROM hectic.secret", db_url) == \
        "A=1,B=2|1,2"
    assert pg.psql("SELECT format_type(atttypid, NULL) FROM pg_attribute "
                   "WHERE attrelid = 'hectic.migration'::regclass AND attname = 'hash'",
                   db_url) == "hectic.sha256"
    assert pg.psql("SELECT name FROM hectic.migration", db_url) == "20240101000000-a"
    assert triggers_of(pg, db_url, "frozen") == ["hectic_block_immutable_dml",
                                                 "hectic_block_immutable_truncate"]
    assert pg.psql("SELECT to_regprocedure('hectic.reject_immutable_dml()') IS NULL",
                   db_url) == "t"
    # And from there the original's bundle applies as well.
    must_apply_original(pg, db_url, tmp_path, dotenv="C=3\n")
    assert pg.psql("SELECT hectic.get_secret('C')", db_url) == "3"


# What a script may match: the ERROR line with its SQLSTATE, from either bundle alike.
SAME_ERRORS = [
    "CREATE TABLE plain (id int)",
    "CREATE TABLE child (id int) INHERITS (hectic.updated_at)",
    "INSERT INTO frozen (id) VALUES (2)",
    "UPDATE frozen SET id = 3",
    "DELETE FROM frozen",
    "TRUNCATE frozen",
    "INSERT INTO hectic.migration (name, hash) VALUES ('bad', repeat('a', 64))",
    "INSERT INTO hectic.migration (name, hash) VALUES ('20250101000000-x', 'nothex')",
    "INSERT INTO hectic.secret (key, value) VALUES ('A', '1'), ('A', '2')",
]


def error_line(pg: PG, url: str, sql: str) -> str:
    done = subprocess.run(
        [pg.install.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose",
         "-d", url, "-c", sql], capture_output=True, text=True, check=False)
    assert done.returncode != 0, sql
    return next(line for line in done.stderr.splitlines() if line.startswith("ERROR:"))


@pytest.fixture(scope="module")
def both_bundles(pg: PG, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(ours, the original's): two databases, each with an immutable table holding one row.
    Read-only for the tests (every statement they run fails)."""
    names = [f"t_interop_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in names:
        pg.psql(f'CREATE DATABASE "{name}"')
    ours, original = (pg.url_for(name) for name in names)
    try:
        bundle.apply(ours)
        must_apply_original(pg, original, tmp_path_factory.mktemp("original"))
        for url in (ours, original):
            pg.psql("CREATE TABLE frozen (id int) INHERITS (hectic.created_at, hectic.immutable); "
                    "BEGIN; SET LOCAL hectic.migration_mode = 'on'; "
                    "INSERT INTO frozen (id) VALUES (1); COMMIT", url)
        yield ours, original
    finally:
        for name in names:
            pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.slow
@pytest.mark.parametrize("sql", SAME_ERRORS)
def test_both_bundles_fail_alike(pg: PG, both_bundles: tuple[str, str], sql: str) -> None:
    ours, original = both_bundles
    assert error_line(pg, ours, sql) == error_line(pg, original, sql)
