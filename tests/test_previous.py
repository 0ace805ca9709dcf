"""A fresh init keeps the cluster it replaces (previous.py) and `database restore --previous`."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.helpers import run_cmd, script


def _psql(env: dict[str, str], sql: str) -> subprocess.CompletedProcess[str]:
    wd = Path(env["PG_WORKING_DIR"])
    return subprocess.run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", str(wd / "sock"),
                           "-p", env["PG_PORT"], "-d", "testdb", "-c", sql],
                          capture_output=True, text=True, check=False, env=env)


def test_fresh_init_over_an_empty_cluster_keeps_nothing(cluster_env: dict[str, str]) -> None:
    wd = Path(cluster_env["PG_WORKING_DIR"])
    assert run_cmd([script("postgres-init")], cluster_env).returncode == 0
    r = run_cmd([script("postgres-init")], cluster_env)
    assert r.returncode == 0, r.stderr
    assert not (wd / "data.previous").exists()
    assert "previous" not in r.stderr


def test_fresh_init_keeps_a_cluster_holding_data_and_restore_previous_brings_it_back(
    cluster_env: dict[str, str],
) -> None:
    wd = Path(cluster_env["PG_WORKING_DIR"])
    assert run_cmd([script("postgres-init")], cluster_env).returncode == 0
    assert _psql(cluster_env, "create table precious(x int); insert into precious values (7)"
                 ).returncode == 0
    r = run_cmd([script("postgres-init")], cluster_env)
    assert r.returncode == 0, r.stderr
    assert f"in {wd / 'data.previous'}" in r.stderr
    assert "database restore --previous" in r.stderr and "PG_REUSE=1" in r.stderr
    assert "MiB" in r.stderr or "KiB" in r.stderr
    assert _psql(cluster_env, "select * from precious").returncode != 0  # fresh: gone here
    r = run_cmd([script("database"), "restore", "--previous"], cluster_env)
    assert r.returncode == 0, r.stderr
    assert _psql(cluster_env, "select * from precious").stdout.strip() == "7"
    # the fresh cluster it replaced is now the previous one: running it again undoes it
    assert (wd / "data.previous" / "PG_VERSION").is_file()


def test_only_one_previous_generation_is_kept(cluster_env: dict[str, str]) -> None:
    wd = Path(cluster_env["PG_WORKING_DIR"])
    for value in (1, 2):
        assert run_cmd([script("postgres-init")], cluster_env).returncode == 0
        assert _psql(cluster_env, f"create table gen{value}(x int)").returncode == 0
    assert run_cmd([script("postgres-init")], cluster_env).returncode == 0
    deadline = time.monotonic() + 10
    while list(wd.glob(".trash-*")) and time.monotonic() < deadline:
        time.sleep(0.05)  # the generation before is deleted in the background
    assert sorted(p.name for p in wd.iterdir() if p.name.startswith("data")) == \
        ["data", "data.previous"]
    assert run_cmd([script("database"), "restore", "--previous"], cluster_env).returncode == 0
    assert _psql(cluster_env, "select 1 from gen2").returncode == 0
    assert _psql(cluster_env, "select 1 from gen1").returncode != 0


def test_keep_previous_can_be_switched_off(cluster_env: dict[str, str]) -> None:
    env = {**cluster_env, "DB_TOOL_KEEP_PREVIOUS": "0"}
    wd = Path(env["PG_WORKING_DIR"])
    assert run_cmd([script("postgres-init")], env).returncode == 0
    assert _psql(env, "create table t(x int)").returncode == 0
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0, r.stderr
    assert not (wd / "data.previous").exists()


def test_restore_previous_without_one_changes_nothing(cluster_env: dict[str, str]) -> None:
    assert run_cmd([script("postgres-init")], cluster_env).returncode == 0
    r = run_cmd([script("database"), "restore", "--previous"], cluster_env)
    assert r.returncode == 3, r.stderr
    assert "no previous cluster" in r.stderr
    assert _psql(cluster_env, "select 1").returncode == 0
