"""migrator against real SQLite files through the sqlite3 shell."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from db_tool.history import sqlite_path
from db_tool.history_sqlite import sqlite_dot_quote, sqlite_literal
from tests.conftest import Cli
from tests.migrator_support import Run, flat, runner, write

pytestmark = pytest.mark.skipif(shutil.which("sqlite3") is None, reason="sqlite3 shell missing")

def t(i: int) -> str:
    return f"2024010100{i:04d}-m{i}"


@pytest.fixture
def mdir(tmp_path: Path) -> Path:
    d = tmp_path / "mig dir"
    d.mkdir()
    return d


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data dir" / "app.db"


@pytest.fixture
def run(db: Path, mdir: Path, cli: Cli) -> Run:
    return runner(cli, f"sqlite://{db}", mdir, base={"PATH": os.environ["PATH"]})


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def history(db: Path) -> list[str]:
    return [str(r[0]) for r in rows(db, "SELECT name FROM hectic_migration ORDER BY id")]


@pytest.mark.parametrize(("url", "path"), [
    ("sqlite:///abs/x.db", "/abs/x.db"),
    ("sqlite://rel/x", "rel/x"),
    ("sqlite:x.sqlite", "x.sqlite"),
    ("/abs/app.db", "/abs/app.db"),
    ("app.sqlite", "app.sqlite"),
    ("dir/app.sqlite3", "dir/app.sqlite3"),
    ("postgresql://u@h/app.db", None),
    ("postgresql:///app", None),
])
def test_sqlite_url_forms(url: str, path: str | None) -> None:
    assert sqlite_path(url) == path


@pytest.mark.parametrize("value", ["plain", "it's", "''", "a\\b", "é ü", "x;\nDROP TABLE y;--"])
def test_sqlite_quoting_round_trips(value: str, tmp_path: Path) -> None:
    con = sqlite3.connect(":memory:")
    assert con.execute(f"SELECT {sqlite_literal(value)}").fetchone()[0] == value
    target = tmp_path / f"d {value[:3]!r}".replace("/", "_") / "f.sql"
    if "\n" not in value:
        write(target, "SELECT 'read ok';\n")
        out = subprocess.run(["sqlite3", "-batch", ":memory:"],
                             input=f".read {sqlite_dot_quote(str(target))}\n",
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "read ok"


def test_init_creates_tables_idempotently(run: Run, db: Path) -> None:
    for _ in range(2):
        rc, _, err = run("init")
        assert rc == 0, err
    assert rows(db, "SELECT name, version FROM hectic_version") == [("hectic", "0.1.0")]
    assert history(db) == []


def test_version_mismatch(run: Run, db: Path) -> None:
    assert run("init")[0] == 0
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE hectic_version SET version = '9.9.9'")
    con.close()
    rc, _, err = run("migrate", "up", "all")
    assert rc == 1
    assert "hectic schema version mismatch: database has 9.9.9, code expects 0.1.0" in err


def test_layouts_up_down_to(run: Run, db: Path, mdir: Path) -> None:
    flat(mdir, t(1), "CREATE TABLE items (v TEXT);\n", "DROP TABLE items;\n")
    write(mdir / t(2) / "up" / "entrypoint.sql", f".read '{mdir / t(2) / 'up/sub/part.sql'}'\n")
    write(mdir / t(2) / "up" / "sub" / "part.sql", "INSERT INTO items VALUES ('two');\n")
    write(mdir / t(2) / "down" / "entrypoint.sql", "DELETE FROM items;\n")
    write(mdir / f"{t(3)}.sql", "-- migrate:up\nINSERT INTO items VALUES (:greet);\n"
                                "-- migrate:down\nDELETE FROM items WHERE v <> 'two';\n")
    rc, out, err = run("migrate", "up", "--set", "greet=it's")  # one step, as the original
    assert rc == 0, err
    assert out.splitlines() == [f"applied {t(1)}"]
    assert err == f"migrator: successfully migrated to {t(1)}\n"
    rc, out, err = run("migrate", "up", "all", "--set", "greet=it's")
    assert rc == 0, err
    assert out.splitlines() == [f"applied {t(i)}" for i in (2, 3)]
    assert sorted(rows(db, "SELECT v FROM items")) == [("it's",), ("two",)]
    rc, out, _ = run("migrate", "up", "all")
    assert rc == 0 and out == f"database already at {t(3)}\n"
    assert run("migrate", "up", "1")[0] == 1
    assert run("migrate", "up")[0] == 1  # nothing left for the one step
    rc, out, _ = run("migrate", "to", t(1))
    assert rc == 0 and out.splitlines() == [f"rolled back {t(3)}", f"rolled back {t(2)}"]
    assert history(db) == [t(1)]
    assert run("migrate", "down", "2")[0] == 1
    assert run("migrate", "down")[0] == 0
    assert history(db) == []
    assert run("migrate", "down")[0] == 1
    rc, out, _ = run("status", "--json", "--exit-code")
    assert rc == 1
    assert [m["state"] for m in json.loads(out)["migrations"]] == ["pending"] * 3


def test_failing_migration_leaves_nothing(run: Run, db: Path, mdir: Path) -> None:
    flat(mdir, t(1), "CREATE TABLE ok1 (x INT);\n")
    flat(mdir, t(2), "CREATE TABLE half (x INT);\nINSERT INTO half VALUES (1);\n"
                     "INSERT INTO nope VALUES (1);\n")
    flat(mdir, t(3), "CREATE TABLE never (x INT);\n")
    rc, out, err = run("migrate", "up", "all")
    assert rc == 4
    assert f"migration {t(2)} (up) failed" in err and "no such table: nope" in err
    assert out.splitlines() == [f"applied {t(1)}"]
    assert history(db) == [t(1)]
    tables = {r[0] for r in rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "ok1" in tables and "half" not in tables and "never" not in tables


def test_mismatch_modified_and_force(run: Run, db: Path, mdir: Path) -> None:
    flat(mdir, t(1), "CREATE TABLE a (x INT);\n")
    flat(mdir, t(2), "CREATE TABLE b (x INT);\n")
    assert run("migrate", "up", "all")[0] == 0
    flat(mdir, t(1), "CREATE TABLE a (x INT); -- edited\n")
    rc, out, err = run("migrate", "up", "all")
    assert rc == 0 and out == f"database already at {t(2)}\n"
    assert "warning: applied migration" in err and "modified since it was applied" in err
    rc, _, err = run("migrate", "up", "all", env={"MIGRATOR_STRICT": "1"})
    assert rc == 2 and "modified since it was applied" in err
    shutil.rmtree(mdir / t(2))
    flat(mdir, t(1), "CREATE TABLE a (x INT);\n")
    flat(mdir, t(3), "CREATE TABLE c (x INT);\n")
    rc, _, err = run("migrate", "up", "all")
    assert rc == 2
    for phrase in ("Migration history mismatch detected!", "Position: Migration #2",
                   "Database has:",
                   "Filesystem has:", "Full filesystem migrations", "Full database migrations"):
        assert phrase in err
    rc, out, err = run("--force", "migrate", "up", "all")
    assert rc == 0 and out.strip() == f"applied {t(3)}"
    rc, out, _ = run("status")
    assert "missing" in out


def test_plain_db_path_url(tmp_path: Path, mdir: Path, cli: Cli) -> None:
    flat(mdir, t(1), "CREATE TABLE a (x INT);\n")
    target = tmp_path / "plain.sqlite3"
    rc, _, err = cli("migrator", ["-u", str(target), "-d", str(mdir), "migrate", "up"],
                     {"PATH": os.environ["PATH"]})
    assert rc == 0, err
    assert history(target) == [t(1)]


def test_sqlite3_missing_is_127(run: Run, mdir: Path, tmp_path: Path) -> None:
    flat(mdir, t(1), "CREATE TABLE a (x INT);\n")
    rc, _, err = run("migrate", "up", env={"PATH": str(tmp_path)})
    assert rc == 127 and "sqlite3 not found" in err


def test_concurrent_sqlite_migrators(db: Path, mdir: Path) -> None:
    flat(mdir, t(0), "CREATE TABLE runlog (name TEXT);\n")
    for i in range(1, 21):
        flat(mdir, t(i), f"INSERT INTO runlog VALUES ('{t(i)}');\n")
    env = {**os.environ, "DB_URL": str(db), "MIGRATION_DIR": str(mdir)}
    procs = [subprocess.Popen([sys.executable, "-m", "db_tool.cli.migrator", "migrate", "up",
                               "all"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for _ in range(5)]
    results = [(*p.communicate(timeout=120), p.returncode) for p in procs]
    for _, err, rc in results:
        assert rc == 0, err
    assert history(db) == [t(i) for i in range(21)]
    assert rows(db, "SELECT count(*), count(DISTINCT name) FROM runlog") == [(20, 20)]


def test_relative_migration_dir_and_nested_read_from_the_working_dir(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MIGRATION_DIR=migration (the default) with a relative .read inside: sqlite3 runs from our
    working directory, so the nested path resolves there, as in the original."""
    monkeypatch.chdir(tmp_path)
    flat(tmp_path / "migration", t(1), "CREATE TABLE items (v TEXT);\n", "DROP TABLE items;\n")
    write(tmp_path / "migration" / t(2) / "up" / "entrypoint.sql",
          f".read migration/{t(2)}/up/part.sql\n")
    write(tmp_path / "migration" / t(2) / "up" / "part.sql", "INSERT INTO items VALUES ('x');\n")
    write(tmp_path / "migration" / t(2) / "down" / "entrypoint.sql", "DELETE FROM items;\n")
    run = runner(cli, "sqlite://app.db", Path("migration"), base={"PATH": os.environ["PATH"]})
    rc, out, err = run("migrate", "up", "all")
    assert rc == 0, err
    assert out.splitlines() == [f"applied {t(1)}", f"applied {t(2)}"]
    assert rows(tmp_path / "app.db", "SELECT v FROM items") == [("x",)]
    rc, _, err = run("migrate", "down", "2")
    assert rc == 0, err
    assert history(tmp_path / "app.db") == []


def test_migration_ending_our_transaction_is_not_recorded(
    run: Run, db: Path, mdir: Path
) -> None:
    flat(mdir, t(1), "CREATE TABLE a (x INT);\nCOMMIT;\nCREATE TABLE b (x INT);\n")
    rc, _, err = run("migrate", "up")
    assert rc == 4
    assert f"migration {t(1)} (up) ended the migrator's transaction itself (COMMIT)" in err
    assert history(db) == []
    tables = {r[0] for r in rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"a", "b"} <= tables


def test_begin_commit_file_runs_as_its_own_transaction(run: Run, db: Path, mdir: Path) -> None:
    """The original fails on these under SQLite (BEGIN inside its BEGIN); ours runs them."""
    flat(mdir, t(1), "BEGIN;\nCREATE TABLE a (x INT);\nCOMMIT;\n", "BEGIN;\nDROP TABLE a;\nEND;\n")
    rc, out, err = run("migrate", "up")
    assert (rc, out) == (0, f"applied {t(1)}\n"), err
    assert run("migrate", "down")[0] == 0
    assert history(db) == []


@pytest.mark.parametrize("suffix", [".db", ".sqlite", ".sqlite3", "sqlite://"])
def test_sqlite_every_url_form_migrates_and_records_the_version(
    suffix: str, tmp_path: Path, mdir: Path, cli: Cli
) -> None:
    flat(mdir, t(1), "CREATE TABLE a (x INT);\n", "DROP TABLE a;\n")
    if suffix == "sqlite://":
        target = tmp_path / "noext"
        url = f"sqlite://{target}"
    else:
        target = tmp_path / f"app{suffix}"
        url = str(target)
    env = {"PATH": os.environ["PATH"]}
    rc, _, err = cli("migrator", ["-u", url, "-d", str(mdir), "migrate", "up", "all"], env)
    assert rc == 0, err
    con = sqlite3.connect(target)
    try:
        assert con.execute("SELECT name FROM hectic_migration").fetchall() == [(t(1),)]
        assert con.execute("SELECT name, version FROM hectic_version").fetchall() == [
            ("hectic", "0.1.0")]
    finally:
        con.close()


def test_sqlite_refusals_status_json_and_identical_contents(tmp_path: Path, mdir: Path,
                                                            cli: Cli) -> None:
    db = tmp_path / "edges.db"
    run_ = runner(cli, f"sqlite://{db}", mdir, base={"PATH": os.environ["PATH"]})

    flat(mdir, t(1), "CREATE TABLE a (x INT);\n", "DROP TABLE a;\n")
    flat(mdir, t(2), "CREATE TABLE b (x INT);\n", "DROP TABLE b;\n")
    rc, _, err = run_("migrate", "down")
    assert rc == 1 and "cannot migrate down: no migrations applied" in err
    rc, _, err = run_("migrate", "up", "3")
    assert rc == 1 and "not enough migrations" in err
    rc, _, err = run_("migrate", "up", "x")
    assert rc == 1 and "up argument not a number or 'all'" in err
    assert run_("migrate", "up", "1")[0] == 0
    rc, out, _ = run_("fetch", "--json", "--exit-code")
    assert rc == 1
    data = json.loads(out)
    assert [(m["name"], m["state"]) for m in data["migrations"]] == [
        (t(1), "applied"), (t(2), "pending")]
    assert data["migrations"][0]["applied_at"].endswith("Z")
    rc, out, _ = run_("migrate", "to", t(1))
    assert rc == 0 and "already at" in out
    rc, _, err = run_("migrate", "down", "2")
    assert rc == 1 and "would go before first migration" in err
    # Identical contents are fine in SQLite too.
    flat(mdir, t(3), "CREATE TABLE b (x INT);\n")
    shutil.rmtree(mdir / t(2))
    flat(mdir, t(2), "CREATE TABLE IF NOT EXISTS c (x INT);\n")
    flat(mdir, t(3), "CREATE TABLE IF NOT EXISTS c (x INT);\n")
    rc, out, err = run_("migrate", "up", "all")
    assert rc == 0, err
    assert out.splitlines() == [f"applied {t(2)}", f"applied {t(3)}"]
