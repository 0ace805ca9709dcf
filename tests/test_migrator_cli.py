"""migrator's command line without a database: parsing, exit codes, create, list, dry-run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from db_tool.cli import migrator
from db_tool.commands.migrate import create as create_migration
from db_tool.migrations import discover
from tests.conftest import Cli, CliResult

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(tmp_path: Path, cli: Cli) -> Run:
    def _run(*argv: str, env: dict[str, str] | None = None) -> CliResult:
        return cli("migrator", argv, {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
                                      **(env or {})})
    return _run


@pytest.mark.parametrize("argv", [[], ["help"], ["--help"], ["-h"]])
def test_help(run: Run, argv: list[str]) -> None:
    rc, out, _ = run(*argv)
    assert rc == 0
    assert out.startswith("usage: migrator")
    for word in ("init", "migrate up", "migrate down", "migrate to", "create", "list", "status",
                 "--db-url", "--migration-dir", "--force", "--set", "DB_URL", "MIGRATION_DIR"):
        assert word in out


@pytest.mark.parametrize("argv", [["migrate", "--help"], ["--help", "migrate"],
                                  ["help", "migrate"], ["migrate", "up", "-h"]])
def test_a_commands_help_is_its_own(run: Run, argv: list[str]) -> None:
    rc, out, _ = run(*argv)
    assert rc == 0
    assert out.startswith("usage: migrator [global options] migrate up")
    for word in ("migrate down", "migrate to", "--force", "--strict", "--set", "Examples:"):
        assert word in out
    assert "create" not in out


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_is_the_original_migrators_line_then_ours(run: Run, flag: str) -> None:
    from db_tool import __version__

    assert run(flag) == (0, f"migrator version 0.0.1 (db-tool {__version__})\n", "")
    assert run("list", flag)[0] == 0  # anywhere, as the original's loop sees it


# The original's messages (its `log error` text), exit codes and, after `;`, our hint.
@pytest.mark.parametrize(("argv", "code", "message"), [
    (["list", "migrate"], 2, "ambiguous subcommand, decide list or migrate"),
    (["status", "init"], 2, "ambiguous subcommand, decide status or init"),
    (["migrate", "to", "up"], 2, "ambiguous migrate subcommand, decide to or up"),
    (["migrate", "up", "down"], 2, "ambiguous migrate subcommand, decide up or down"),
    (["init", "--wat"], 9, "init argument --wat does not exists"),
    (["--wat", "init"], 9, "init argument --wat does not exists"),
    (["init", "extra"], 9, "init subcommand extra does not exists"),
    (["list", "--force"], 9, "list argument --force does not exists"),
    (["list", "-f"], 9, "list argument -f does not exists"),
    (["create", "--json"], 9, "create argument --json does not exists"),
    (["create", "x"], 9, "create subcommand x does not exists"),
    (["--wat"], 1, "no subcommand specified. Use 'migrator help' for usage information."),
    (["-u", "x.db"], 1, "no subcommand specified. Use 'migrator help' for usage information."),
    (["frobnicate"], 1, "no subcommand specified. Use 'migrator help' for usage information."),
    (["frobnicate", "list"], 9, "list subcommand frobnicate does not exists"),
    (["migrate", "sideways"], 3, "no migrate subcommand specified"),
    (["list", "extra"], 9, "list subcommand extra does not exists"),
    (["migrate", "up", "1", "2"], 1, "`migrate up` too many arguments"),
    (["migrate", "to", "a", "b"], 1, "`migrate to` too many arguments"),
    (["migrate", "up", "--wat"], 1, "`migrate up` argument --wat does not exists"),
    (["migrate", "down", "--raw"], 1, "`migrate down` argument --raw does not exists"),
    (["--name", "x", "migrate", "to", "y"], 1, "`migrate to` argument --name does not exists"),
    (["init"], 3, "no DB_URL or --db-url specified"),
    (["migrate", "up"], 3, "no DB_URL or --db-url specified"),
    (["status"], 3, "no DB_URL or --db-url specified"),
    (["migrate"], 3, "no migrate subcommand specified"),
    (["migrate", "to"], 1, "no migration name specified"),
    (["migrate", "to", ""], 1, "no migration name specified"),
    (["-u"], 3, "option -u needs a value"),
    (["migrate", "up", "x"], 1, "up argument not a number or 'all'"),
    (["migrate", "up", "last5"], 1, "up argument not a number or 'all'"),
    (["migrate", "down", "two"], 1, "down argument not a number"),
    (["migrate", "up", "-u", "sqlite://x.db", "--set", "novalue"], 1, "expected VAR=VALUE"),
    (["list", "--raw=yes"], 9, "takes no value"),
])
def test_argument_errors(run: Run, argv: list[str], code: int, message: str) -> None:
    rc, out, err = run(*argv)
    assert rc == code, err
    assert message in err
    assert err.startswith("migrator: error: ")
    assert len(err.strip().splitlines()) == 1
    assert out == ""


def test_inherits_is_accepted_with_a_warning(run: Run, tmp_path: Path) -> None:
    rc, out, err = run("--inherits", "hectic.created_at", "-d", str(tmp_path), "list")
    assert rc == 0 and out == ""
    assert "--inherits is deprecated and ignored" in err


def test_init_dry_run_needs_no_database(run: Run) -> None:
    from db_tool import bundle

    rc, out, err = run("init", "--dry-run")
    assert rc == 0, err
    assert out == bundle.render()
    assert "hectic.migration" in out
    rc, out, _ = run("init", "--dry-run", "-u", "sqlite:///nonexistent/dir/x.db")
    assert rc == 0 and "hectic_migration" in out
    assert not Path("/nonexistent/dir/x.db").exists()


def test_psql_missing_is_127(run: Run, tmp_path: Path) -> None:
    """PATH and PG_BIN_DIR of the env main() is given (not os.environ) say where psql is."""
    from db_tool import psql

    empty = tmp_path / "empty"
    empty.mkdir()
    psql._psql_for.cache_clear()
    try:
        (tmp_path / "m").mkdir()
        rc, _, err = run("-d", str(tmp_path / "m"), "-u", "postgresql:///x", "migrate", "up",
                         env={"PATH": str(empty), "PG_BIN_DIR": str(empty)})
    finally:
        psql._psql_for.cache_clear()
    assert rc == 127, err
    assert "psql" in err or "PG_BIN_DIR" in err


def test_keyboard_interrupt_is_130(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object) -> int:
        raise KeyboardInterrupt
    monkeypatch.setattr(migrator, "cmd_list", boom)
    assert run("list")[0] == 130


def test_unexpected_exception_is_13_with_traceback(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: object) -> int:
        raise RuntimeError("kaputt")
    monkeypatch.setattr(migrator, "cmd_list", boom)
    rc, _, err = run("list")
    assert rc == 13
    assert "Traceback" in err and "kaputt" in err


# --------------------------------------------------------------------------- create / list


def test_create_names_and_content(run: Run, tmp_path: Path) -> None:
    d = tmp_path / "new" / "migrations"  # created on demand
    before = time.strftime("%Y%m%d%H%M%S")  # local time, as the original's `date`
    rc, out, err = run("-d", str(d), "create", "--name", "add users", env={"TZ": "UTC"})
    assert rc == 0, err
    path = Path(out.strip())
    assert err == f"migrator: created migration: {path}\n"
    assert path.parent == d
    assert re.fullmatch(r"[0-9]{14}-add users\.sql", path.name)
    assert before <= path.name[:14] <= time.strftime("%Y%m%d%H%M%S")
    assert path.read_text() == "-- migrate:up\n\n\n-- migrate:down\n\n"
    rc, out, _ = run("create", "-n", "x", env={"MIGRATION_DIR": str(d)})
    assert rc == 0
    rc, out, _ = run("-d", str(d), "create")
    word = Path(out.strip()).name[15:-4]
    assert re.fullmatch(r"[a-z]{6}", word)
    assert [m.layout for m in discover(d)] == ["file"] * 3
    assert all(not m.missing for m in discover(d))


def test_create_defaults_to_dot_migration(run: Run, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rc, out, _ = run("create", "-n", "here")
    assert rc == 0 and Path(out.strip()).parent == Path("migration")


def test_create_rejects_slash(run: Run, tmp_path: Path) -> None:
    rc, _, err = run("-d", str(tmp_path), "create", "-n", "a/b")
    assert rc == 1 and "may not contain" in err


def test_creates_in_one_second_never_collide(tmp_path: Path) -> None:
    now = 1_700_000_000.0
    paths = [create_migration(str(tmp_path), name, now=now) for name in ("a", "a", "b", "a")]
    assert len(set(paths)) == 4
    stamps = [Path(p).name[:14] for p in paths]
    assert len(set(stamps)) == 4 and stamps == sorted(stamps)
    assert [m.name[15:] for m in discover(tmp_path)] == ["a", "a", "b", "a"]


def test_concurrent_creates_in_processes(tmp_path: Path) -> None:
    code = (
        "import sys; from db_tool.commands.migrate import create as create_migration; "
        "print(create_migration(sys.argv[1], 'same', now=1700000000.0))"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True) for _ in range(8)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs)) == 8
    assert len({Path(o).name[:14] for o in outs}) == 8
    assert len(discover(tmp_path)) == 8


def test_list_raw_and_missing(run: Run, tmp_path: Path) -> None:
    (tmp_path / "20240101000001-full").mkdir()
    (tmp_path / "20240101000001-full" / "up.sql").write_text("")
    (tmp_path / "20240101000001-full" / "down.sql").write_text("")
    (tmp_path / "20240101000002-bare").mkdir()
    (tmp_path / "20240101000003-noup").mkdir()
    (tmp_path / "20240101000003-noup" / "down.sql").write_text("")
    rc, out, _ = run("-d", str(tmp_path), "list")
    assert rc == 0
    assert out.splitlines() == [
        "20240101000001-full",
        "20240101000002-bare: missing up.sql down.sql",
        "20240101000003-noup: missing up.sql",
    ]
    rc, out, _ = run("list", "-r", env={"MIGRATION_DIR": str(tmp_path)})
    assert out.splitlines() == ["20240101000001-full", "20240101000002-bare",
                                "20240101000003-noup"]


def test_list_missing_dir_is_3(run: Run, tmp_path: Path) -> None:
    rc, _, err = run("-d", str(tmp_path / "nope"), "list")
    assert rc == 3 and "does not exist" in err


def test_two_layouts_is_2(run: Run, tmp_path: Path) -> None:
    (tmp_path / "20240101000001-x").mkdir()
    (tmp_path / "20240101000001-x.sql").write_text("-- migrate:up\n")
    rc, _, err = run("-d", str(tmp_path), "list")
    assert rc == 2 and "two layouts" in err


@pytest.mark.parametrize("argv", [
    ["-u", "URL", "--force", "migrate", "up"],
    ["--force", "-uURL", "migrate", "up"],
    ["migrate", "--db-url=URL", "up", "-f"],
    ["--db-url", "URL", "migrate", "up", "--force"],
])
def test_options_may_stand_anywhere(argv: list[str]) -> None:
    args = migrator.parse_args(argv)
    assert args.command == "migrate" and args.positional == ["up"]
    assert args.options == {"db_url": "URL", "force": True}


def test_set_is_repeatable() -> None:
    args = migrator.parse_args(["migrate", "up", "--set", "a=1", "-v", "b=x=y", "--set=c="])
    assert args.options["set"] == ["a=1", "b=x=y", "c="]
    assert migrator._variables(args.options["set"]) == {"a": "1", "b": "x=y", "c": ""}


def test_installed_script_help_and_version() -> None:
    script = Path(sys.executable).parent / "migrator"
    argv0 = [str(script)] if script.exists() else [sys.executable, "-m", "db_tool.cli.migrator"]
    out = subprocess.run([*argv0, "--version"], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.startswith("migrator version 0.0.1 (db-tool ")
    out = subprocess.run(argv0, capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "usage: migrator" in out.stdout
    out = subprocess.run([*argv0, "init", "--wat"], capture_output=True, text=True, check=False)
    assert out.returncode == 9 and out.stderr == (
        "migrator: error: init argument --wat does not exists; see migrator --help\n")


def test_import_is_cheap() -> None:
    code = ("import sys; import db_tool.cli.migrator; "
            "heavy = {'db_tool.history', 'db_tool.migrations', 'db_tool.bundle', 'json', "
            "'sqlite3', 'db_tool.psql', 'subprocess'}; print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_create_stamps_local_time_as_the_original(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Asia/Kathmandu")  # UTC+05:45: local and UTC differ
    time.tzset()
    try:
        path = create_migration(str(tmp_path), "x", now=1_700_000_000.0)  # 22:13:20 UTC
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert Path(path).name == "20231115035820-x.sql"


def test_list_prints_the_originals_missing_words_for_both_layouts(
    run: Run, tmp_path: Path
) -> None:
    (tmp_path / "20240101000001-entry" / "up").mkdir(parents=True)
    (tmp_path / "20240101000001-entry" / "up" / "entrypoint.sql").write_text("")
    (tmp_path / "20240101000002-entry-no-up" / "down").mkdir(parents=True)
    (tmp_path / "20240101000002-entry-no-up" / "down" / "entrypoint.sql").write_text("")
    (tmp_path / "20240101000003-created.sql").write_text("-- Write your migration SQL here\n")
    rc, out, err = run("-d", str(tmp_path), "list")
    assert rc == 0
    assert out.splitlines() == [
        "20240101000001-entry: missing down.sql",
        "20240101000002-entry-no-up: missing up.sql",
    ]
    assert err == (
        f"migrator: warning: skipping {tmp_path}/20240101000003-created.sql: no '-- migrate:up' "
        "line, so it is not a migration; add '-- migrate:up' (and '-- migrate:down') sections, "
        f"or move it to {tmp_path}/20240101000003-created/up.sql\n"
    )


@pytest.mark.parametrize("value", [
    {"migrations": [], "summary": {}},
    {"migrations": [{"name": "20240101000001-é \"x\"\n", "state": "applied", "applied_at": None,
                     "hash": "ab", "applied_hash": None}],
     "summary": {"applied": 1, "pending": 0}},
    [True, False, None, -3, "\u2028\x00\\", [], {}, [[{"k": [1]}]]],
])
def test_status_json_is_what_json_dumps_writes(value: object) -> None:
    import json

    from db_tool.cli.migrator import json_text

    assert json_text(value) == json.dumps(value, indent=2)
