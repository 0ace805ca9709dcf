"""The installed launchers (scripts/): every command exists and answers --help; `db-tool`
is `database`."""

from __future__ import annotations

import pytest

from tests.helpers import base_env, run_cmd, script


@pytest.mark.parametrize("name", ["database", "db-tool", "postgres-init", "postgres-cleanup",
                                  "migrator", "db-ops"])
def test_every_launcher_is_installed_and_has_help(name: str) -> None:
    r = run_cmd([script(name), "--help"], base_env())
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout


def test_db_tool_launcher_is_the_database_command() -> None:
    a = run_cmd([script("database"), "--help"], base_env())
    b = run_cmd([script("db-tool"), "--help"], base_env())
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout
