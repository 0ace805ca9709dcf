"""Audit of issue 2 (postgres-init / postgres-cleanup / database init|cleanup): the acceptance
points that no other test proved, each against real clusters."""

from __future__ import annotations

import fcntl
import os
import pwd
import select
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from db_tool import pgbin
from db_tool.cluster import LOCKFILE, MARKER, build_url
from db_tool.settings import login_name
from tests.helpers import (
    alive,
    base_env,
    next_port,
    postmaster_pid,
    run_cmd,
    script,
    stop_quietly,
    tree_snapshot,
)


def init(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cmd([script("postgres-init"), *args], env)


def wd_of(env: dict[str, str]) -> Path:
    return Path(env["PG_WORKING_DIR"])


def url_of(env: dict[str, str], db: str | None = None) -> str:
    return build_url(login_name(), db or env.get("PG_DATABASE", "testdb"),
                     wd_of(env) / "sock", int(env.get("PG_PORT", "5432")))


def psql(env: dict[str, str], sql: str, db: str | None = None) -> str:
    out = subprocess.run(
        ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", url_of(env, db), "-c", sql],
        capture_output=True, text=True, check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()




# ---------------------------------------------------------------------- package and binaries


@pytest.mark.parametrize("name", ["database", "db-tool", "postgres-init", "postgres-cleanup",
                                  "migrator", "db-ops"])
def test_every_console_command_is_installed(name: str) -> None:
    r = run_cmd([script(name), "--help"], base_env())
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout


def test_db_tool_is_the_database_command() -> None:
    a = run_cmd([script("database"), "--help"], base_env())
    b = run_cmd([script("db-tool"), "--help"], base_env())
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout


def test_newest_distro_installation_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Numeric, not lexical: 15 before 13 before 9."""
    dirs = ["/usr/lib/postgresql/9/bin", "/usr/lib/postgresql/15/bin",
            "/usr/lib/postgresql/13/bin"]
    monkeypatch.setattr(pgbin.glob, "glob", lambda pattern: list(dirs))
    assert [str(d) for d in pgbin._distro_dirs()] == [dirs[1], dirs[2], dirs[0]]


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


# ------------------------------------------------------------------------ defaults and reuse


def test_default_port_is_5432(cluster_env: dict[str, str]) -> None:
    env = {k: v for k, v in cluster_env.items() if k != "PG_PORT"}
    r = init(env, "--print-env")
    assert r.returncode == 0, r.stderr
    wd = wd_of(env)
    assert (wd / "sock" / ".s.PGSQL.5432").exists()
    assert "export POSTGRESQL_PORT=5432\n" in r.stdout
    assert "port=5432" in r.stdout
    assert psql(env, "show port") == "5432"


@pytest.mark.parametrize("value", ["", "0", "no"])
def test_pg_reuse_any_value_reuses(cluster_env: dict[str, str], value: str) -> None:
    assert init(cluster_env).returncode == 0
    psql(cluster_env, "create table keep_me(id int)")
    stop_quietly(wd_of(cluster_env))
    r = init({**cluster_env, "PG_REUSE": value})
    assert r.returncode == 0, r.stderr
    assert psql(cluster_env, "select to_regclass('keep_me') is not null") == "t"


def test_pg_reuse_without_a_cluster_initialises_one(cluster_env: dict[str, str]) -> None:
    env = {**cluster_env, "PG_REUSE": "1"}
    r = init(env)
    assert r.returncode == 0, r.stderr
    assert (wd_of(env) / "data" / "PG_VERSION").is_file()
    assert psql(env, "select current_database()") == "testdb"


def test_reused_stopped_cluster_missing_its_database_gets_it(cluster_env: dict[str, str]) -> None:
    assert init(cluster_env).returncode == 0
    psql(cluster_env, "create table keep_me(id int); insert into keep_me values (7)")
    stop_quietly(wd_of(cluster_env))
    env = {**cluster_env, "PG_REUSE": "1", "PG_DATABASE": "brand_new"}
    r = init(env)
    assert r.returncode == 0, r.stderr
    assert psql(env, "select current_database()") == "brand_new"
    assert psql(cluster_env, "select id from keep_me") == "7"


def test_reuse_of_a_running_server_on_another_port_restarts_it(
    cluster_env: dict[str, str],
) -> None:
    assert init(cluster_env).returncode == 0
    psql(cluster_env, "create table keep_me(id int)")
    old_pid = postmaster_pid(wd_of(cluster_env))
    env = {**cluster_env, "PG_REUSE": "1", "PG_PORT": str(next_port() + 2000)}
    r = init(env)
    assert r.returncode == 0, r.stderr
    assert not alive(old_pid)
    assert psql(env, "select current_setting('port'), to_regclass('keep_me') is not null") == (
        f"{env['PG_PORT']}|t")


def test_fresh_init_replaces_the_stale_socket_files_of_its_port(
    cluster_env: dict[str, str],
) -> None:
    """sock/ is recreated as far as it is the cluster's own: since 7342236 only our port's files
    go (another server may share the dir), so stale files of our port must not stop a start."""
    assert init(cluster_env).returncode == 0
    stop_quietly(wd_of(cluster_env))
    sock = wd_of(cluster_env) / "sock"
    port = cluster_env["PG_PORT"]
    dead = subprocess.Popen(["true"])
    dead.wait()
    (sock / f".s.PGSQL.{port}.lock").write_text(f"{dead.pid}\n{wd_of(cluster_env)}/data\n")
    (sock / f".s.PGSQL.{port}").write_text("not a socket")
    r = init(cluster_env)
    assert r.returncode == 0, r.stderr
    assert stat.S_ISSOCK((sock / f".s.PGSQL.{port}").stat().st_mode)
    assert psql(cluster_env, "select 1") == "1"


# ---------------------------------------------------------------------- generated config


def test_pg_conf_file_applies_to_fresh_init_only(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    first = tmp_path / "first.conf"
    first.write_text("work_mem = '7MB'\n")
    second = tmp_path / "second.conf"
    second.write_text("work_mem = '9MB'\n")
    assert init({**cluster_env, "PG_CONF_FILE": str(first)}).returncode == 0
    stop_quietly(wd_of(cluster_env))
    env = {**cluster_env, "PG_CONF_FILE": str(second), "PG_REUSE": "1"}
    r = init(env)
    assert r.returncode == 0, r.stderr
    assert psql(env, "show work_mem") == "7MB"
    # Port and socket are ours on every launch, whatever the user's file says.
    assert psql(env, "show port") == env["PG_PORT"]


def test_preload_setting_is_rewritten_on_reuse(cluster_env: dict[str, str]) -> None:
    assert init(cluster_env).returncode == 0
    assert psql(cluster_env, "show shared_preload_libraries") == "pg_cron"
    stop_quietly(wd_of(cluster_env))
    env = {**cluster_env, "PG_REUSE": "1", "PG_SHARED_PRELOAD_LIBRARIES": ""}
    assert init(env).returncode == 0
    assert psql(env, "show shared_preload_libraries") == ""
    stop_quietly(wd_of(env))
    env = {**cluster_env, "PG_REUSE": "1", "PG_DATABASE": "crondb"}
    assert init(env).returncode == 0
    assert psql(env, "select current_setting('shared_preload_libraries'), "
                     "current_setting('cron.database_name')") == "pg_cron|crondb"


def test_development_durability_settings(cluster_env: dict[str, str]) -> None:
    assert init(cluster_env).returncode == 0
    assert psql(cluster_env, "select current_setting('fsync'), "
                             "current_setting('synchronous_commit'), "
                             "current_setting('full_page_writes')") == "on|off|on"


def test_throw_away_clusters_trade_durability(cluster_env: dict[str, str]) -> None:
    from db_tool.cluster import Cluster, ClusterConfig

    cluster = Cluster(ClusterConfig.from_env(cluster_env, ephemeral=True))
    cluster.init()
    try:
        assert psql(cluster_env, "select current_setting('fsync'), "
                                 "current_setting('full_page_writes'), "
                                 "current_setting('synchronous_commit')") == "off|off|off"
    finally:
        cluster.stop()


# ------------------------------------------------------------------ failures lose nothing


def test_unreadable_pg_conf_file_changes_nothing_on_an_existing_cluster(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    assert init(cluster_env).returncode == 0
    psql(cluster_env, "create table keep_me(id int)")
    pid = postmaster_pid(wd_of(cluster_env))
    r = init({**cluster_env, "PG_CONF_FILE": str(tmp_path / "missing.conf")})
    assert r.returncode == 1
    assert "PG_CONF_FILE" in r.stderr and "not readable" in r.stderr
    assert alive(pid)  # failed before touching anything: not even stopped
    assert psql(cluster_env, "select to_regclass('keep_me') is not null") == "t"


def _data_snapshot(data: Path) -> dict[str, tuple[int, int, int]]:
    """Everything but what a start attempt legitimately writes (our runtime conf, logs)."""
    return {k: v for k, v in tree_snapshot(data).items()
            if k != "db-tool.runtime.conf" and not k.startswith("log")}


def test_missing_library_on_reuse_leaves_data_exactly_as_it_was(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    conf = tmp_path / "c.conf"
    conf.write_text("work_mem = '5MB'\n")
    env = {**cluster_env, "PG_CONF_FILE": str(conf)}
    assert init(env).returncode == 0
    psql(env, "create table keep_me(id int); insert into keep_me values (1)")
    stop_quietly(wd_of(env))
    data = wd_of(env) / "data"
    pgconf = data / "postgresql.conf"
    original = pgconf.read_text()
    pgconf.write_text("shared_preload_libraries = 'no_such_library'\n" + original)
    before = _data_snapshot(data)
    r = init({**env, "PG_REUSE": "1"})
    assert r.returncode == 1
    assert "no_such_library" in r.stderr
    assert _data_snapshot(data) == before
    assert not list(wd_of(env).glob("data.broken-*"))
    pgconf.write_text(original)
    assert init({**env, "PG_REUSE": "1"}).returncode == 0
    assert psql(env, "select id from keep_me") == "1"


def test_lock_file_held_by_another_process_leaves_data_alone(
    cluster_env: dict[str, str],
) -> None:
    """postmaster.pid naming a live process that is not our server: refused, nothing moved."""
    assert init(cluster_env).returncode == 0
    psql(cluster_env, "create table keep_me(id int)")
    stop_quietly(wd_of(cluster_env))
    data = wd_of(cluster_env) / "data"
    # A live process of the server's own account (as root, PostgreSQL treats a pid it may not
    # signal as stale, rightly: its postmaster would run as that account).
    account = None
    if os.geteuid() == 0:
        account = pwd.getpwnam(os.environ.get("PG_OS_USER") or "postgres")
    other = subprocess.Popen(["sleep", "120"], user=account.pw_uid if account else None,
                             group=account.pw_gid if account else None)
    try:
        (data / "postmaster.pid").write_text(f"{other.pid}\n{data}\n")
        before = _data_snapshot(data)
        r = init({**cluster_env, "PG_REUSE": "1"})
        assert r.returncode == 1, r.stderr
        assert "left as it was" in r.stderr
        assert _data_snapshot(data) == before
        assert not list(wd_of(cluster_env).glob("data.broken-*"))
        assert other.poll() is None  # the other process is left alone
    finally:
        other.kill()
        other.wait()
    (data / "postmaster.pid").unlink()
    assert init({**cluster_env, "PG_REUSE": "1"}).returncode == 0
    assert psql(cluster_env, "select to_regclass('keep_me') is not null") == "t"


# -------------------------------------------------------------------- descriptors and lock


def test_server_holds_no_other_inherited_descriptor(cluster_env: dict[str, str]) -> None:
    """An extra pipe (fd 3 in a CI job, say) reaches EOF as soon as postgres-init returns."""
    r, w = os.pipe()
    try:
        proc = subprocess.Popen([script("postgres-init"), "--print-env"], env=cluster_env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                pass_fds=(w,))
        os.close(w)
        w = -1
        assert proc.wait(timeout=120) == 0
        ready, _, _ = select.select([r], [], [], 10)
        assert ready, "some process started by postgres-init still holds the pipe"
        assert os.read(r, 1) == b""
        assert postmaster_pid(wd_of(cluster_env)) > 0
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_concurrent_run_waits_for_the_lock(cluster_env: dict[str, str]) -> None:
    wd = wd_of(cluster_env)
    wd.mkdir(parents=True)
    fd = os.open(wd / LOCKFILE, os.O_RDWR | os.O_CREAT, 0o644)
    errlog = wd.parent / "stderr.log"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with open(errlog, "wb") as err:
            proc = subprocess.Popen([script("postgres-init")], env=cluster_env,
                                    stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 30
        while "waiting for another db-tool run" not in errlog.read_text():
            assert proc.poll() is None, errlog.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
        assert proc.poll() is None  # still waiting, and nothing was made meanwhile
        assert not (wd / "data").exists()
    finally:
        os.close(fd)  # releases the lock
    assert proc.wait(timeout=120) == 0, errlog.read_text()
    assert (wd / "data" / "PG_VERSION").is_file()


# ----------------------------------------------------------- postgres-cleanup, database *


def test_postgres_cleanup_resolves_local_dir(tmp_path: Path, cluster_env: dict[str, str]) -> None:
    env = {k: v for k, v in cluster_env.items() if k != "PG_WORKING_DIR"}
    env["LOCAL_DIR"] = str(tmp_path / "project")
    cluster_env["PG_WORKING_DIR"] = str(tmp_path / "project" / "focus" / "postgresql")
    assert init(env).returncode == 0
    pid = postmaster_pid(wd_of(cluster_env))
    r = run_cmd([script("postgres-cleanup")], env)
    assert r.returncode == 0, r.stderr
    assert not alive(pid)
    assert "stopped" in r.stderr  # without NO_TTY it says what it did
    assert (wd_of(cluster_env) / "data" / "PG_VERSION").is_file()


def test_database_init_is_fresh_and_reuse_keeps_a_stopped_cluster(
    cluster_env: dict[str, str],
) -> None:
    assert run_cmd([script("database"), "init"], cluster_env).returncode == 0
    psql(cluster_env, "create table keep_me(id int)")
    stop_quietly(wd_of(cluster_env))
    r = run_cmd([script("database"), "init", "--reuse"], cluster_env)
    assert r.returncode == 0, r.stderr
    assert psql(cluster_env, "select to_regclass('keep_me') is not null") == "t"
    r = run_cmd([script("database"), "init"], cluster_env)
    assert r.returncode == 0, r.stderr
    assert psql(cluster_env, "select to_regclass('keep_me') is null") == "t"


def test_database_cleanup_refuses_a_data_dir_that_is_not_a_cluster(
    cluster_env: dict[str, str],
) -> None:
    wd = wd_of(cluster_env)
    (wd / "data").mkdir(parents=True)
    (wd / "data" / "notes.txt").write_text("mine")
    (wd / "sock").mkdir()
    before = tree_snapshot(wd)
    r = run_cmd([script("database"), "cleanup"], cluster_env)
    assert r.returncode == 1
    assert "refusing" in r.stderr and "not a PostgreSQL data directory" in r.stderr
    assert tree_snapshot(wd) == before


def test_database_cleanup_of_an_original_layout_with_logs_and_broken_data(
    cluster_env: dict[str, str],
) -> None:
    """The original's layout plus what postgres-init leaves (logs, data.broken-*) is removed."""
    assert init(cluster_env).returncode == 0
    wd = wd_of(cluster_env)
    (wd / MARKER).unlink()
    (wd / "data.broken-20240101-000000").mkdir()
    assert (wd / "postgres-init.log").exists()
    r = run_cmd([script("database"), "cleanup"], cluster_env)
    assert r.returncode == 0, r.stderr
    assert not wd.exists()


# -------------------------------------------------------------------------------- as root


@pytest.fixture
def under_tmp(cluster_env: dict[str, str]) -> Iterator[tuple[Path, dict[str, str]]]:
    """A root-only 0700 dir under /tmp with a space below it."""
    base = Path(tempfile.mkdtemp(prefix="db-tool audit ", dir="/tmp"))
    wd = base / "my project" / "pg"
    env = {**cluster_env, "PG_WORKING_DIR": str(wd)}
    try:
        yield wd, env
    finally:
        stop_quietly(wd)
        shutil.rmtree(base, ignore_errors=True)


def _acl(path: Path) -> str:
    return subprocess.run(["getfacl", "-cp", str(path)], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the root-mode pass)")
def test_root_under_tmp_changes_only_the_documented_permissions(
    under_tmp: tuple[Path, dict[str, str]],
) -> None:
    wd, env = under_tmp
    base = wd.parent.parent
    assert stat.S_IMODE(base.stat().st_mode) == 0o700
    ancestors = [Path("/"), Path("/tmp"), base]
    modes = {p: p.stat().st_mode for p in ancestors}
    acls = {p: _acl(p) for p in ancestors}
    r = init(env, "--print-env")
    assert r.returncode == 0, r.stderr
    account = pwd.getpwnam(os.environ.get("PG_OS_USER") or "postgres")
    # The server runs as the account; the superuser is still the login (root).
    pid = postmaster_pid(wd)
    uid_line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if ln.startswith("Uid:"))
    assert int(uid_line.split()[1]) == account.pw_uid
    assert psql(env, "select current_user") == "root"
    # No chmod on any ancestor: owner and other bits are untouched (the group bits of base now
    # show the ACL mask, which is what setfacl does); only base (0700) got an ACL entry, for
    # the account alone, and its owning group still has nothing.
    assert {p: p.stat().st_mode & ~0o070 for p in ancestors} == {
        p: m & ~0o070 for p, m in modes.items()}
    assert {p: p.stat().st_mode for p in ancestors[:2]} == {p: modes[p] for p in ancestors[:2]}
    assert "group::---" in _acl(base)
    assert _acl(Path("/")) == acls[Path("/")] and _acl(Path("/tmp")) == acls[Path("/tmp")]
    assert f"user:{account.pw_name}:--x" in _acl(base)
    assert f"granted x on {base} to user {account.pw_name} (ACL)" in r.stderr
    assert "chmod" not in r.stderr
    # data/ and sock/ belong to the account; the working dir and everything else stay root's.
    assert (wd / "data").stat().st_uid == account.pw_uid
    assert (wd / "sock").stat().st_uid == account.pw_uid
    for p in [wd.parent, wd, *wd.iterdir()]:
        if p.name not in ("data", "sock"):
            assert p.stat().st_uid == 0, p
