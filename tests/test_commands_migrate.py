"""db_tool.commands.migrate called directly (no argv, no captured streams): what each verb
returns, against a real PostgreSQL (session cluster, fresh database per test) and SQLite."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from db_tool.commands import migrate
from db_tool.errors import Error
from db_tool.history import MigrationFailed
from db_tool.planning import Target
from db_tool.settings import MigratorSettings
from tests.migrator_support import flat, pg_history, write


def settings(**env: str) -> MigratorSettings:
    import os

    return MigratorSettings.from_env({"PATH": os.environ.get("PATH", ""), **env})


def name(i: int) -> str:
    return f"2024010100{i:04d}-m{i}"


@pytest.fixture
def mdir(tmp_path: Path) -> Path:
    d = tmp_path / "migrations"
    d.mkdir()
    return d


def test_migrate_returns_the_applied_steps_and_a_summary(
    pg: Any, db_url: str, mdir: Path
) -> None:
    for i in (1, 2, 3):
        flat(mdir, name(i), f"CREATE SCHEMA s{i};", f"DROP SCHEMA s{i};")
    warned: list[str] = []
    up = migrate.migrate(db_url, str(mdir), Target.parse("up", "all"), settings(), warned.append)
    assert up.already is None
    assert migrate.result_lines(up.results) == [f"applied {name(i)}" for i in (1, 2, 3)]
    assert up.summary == f"successfully migrated to {name(3)}"
    assert pg_history(pg, db_url) == [name(i) for i in (1, 2, 3)]
    down = migrate.migrate(db_url, str(mdir), Target.parse("down", "2"), settings(),
                           warned.append)
    assert migrate.result_lines(down.results) == [f"rolled back {name(i)}" for i in (3, 2)]
    assert down.summary == f"successfully migrated down to {name(1)}"
    assert warned == []


def test_a_missing_migration_dir_is_reported_before_the_database_is_asked(
    tmp_path: Path,
) -> None:
    with pytest.raises(Error) as missing:
        migrate.migrate("postgresql:///nowhere?host=/nonexistent", str(tmp_path / "none"),
                        Target.parse("up", "all"), settings(), print)
    assert missing.value.exit_code == 3 and "does not exist" in missing.value.message


def test_work_likely_guesses_from_names_only(mdir: Path) -> None:
    from db_tool.migrations import Applied

    flat(mdir, name(1), "SELECT 1;")
    write(mdir / f"{name(2)}.sql", "-- migrate:up\nSELECT 1;\n")
    one = [Applied(name(1), "h")]
    both = [*one, Applied(name(2), "h")]
    assert migrate._work_likely(str(mdir), one, Target.parse("up", "all"))
    assert not migrate._work_likely(str(mdir), both, Target.parse("up", "all"))
    assert not migrate._work_likely(str(mdir), one, Target.parse("up", "0"))
    assert migrate._work_likely(str(mdir), one, Target.parse("down", "1"))
    assert not migrate._work_likely(str(mdir), [], Target.parse("down", "1"))
    assert not migrate._work_likely(str(mdir / "gone"), one, Target.parse("up", "all"))


def test_migrate_with_nothing_pending_says_so_without_steps(
    db_url: str, mdir: Path
) -> None:
    flat(mdir, name(1), "SELECT 1;")
    migrate.migrate(db_url, str(mdir), Target.parse("up", "all"), settings(), print)
    again = migrate.migrate(db_url, str(mdir), Target.parse("up", "all"), settings(), print)
    assert again.results == [] and again.summary is None
    assert again.already is not None and name(1) in again.already


def test_a_failing_migration_raises_with_the_steps_that_stay(
    pg: Any, db_url: str, mdir: Path
) -> None:
    flat(mdir, name(1), "CREATE SCHEMA ok1;")
    flat(mdir, name(2), "ALTER TABLE nope ADD COLUMN x int;")
    flat(mdir, name(3), "CREATE SCHEMA never;")
    with pytest.raises(MigrationFailed) as failed:
        migrate.migrate(db_url, str(mdir), Target.parse("up", "all"), settings(), print)
    assert migrate.result_lines(failed.value.completed) == [f"applied {name(1)}"]
    assert failed.value.exit_code == 4 and '"nope" does not exist' in (failed.value.detail or "")
    assert pg_history(pg, db_url) == [name(1)]


def test_discover_passes_warnings_to_warn(mdir: Path) -> None:
    flat(mdir, name(1), "SELECT 1;")
    write(mdir / f"{name(2)}.sql", "SELECT 'no sections';\n")
    warned: list[str] = []
    assert [m.name for m in migrate.discover(str(mdir), warned.append)] == [name(1)]
    assert len(warned) == 1 and warned[0].startswith(f"skipping {mdir / name(2)}.sql: no ")


def test_status_counts_each_state(db_url: str, mdir: Path) -> None:
    for i in (1, 2):
        flat(mdir, name(i), "SELECT 1;")
    migrate.migrate(db_url, str(mdir), Target.parse("up", "1"), settings(), print)
    write(mdir / name(1) / "up.sql", "SELECT 2;")
    report = migrate.status(db_url, migrate.discover(str(mdir), print), settings())
    assert [(r.name, r.state) for r in report.rows] == [(name(1), "modified"),
                                                       (name(2), "pending")]
    assert report.counts == {"applied": 0, "pending": 1, "missing": 0, "modified": 1}
    migrate.refuse_modified(report, settings(), strict=False)
    with pytest.raises(Error) as refused:
        migrate.refuse_modified(report, settings(MIGRATOR_STRICT="1"), strict=False)
    assert refused.value.exit_code == 2


def test_strict_from_settings_refuses_a_modified_migration(db_url: str, mdir: Path) -> None:
    flat(mdir, name(1), "SELECT 1;")
    flat(mdir, name(2), "SELECT 1;")
    migrate.migrate(db_url, str(mdir), Target.parse("up", "1"), settings(), print)
    write(mdir / name(1) / "up.sql", "SELECT 2;")
    with pytest.raises(Error) as refused:
        migrate.migrate(db_url, str(mdir), Target.parse("up", "all"),
                        settings(MIGRATOR_STRICT="1"), print)
    assert refused.value.exit_code == 2


def test_bad_lock_timeout_is_refused_before_the_database_is_touched(mdir: Path) -> None:
    with pytest.raises(Error, match="MIGRATOR_LOCK_TIMEOUT='soon'"):
        migrate.migrate("postgresql:///nowhere?host=/nonexistent", "/nonexistent",
                        Target.parse("up", "all"), settings(MIGRATOR_LOCK_TIMEOUT="soon"), print)


def test_init_and_migrate_on_sqlite(tmp_path: Path, mdir: Path) -> None:
    if shutil.which("sqlite3") is None:
        pytest.fail("sqlite3 is not installed (apt-get install sqlite3)")
    url = f"sqlite://{tmp_path / 'x.db'}"
    assert "CREATE TABLE IF NOT EXISTS hectic_migration" in migrate.init_sql(url)
    migrate.init(url, {}, settings())
    flat(mdir, name(1), "CREATE TABLE a (x int);", "DROP TABLE a;")
    available = migrate.discover(str(mdir), print)
    up = migrate.migrate(url, str(mdir), Target.parse("up", "all"), settings(), print)
    assert migrate.result_lines(up.results) == [f"applied {name(1)}"]
    assert migrate.status(url, available, settings()).counts["applied"] == 1


def test_init_sql_for_postgres_is_the_bundle() -> None:
    from db_tool import bundle

    assert migrate.init_sql("postgresql:///x") == bundle.render() == migrate.init_sql(None)


def test_listing_names_missing_sections(mdir: Path) -> None:
    flat(mdir, name(1), "SELECT 1;")
    (mdir / name(1) / "down.sql").unlink()
    write(mdir / f"{name(2)}.sql", "-- migrate:up\nSELECT 1;\n")
    available = migrate.discover(str(mdir), print)
    assert migrate.listing(available, raw=False) == [
        f"{name(1)}: missing down.sql", f"{name(2)}: missing -- migrate:down"]
    assert migrate.listing(available, raw=True) == [name(1), name(2)]


def test_create_writes_an_empty_migration(mdir: Path) -> None:
    path = Path(migrate.create(str(mdir), "add-x", now=1_700_000_000.0))
    assert path.parent == mdir and path.name.endswith("-add-x.sql")
    assert path.read_text() == "-- migrate:up\n\n\n-- migrate:down\n\n"
    random = Path(migrate.create(str(mdir), None, now=1_700_000_000.0))
    assert len(random.name[15:-4]) == 6 and random.name[:14] != path.name[:14]
