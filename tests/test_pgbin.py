"""Which PostgreSQL: resolution order, errors, template cache keys."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from db_tool import pgbin
from db_tool.cluster import Cluster, ClusterConfig
from db_tool.errors import NotInstalledError
from tests.helpers import base_env, run_cmd, script


def test_pg_bin_dir_wins(tmp_path: Path) -> None:
    real = pgbin.find().bin_dir
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in pgbin.SERVER_TOOLS:
        (fake / tool).symlink_to(real / tool)
    found = pgbin.find({"PG_BIN_DIR": str(fake), "PATH": os.environ["PATH"]})
    assert found.bin_dir == fake and found.source == "PG_BIN_DIR"


def test_pg_bin_dir_incomplete_exit_127(tmp_path: Path) -> None:
    r = run_cmd([script("postgres-init"), "--version"], base_env(PG_BIN_DIR=str(tmp_path)))
    assert r.returncode == 127
    assert "PG_BIN_DIR" in r.stderr and "initdb" in r.stderr


def test_pg_config_on_path_before_distro_dirs(tmp_path: Path) -> None:
    real = pgbin.find().bin_dir
    wrapper = tmp_path / "pg_config"
    wrapper.write_text(f"#!/bin/sh\nexec {real}/pg_config \"$@\"\n")
    wrapper.chmod(0o755)
    found = pgbin.find({"PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert found.source == "pg_config" and found.bin_dir == real


def test_distro_dir_when_no_pg_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    found = pgbin.find({"PATH": "/nonexistent"})
    assert found.source == "distro"
    assert str(found.bin_dir).startswith("/usr/lib/postgresql/")


def test_nothing_found_is_127_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(pgbin, "_distro_dirs", lambda: [])
    monkeypatch.setattr(pgbin, "_embedded", lambda: None)
    with pytest.raises(NotInstalledError) as info:
        pgbin.find({"PATH": "/nonexistent"})
    assert info.value.exit_code == 127
    assert "apt-get install postgresql" in info.value.message
    assert "db-tool[embedded]" in info.value.message


def test_version_and_describe() -> None:
    install = pgbin.find()
    assert install.major >= pgbin.MIN_MAJOR
    assert install.version in install.describe()


def test_template_key_changes_when_binaries_change(tmp_path: Path) -> None:
    real = pgbin.find().bin_dir
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("initdb", "pg_ctl", "psql"):
        (fake / tool).symlink_to(real / tool)
    (fake / "postgres").write_bytes((real / "postgres").read_bytes()[:1024])
    install = pgbin.PgInstall(fake, "test")
    cluster = Cluster(ClusterConfig(working_dir=tmp_path / "wd"), install)
    key = cluster.template_spec().key()
    assert cluster.template_spec().key() == key
    time.sleep(0.01)
    (fake / "postgres").write_bytes((real / "postgres").read_bytes()[:2048])
    assert cluster.template_spec().key() != key


def _wait_for_template(cache: Path, timeout: float = 120) -> Path:
    """The template is built in the background after the first (cold) fresh init."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list((cache / "db-tool" / "templates").glob("*/ready"))
        if found:
            return found[0].parent
        time.sleep(0.05)
    raise AssertionError(f"no template was built in {cache}")


def _system_id(env: dict[str, str]) -> str:
    ctl = run_cmd([str(pgbin.find().bin_dir / "pg_controldata"),
                   str(Path(env["PG_WORKING_DIR"]) / "data")], env)
    return next(ln for ln in ctl.stdout.splitlines() if "system identifier" in ln)


def test_fresh_clusters_are_copies_of_one_cached_template(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    cache = tmp_path / "cache"
    env = {**cluster_env, "XDG_CACHE_HOME": str(cache), "DB_TOOL_NO_SPARE": "1"}
    assert run_cmd([script("postgres-init")], env).returncode == 0
    _wait_for_template(cache)
    ids = []
    for _ in range(2):
        assert run_cmd([script("postgres-init")], env).returncode == 0
        ids.append(_system_id(env))
    templates = list((cache / "db-tool" / "templates").iterdir())
    assert len(templates) == 1 and (templates[0] / "ready").is_file()
    assert ids[0] == ids[1]  # same initdb: both clusters were copied, not initdb'd


def test_cold_fresh_init_builds_the_template_in_the_background_not_by_copying(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    cache = tmp_path / "cache"
    env = {**cluster_env, "XDG_CACHE_HOME": str(cache)}
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0, r.stderr
    first = _system_id(env)
    template = _wait_for_template(cache)
    _wait_for_spare(template / "spares")
    assert run_cmd([script("postgres-init")], env).returncode == 0
    assert _system_id(env) != first  # the first cluster was its own initdb, never cached
    wd = Path(env["PG_WORKING_DIR"])
    assert not list(wd.glob(".db-tool-build-*"))


def _wait_for_spare(spares: Path, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = [p for p in spares.glob("ready-*")] if spares.is_dir() else []
        if ready:
            return ready[0]
        time.sleep(0.05)
    raise AssertionError(f"no spare appeared in {spares}")


def test_fresh_init_claims_a_spare_by_rename_and_prepares_the_next(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    cache = tmp_path / "cache"
    env = {**cluster_env, "XDG_CACHE_HOME": str(cache)}
    assert run_cmd([script("postgres-init")], env).returncode == 0
    template = _wait_for_template(cache)
    spare = _wait_for_spare(template / "spares")
    inode = spare.stat().st_ino
    assert run_cmd([script("postgres-init")], env).returncode == 0
    data = Path(env["PG_WORKING_DIR"]) / "data"
    assert data.stat().st_ino == inode  # the spare became the data dir: renamed, not copied
    assert not spare.exists()
    assert _wait_for_spare(template / "spares") != spare  # and a new one is on its way


def test_no_spare_when_disabled(tmp_path: Path, cluster_env: dict[str, str]) -> None:
    cache = tmp_path / "cache"
    env = {**cluster_env, "XDG_CACHE_HOME": str(cache), "DB_TOOL_NO_SPARE": "1"}
    assert run_cmd([script("postgres-init")], env).returncode == 0
    template = _wait_for_template(cache)
    assert run_cmd([script("postgres-init")], env).returncode == 0
    time.sleep(0.5)
    assert not (template / "spares").exists()


def test_pg_bin_dir_from_the_given_environment_reaches_the_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings are read once from the env handed in (main(argv, env=...)), not os.environ."""
    monkeypatch.delenv("PG_BIN_DIR", raising=False)
    real = pgbin.find().bin_dir
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in pgbin.SERVER_TOOLS:
        (fake / tool).symlink_to(real / tool)
    config = ClusterConfig.from_env({"PG_WORKING_DIR": str(tmp_path / "wd"),
                                     "PG_BIN_DIR": str(fake)})
    install = Cluster(config).install
    assert install.bin_dir == fake and install.source == "PG_BIN_DIR"


def test_newest_distro_installation_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Numeric, not lexical: 15 before 13 before 9."""
    dirs = ["/usr/lib/postgresql/9/bin", "/usr/lib/postgresql/15/bin",
            "/usr/lib/postgresql/13/bin"]
    import glob

    monkeypatch.setattr(glob, "glob", lambda pattern: list(dirs))
    assert [str(d) for d in pgbin._distro_dirs()] == [dirs[1], dirs[2], dirs[0]]


def test_the_major_version_is_read_from_a_distro_layouts_path_only() -> None:
    assert pgbin._major_in_path("/usr/lib/postgresql/15/bin") == 15
    assert pgbin._major_in_path("/usr/lib/postgresql/16/bin/") == 16
    assert pgbin._major_in_path("/opt/postgresql/9/bin") == 9
    for other in ("/usr/lib/postgresql/15/bin//", "/usr/lib/postgresql/x15/bin",
                  "/usr/lib/postgresql/15/sbin", "/usr/lib/postgres/15/bin", "/usr/bin",
                  "/usr/lib/postgresql/\u0661\u0665/bin", "postgresql/15/bin"[:0]):
        assert pgbin._major_in_path(other) is None, other


def test_the_version_is_the_first_number_with_its_minor_in_what_postgres_prints() -> None:
    assert pgbin._first_version("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n") \
        == "15.18"
    assert pgbin._first_version("postgres (PostgreSQL) 17devel") == "17"
    assert pgbin._first_version("postgres (PostgreSQL) 16.") == "16"
    assert pgbin._first_version("postgres (PostgreSQL) 16.x") == "16"
    assert pgbin._first_version("postgres (PostgreSQL) 12.17.3") == "12.17"
    assert pgbin._first_version("no digits here") is None


def test_postgresql_older_than_13_is_refused_with_127(tmp_path: Path) -> None:
    """An installation reporting 12.x is refused (the gate behind 'PostgreSQL 13 and newer')."""
    real = pgbin.find().bin_dir
    fake = tmp_path / "old" / "bin"
    fake.mkdir(parents=True)
    for tool in ("initdb", "pg_ctl", "psql"):
        (fake / tool).symlink_to(real / tool)
    (fake / "postgres").write_text("#!/bin/sh\necho 'postgres (PostgreSQL) 12.17'\n")
    (fake / "postgres").chmod(0o755)
    r = run_cmd([script("postgres-init"), "--version"], base_env(PG_BIN_DIR=str(fake)))
    assert r.returncode == 127
    assert "too old" in r.stderr and "13" in r.stderr


def test_pg_config_answer_is_remembered_until_pg_config_changes(tmp_path: Path) -> None:
    """Debian's pg_config wrapper costs several processes per hook call: with a memo file it
    runs once, and again only when the pg_config file changes."""
    real = pgbin.find().bin_dir
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "path"
    bin_dir.mkdir()
    pg_config = bin_dir / "pg_config"
    pg_config.write_text(f"#!/bin/sh\necho x >> {calls}\necho {real}\n")
    pg_config.chmod(0o755)
    path = f"{bin_dir}:{os.environ['PATH']}"
    memo = tmp_path / "pgbin.memo"
    assert pgbin._from_pg_config(path, memo) == real
    assert pgbin._from_pg_config(path, memo) == real
    assert calls.read_text().count("x") == 1
    pg_config.write_text(pg_config.read_text() + "# upgraded\n")
    assert pgbin._from_pg_config(path, memo) == real
    assert calls.read_text().count("x") == 2
    assert pgbin._from_pg_config(path, None) == real  # no memo: asked every time
    assert calls.read_text().count("x") == 3


def test_a_killed_memo_writers_temp_file_is_removed_by_the_next_run(tmp_path: Path) -> None:
    """A writer killed between its write and its rename leaves `pgbin.memo.tmp-<pid>`; the
    next lookup removes it (its writer is dead) and keeps a live writer's."""
    memo = tmp_path / "pgbin.memo"
    dead = subprocess.Popen(["true"])
    dead.wait()
    writer = subprocess.Popen(["sleep", "30"])  # a writer still at work
    try:
        stale = tmp_path / f"pgbin.memo.tmp-{dead.pid}"
        live = tmp_path / f"pgbin.memo.tmp-{writer.pid}"
        stale.write_text("half")
        live.write_text("being written")
        assert pgbin._from_pg_config(os.environ["PATH"], memo) is not None
        assert not stale.exists() and live.exists()
        assert memo.exists()
    finally:
        writer.kill()
        writer.wait()
