"""The wire-client reads behind a no-op `migrate` and `status` (db_tool.history_wire)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from db_tool.history_wire import Address, address
from tests.conftest import Cli
from tests.migrator_support import flat


@pytest.mark.parametrize(("url", "env", "expected"), [
    ("postgresql://me@/app?host=/run/x&port=5611", {}, Address("/run/x", 5611, "me", "app")),
    ("postgres://me@%2Frun%2Fx:5499/app", {}, Address("/run/x", 5499, "me", "app")),
    ("postgresql:///app?host=/s&user=u%20v", {}, Address("/s", 5432, "u v", "app")),
    ("postgresql://me@/?host=/s", {"PGPORT": "7"}, Address("/s", 7, "me", "me")),
    ("postgresql://me@/app", {"PGHOST": "/h"}, Address("/h", 5432, "me", "app")),
    ("postgresql://me@/app?host=/s&application_name=x", {}, Address("/s", 5432, "me", "app")),
    ("postgresql://me:secret@/app?host=/s", {}, None),  # a password: psql's business
    ("postgresql://me@/app?host=/s&password=x", {}, None),
    ("postgresql://me@/app?host=/s&sslmode=require", {}, None),
    ("postgresql://me@/app?host=/s&sslmode=disable", {}, Address("/s", 5432, "me", "app")),
    ("postgresql://me@/app?sslmode=prefer&host=/s", {}, Address("/s", 5432, "me", "app")),
    ("postgresql://me@localhost/app", {}, None),  # TCP
    ("postgresql://me@/app", {}, None),  # libpq's compiled-in socket dir: not guessed
    ("postgresql://me@h1,h2/app", {}, None),
    ("host=/s dbname=app", {}, None),
    ("app.db", {}, None),
])
def test_address(url: str, env: dict[str, str], expected: Address | None) -> None:
    assert address(url, env) == expected


def _logging_psql(tmp_path: Path) -> tuple[Path, Path]:
    real = shutil.which("psql")
    assert real
    wrapper_dir = tmp_path / "bin"
    wrapper_dir.mkdir()
    log = tmp_path / "calls.log"
    log.write_text("")
    (wrapper_dir / "psql").write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n')
    (wrapper_dir / "psql").chmod(0o755)
    return wrapper_dir, log


@pytest.mark.slow
def test_noop_migrate_and_status_spawn_no_psql(db_url: str, tmp_path: Path) -> None:
    mdir = tmp_path / "migration"
    for i in (1, 2):
        flat(mdir, f"2024010100000{i}-m{i}", "SELECT 1;\n", "SELECT 1;\n")
    wrapper_dir, log = _logging_psql(tmp_path)
    env = {**os.environ, "PG_BIN_DIR": str(wrapper_dir), "DB_URL": db_url,
           "MIGRATION_DIR": str(mdir)}

    def migrator(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "db_tool.cli.migrator", *argv], env=env,
                              capture_output=True, text=True, check=False)

    assert migrator("migrate", "up", "all").returncode == 0
    assert len(log.read_text().splitlines()) == 1
    log.write_text("")
    for argv in (["migrate", "up", "all"], ["migrate", "to", "latest"], ["migrate", "down", "0"],
                 ["status"], ["status", "--json"]):
        out = migrator(*argv)
        assert out.returncode == 0, out.stderr
    noop = migrator("migrate", "up", "all")
    assert noop.stdout == "database already at 20240101000002-m2\n"
    assert log.read_text() == ""  # all answered over the wire client
    out = migrator("migrate", "up")  # nothing left for one step: the original's exit 1
    assert out.returncode == 1 and "cannot migrate up 1 step(s)" in out.stderr
    assert log.read_text() == ""


@pytest.mark.slow
def test_bundle_is_not_reapplied_at_the_same_version_and_init_restores_it(
    pg: Any, db_url: str, tmp_path: Path, cli: Cli
) -> None:
    from tests.migrator_support import runner

    mdir = tmp_path / "migration"
    flat(mdir, "20240101000001-m1", "SELECT 1;\n")
    run = runner(cli, db_url, mdir)
    assert run("migrate", "up", "all")[0] == 0
    pg.psql("DROP FUNCTION hectic.get_secret(text)", db_url)
    flat(mdir, "20240101000002-m2", "SELECT 2;\n")
    rc, out, err = run("migrate", "up", "all")
    assert (rc, out) == (0, "applied 20240101000002-m2\n"), err
    missing = "SELECT to_regprocedure('hectic.get_secret(text)') IS NULL"
    assert pg.psql(missing, db_url) == "t"
    assert run("init")[0] == 0
    assert pg.psql(missing, db_url) == "f"


# What a no-op `migrate` and `status` must not import: each costs more than their one query.
HEAVY = ("dataclasses", "inspect", "typing", "argparse", "pathlib", "urllib.parse", "socket",
         "subprocess", "db_tool.psql", "db_tool.history_pg", "re", "shutil", "tempfile",
         "hashlib", "json", "db_tool.sqlsplit", "contextlib")


@pytest.mark.slow
def test_noop_migrate_and_status_import_nothing_heavy(db_url: str, tmp_path: Path) -> None:
    mdir = tmp_path / "migration"
    flat(mdir, "20240101000001-m1", "SELECT 1;\n", "SELECT 1;\n")
    env = {**os.environ, "DB_URL": db_url, "MIGRATION_DIR": str(mdir)}
    # as the launchers run it (db-tool-run migrator ...)
    probe = ("import os, sys\n"
             "def report(rc, real=os._exit):\n"  # the launcher ends the migrator with os._exit
             f"    print([m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)\n"
             "    sys.stderr.flush()\n"
             "    real(rc)\n"
             "os._exit = report\n"
             "sys.argv = ['db-tool-run', 'migrator', *sys.argv[1:]]\n"
             "from db_tool.cli.launch import entry\nentry()\n")
    applied = subprocess.run([sys.executable, "-m", "db_tool.cli.migrator", "migrate", "up", "all"],
                             env=env, capture_output=True, text=True, check=False)
    assert applied.returncode == 0, applied.stderr
    for argv in (["migrate", "up", "all"], ["-u", db_url, "-d", str(mdir), "migrate", "up", "all"],
                 ["status"], ["-d", str(mdir), "status", "--json"]):
        out = subprocess.run([sys.executable, "-c", probe, *argv], env=env, capture_output=True,
                             text=True, check=False)
        assert out.returncode == 0, out.stderr
        if argv[-1] == "all":
            assert out.stdout == "database already at 20240101000001-m1\n", out.stderr
        assert out.stderr.strip().splitlines()[-1] == "[]", (argv, out.stderr)
