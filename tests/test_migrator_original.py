"""Ours next to the original migrator.sh (run for real with dash and psql, from ../shared).

The original needs two Nix-only pieces: the helper library's `log` (stood in for by a function
printing `<level>: <text>` to stderr) and the bundle paths substituted into
apply-hectic-bundle.sh; see tests.migrator_support.original_migrator."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from db_tool.migrations import discover
from tests.conftest import Cli
from tests.migrator_support import (
    Run,
    flat,
    original_hash,
    original_migrator,
    pg_history,
    runner,
    write,
)


def t(i: int) -> str:
    return f"2024010100{i:04d}-m{i}"


def corpus(mdir: Path) -> None:
    """The original's two layouts; the entrypoint includes a sibling with \\ir."""
    flat(mdir, t(1), "CREATE TABLE items (v text) INHERITS (hectic.created_at);\n",
         "DROP TABLE items;\n")
    write(mdir / t(2) / "up" / "entrypoint.sql", "\\ir part.sql\n")
    write(mdir / t(2) / "up" / "part.sql", "INSERT INTO items (v) VALUES ('two');\n")
    write(mdir / t(2) / "down" / "entrypoint.sql", "DELETE FROM items;\n")
    flat(mdir, t(3), "ALTER TABLE items ADD COLUMN n int;\n",
         "ALTER TABLE items DROP COLUMN n;\n")


@pytest.fixture
def original(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    argv0 = original_migrator(tmp_path)

    def _run(url: str, mdir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DB_URL": url,
               "MIGRATION_DIR": str(mdir)}
        return subprocess.run([*argv0, *argv], env=env, capture_output=True, text=True,
                              check=False, stdin=subprocess.DEVNULL, timeout=120)

    return _run


def test_hash_is_the_one_the_original_records(tmp_path: Path) -> None:
    corpus(tmp_path)
    files = [tmp_path / t(1) / "up.sql", tmp_path / t(2) / "up" / "entrypoint.sql",
             tmp_path / t(3) / "up.sql"]
    assert [m.hash for m in discover(tmp_path)] == [original_hash(f) for f in files]


def test_history_written_by_the_original_is_not_modified(
    original: Any, pg: Any, db_url: str, tmp_path: Path, cli: Cli
) -> None:
    mdir = tmp_path / "migration"
    corpus(mdir)
    done = original(db_url, mdir, "migrate", "up", "all")
    assert done.returncode == 0, done.stderr
    assert pg_history(pg, db_url) == [t(1), t(2), t(3)]
    run: Run = runner(cli, db_url, mdir)
    rc, out, err = run("status", "--json", "--strict")
    assert rc == 0, err
    assert [(m["name"], m["state"]) for m in json.loads(out)["migrations"]] == [
        (t(i), "applied") for i in (1, 2, 3)]


def test_ours_goes_on_from_the_originals_history(
    original: Any, pg: Any, db_url: str, tmp_path: Path, cli: Cli
) -> None:
    mdir = tmp_path / "migration"
    corpus(mdir)
    done = original(db_url, mdir, "migrate", "up", "2")
    assert done.returncode == 0, done.stderr
    run: Run = runner(cli, db_url, mdir)
    rc, out, err = run("migrate", "up", "all", "--strict")
    assert (rc, out) == (0, f"applied {t(3)}\n"), err
    assert "modified" not in err
    rc, out, err = run("migrate", "down", "3")
    assert rc == 0, err
    assert pg_history(pg, db_url) == []


def test_original_goes_on_from_our_history(
    original: Any, pg: Any, db_url: str, tmp_path: Path, cli: Cli
) -> None:
    mdir = tmp_path / "migration"
    corpus(mdir)
    run: Run = runner(cli, db_url, mdir)
    rc, _, err = run("migrate", "up", "2")
    assert rc == 0, err
    done = original(db_url, mdir, "migrate", "up")
    assert done.returncode == 0, done.stderr
    assert pg_history(pg, db_url) == [t(1), t(2), t(3)]
    again = original(db_url, mdir, "migrate", "up", "all")
    assert again.returncode == 0 and f"database already at {t(3)}" in again.stderr


# argv after `migrate`-ready state (two of three applied), the exit code both give, and the
# original's words (its `log error` text) that ours must contain.
EDGES = [
    (["migrate", "up"], 0, f"successfully migrated to {t(3)}"),
    (["migrate", "up", "0"], 0, f"database already at {t(2)}"),
    (["migrate", "up", "5"], 1, "cannot migrate up 5 step(s): not enough migrations"),
    (["migrate", "up", "all"], 0, f"successfully migrated to {t(3)}"),
    (["migrate", "up", "x"], 1, "up argument not a number or 'all'"),
    (["migrate", "up", "--bogus"], 1, "`migrate up` argument --bogus does not exists"),
    (["migrate", "down", "0"], 0, f"database already at {t(2)}"),
    (["migrate", "down", "3"], 1, "cannot migrate down 3 step(s): would go before first migration"),
    (["migrate", "down", "x"], 1, "down argument not a number"),
    (["migrate", "down"], 0, f"successfully migrated down to {t(1)}"),
    (["migrate", "down", "2"], 0, "successfully migrated down to clean state"),
    (["migrate", "to"], 1, "no migration name specified"),
    (["migrate", "to", t(1), t(2)], 1, "`migrate to` too many arguments"),
    (["migrate", "to", "-x"], 1, "`migrate to` argument -x does not exists"),
    (["migrate", "to", t(2)], 0, f"database already at {t(2)}"),
    (["migrate", "to", "latest"], 0, f"successfully migrated to {t(3)}"),
    (["migrate", "up", "down"], 2, "ambiguous migrate subcommand, decide up or down"),
    (["list", "migrate"], 2, "ambiguous subcommand, decide list or migrate"),
    (["list", "--bogus"], 9, "list argument --bogus does not exists"),
    (["list", "extra"], 9, "list subcommand extra does not exists"),
    (["init", "--bogus"], 9, "init argument --bogus does not exists"),
    (["init", "extra"], 9, "init subcommand extra does not exists"),
    (["create", "--bogus"], 9, "create argument --bogus does not exists"),
    (["frobnicate"], 1, "no subcommand specified. Use 'migrator help' for usage information."),
]


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "code", "words"), EDGES)
def test_edge_cases_exit_and_say_what_the_original_does(
    original: Any, make_db: Callable[[], str], tmp_path: Path,
    cli: Cli, argv: list[str], code: int, words: str,
) -> None:
    mdir = tmp_path / "migration"
    corpus(mdir)
    theirs_db, ours_db = make_db(), make_db()
    ready = original(theirs_db, mdir, "migrate", "up", "2")
    assert ready.returncode == 0, ready.stderr
    theirs = original(theirs_db, mdir, *argv)
    assert theirs.returncode == code, theirs.stderr
    assert words in theirs.stderr
    run: Run = runner(cli, ours_db, mdir)
    assert run("migrate", "up", "2")[0] == 0
    rc, out, err = run(*argv)
    assert rc == code, err
    assert words in out + err


def test_version_line_starts_as_the_originals(original: Any, tmp_path: Path,
                                              cli: Cli) -> None:
    theirs = original("x", tmp_path, "--version")
    run: Run = runner(cli, "x", tmp_path)
    rc, out, _ = run("--version")
    assert theirs.returncode == rc == 0
    assert out.startswith(theirs.stdout.rstrip("\n") + " ")


def test_list_prints_what_the_original_prints(original: Any, tmp_path: Path,
                                              cli: Cli) -> None:
    mdir = tmp_path / "migration"
    corpus(mdir)
    write(mdir / "20240101000009-no-down" / "up" / "entrypoint.sql", "SELECT 1;\n")
    (mdir / "20240101000010-empty").mkdir()
    write(mdir / "20240101000011-only-down" / "down.sql", "SELECT 1;\n")
    run: Run = runner(cli, "x", mdir)
    for argv in (["list"], ["list", "--raw"]):
        theirs = original("x", mdir, *argv)
        assert theirs.returncode == 0, theirs.stderr
        assert run(*argv)[:2] == (0, theirs.stdout)


def test_identical_up_files_apply_over_the_originals_table(
    original: Any, pg: Any, db_url: str, tmp_path: Path, cli: Cli
) -> None:
    """The original's table has hash UNIQUE; our bundle lifts it, so both apply."""
    mdir = tmp_path / "migration"
    flat(mdir, t(1), "SELECT 1;\n")
    init = original(db_url, mdir, "init")
    assert init.returncode == 0, init.stderr
    flat(mdir, t(2), "SELECT 1;\n")
    run: Run = runner(cli, db_url, mdir)
    rc, out, err = run("migrate", "up", "all")
    assert (rc, out) == (0, f"applied {t(1)}\napplied {t(2)}\n"), err
    assert pg_history(pg, db_url) == [t(1), t(2)]
