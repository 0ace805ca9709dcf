"""postgres-cleanup, database init and database cleanup."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from db_tool.cluster import MARKER
from tests.helpers import (
    alive,
    as_server_account,
    init,
    next_port,
    original_postgres_init,
    postmaster_pid,
    psql,
    read_only,
    run_cmd,
    script,
    server_account,
    stop_quietly,
    tree_snapshot,
    wd_of,
)


def _cluster_files(wd: Path) -> dict[str, tuple[int, int, int]]:
    """tree_snapshot without a spare template copy being built in the background."""
    return {k: v for k, v in tree_snapshot(wd).items() if not k.startswith(".db-tool-build-")}


def test_cleanup_with_nothing_resolvable_exits_0() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PG_WORKING_DIR", "LOCAL_DIR")}
    r = run_cmd([script("postgres-cleanup")], env)
    assert r.returncode == 0, r.stderr


def test_cleanup_without_cluster_or_with_stale_pid(cluster_env: dict[str, str]) -> None:
    wd = wd_of(cluster_env)
    r = run_cmd([script("postgres-cleanup")], cluster_env)  # dir does not even exist
    assert r.returncode == 0 and not wd.exists()
    assert run_cmd([script("postgres-init")], cluster_env).returncode == 0
    pid = postmaster_pid(wd)
    assert run_cmd([script("postgres-cleanup")], cluster_env).returncode == 0
    assert not alive(pid)
    # no postmaster.pid
    assert run_cmd([script("postgres-cleanup")], cluster_env).returncode == 0
    # a stale one: a pid that is not running
    dead = subprocess.Popen(["true"])
    dead.wait()
    (wd / "data" / "postmaster.pid").write_text(f"{dead.pid}\n{wd}/data\n")
    before = _cluster_files(wd)
    r = run_cmd([script("postgres-cleanup")], cluster_env)
    assert r.returncode == 0, r.stderr
    assert _cluster_files(wd) == before  # never deletes anything


def test_cleanup_stops_fast_and_waits_and_keeps_data(cluster_env: dict[str, str]) -> None:
    assert run_cmd([script("postgres-init")], cluster_env).returncode == 0
    wd = wd_of(cluster_env)
    pid = postmaster_pid(wd)
    # An open session must not block a fast shutdown.
    url = f"postgresql://@/testdb?host={wd}/sock&port={cluster_env['PG_PORT']}"
    sleeper = subprocess.Popen(["psql", "-X", "-d", url, "-c", "select pg_sleep(60)"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        started = time.monotonic()
        r = run_cmd([script("postgres-cleanup")], {**cluster_env, "NO_TTY": "1"})
        assert r.returncode == 0, r.stderr
        assert time.monotonic() - started < 15
        assert not alive(pid)  # waited: gone when the command returns
        assert r.stderr == ""  # NO_TTY: quiet
        assert (wd / "data" / "PG_VERSION").is_file()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_database_init_and_reuse(cluster_env: dict[str, str]) -> None:
    r = run_cmd([script("database"), "init", "--print-env"], cluster_env)
    assert r.returncode == 0, r.stderr
    assert "export PGURL=" in r.stdout
    wd = wd_of(cluster_env)
    pid = postmaster_pid(wd)
    r = run_cmd([script("database"), "init", "--reuse"], cluster_env)
    assert r.returncode == 0, r.stderr
    assert postmaster_pid(wd) == pid  # reused the running server
    r = run_cmd([script("database"), "init", "--bogus"], cluster_env)
    assert r.returncode == 9 and "--bogus" in r.stderr
    r = run_cmd([script("database"), "init", "--help"], cluster_env)
    assert r.returncode == 0 and "--reuse" in r.stdout


def test_database_cleanup_removes_tool_created_dir(cluster_env: dict[str, str]) -> None:
    assert run_cmd([script("postgres-init")], cluster_env).returncode == 0
    wd = wd_of(cluster_env)
    pid = postmaster_pid(wd)
    assert (wd / MARKER).is_file()
    r = run_cmd([script("database"), "cleanup"], cluster_env)
    assert r.returncode == 0, r.stderr
    assert not wd.exists()
    assert not alive(pid)


def test_database_cleanup_removes_a_bare_layout_made_elsewhere(
    cluster_env: dict[str, str],
) -> None:
    """A dir made by the original tool: no marker, only data/ sock/ and logs."""
    assert run_cmd([script("postgres-init")], cluster_env).returncode == 0
    wd = wd_of(cluster_env)
    (wd / MARKER).unlink()
    (wd / "log").mkdir()
    r = run_cmd([script("database"), "cleanup"], cluster_env)
    assert r.returncode == 0, r.stderr
    assert not wd.exists()


def test_database_cleanup_refuses_foreign_dir(cluster_env: dict[str, str]) -> None:
    """Files of the user's in a marker-less working dir: refused, untouched, exit 1 — even
    with a running cluster in it."""
    wd = wd_of(cluster_env)
    wd.mkdir()
    assert run_cmd([script("postgres-init")], cluster_env).returncode == 0
    pid = postmaster_pid(wd)
    (wd / "thesis.tex").write_text("years of work")
    (wd / ".bashrc").write_text("# mine")
    mine = ("thesis.tex", ".bashrc")
    before = {k: v for k, v in tree_snapshot(wd).items() if k in mine}
    r = run_cmd([script("database"), "cleanup"], cluster_env)
    assert r.returncode == 1
    assert "refusing" in r.stderr and "thesis.tex" in r.stderr
    assert (wd / "thesis.tex").read_text() == "years of work"
    after = {k: v for k, v in tree_snapshot(wd).items() if k in mine}
    assert after == before
    assert alive(pid)  # refused before stopping anything


def test_database_cleanup_without_local_dir_uses_the_current_directory(tmp_path: Path) -> None:
    """As the original: no LOCAL_DIR means $PWD, so $PWD/focus/postgresql."""
    env = {k: v for k, v in os.environ.items() if k not in ("PG_WORKING_DIR", "LOCAL_DIR")}
    r = subprocess.run([script("database"), "cleanup"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert f"{tmp_path / 'focus' / 'postgresql'} does not exist" in r.stderr


def test_cleanup_with_nothing_to_stop_says_so(cluster_env: dict[str, str]) -> None:
    r = run_cmd([script("postgres-cleanup")], cluster_env)
    assert r.returncode == 0
    assert "nothing to stop" in r.stderr


def test_cleanup_never_signals_a_server_of_another_data_dir(
    tmp_path: Path, cluster_env: dict[str, str],
) -> None:
    """A stale postmaster.pid whose pid now belongs to another cluster's postmaster."""
    other = {**cluster_env, "PG_WORKING_DIR": str(tmp_path / "other"),
             "PG_PORT": str(next_port())}
    assert run_cmd([script("postgres-init")], other).returncode == 0
    try:
        other_pid = postmaster_pid(wd_of(other))
        wd = wd_of(cluster_env)
        assert run_cmd([script("postgres-init")], cluster_env).returncode == 0
        assert run_cmd([script("postgres-cleanup")], cluster_env).returncode == 0
        pidfile = wd / "data" / "postmaster.pid"
        pidfile.write_text(f"{other_pid}\n{wd / 'data'}\n0\n{cluster_env['PG_PORT']}\n"
                           f"{wd / 'sock'}\n\n0 0\nready   \n")
        r = run_cmd([script("postgres-cleanup")], cluster_env)
        assert r.returncode == 0, r.stderr
        assert "nothing to stop" in r.stderr
        assert alive(other_pid)
        r = run_cmd([script("postgres-init")], cluster_env)  # a fresh init does not stop it
        assert r.returncode == 0, r.stderr
        assert alive(other_pid)
    finally:
        stop_quietly(wd_of(other))


def test_cleanup_in_a_read_only_working_dir_still_stops_and_exits_0(
    cluster_env: dict[str, str],
) -> None:
    assert run_cmd([script("postgres-init")], cluster_env).returncode == 0
    wd = wd_of(cluster_env)
    pid = postmaster_pid(wd)
    with read_only(wd):
        r = run_cmd([script("postgres-cleanup")], cluster_env)
    assert r.returncode == 0, r.stderr
    assert not alive(pid)


def _original_layout(cluster_env: dict[str, str]) -> Path:
    wd = wd_of(cluster_env)
    original_postgres_init(wd)
    return wd


def test_database_cleanup_removes_a_cluster_of_the_original_tool(
    cluster_env: dict[str, str],
) -> None:
    wd = _original_layout(cluster_env)
    r = run_cmd([script("database"), "cleanup"], cluster_env)
    assert r.returncode == 0, r.stderr
    assert not wd.exists()


@pytest.mark.parametrize("stray", ["sock/notes.txt", "log/notes.txt", "data-of-initdb"])
def test_database_cleanup_refuses_more_than_the_postgres_init_layout(
    stray: str, cluster_env: dict[str, str],
) -> None:
    """No marker: only exactly the postgres-init layout may go — a user file in sock/ or log/,
    or a data/ that is somebody's own initdb cluster, keeps the whole dir."""
    wd = _original_layout(cluster_env)
    if stray == "data-of-initdb":
        from db_tool import pgbin

        shutil.rmtree(wd / "data")
        (wd / "data").mkdir()
        account = server_account()
        if account is not None:
            os.chown(wd / "data", *account)
        initdb = str(pgbin.find().bin_dir / "initdb")
        r = run_cmd(as_server_account([initdb, "-D", str(wd / "data"), "--no-sync"]),
                    os.environ)
        assert r.returncode == 0, r.stderr
    else:
        (wd / stray).parent.mkdir(exist_ok=True)
        (wd / stray).write_text("mine")
    before = tree_snapshot(wd)
    r = run_cmd([script("database"), "cleanup"], cluster_env)
    assert r.returncode == 1, r.stderr
    assert "refusing" in r.stderr
    assert tree_snapshot(wd) == before


def test_database_cleanup_of_a_symlinked_working_dir_is_refused_in_one_line(
    tmp_path: Path, cluster_env: dict[str, str],
) -> None:
    real = wd_of(cluster_env)
    assert run_cmd([script("postgres-init")], cluster_env).returncode == 0
    link = tmp_path / "link"
    link.symlink_to(real)
    r = run_cmd([script("database"), "cleanup"], {**cluster_env, "PG_WORKING_DIR": str(link)})
    assert r.returncode == 1, r.stderr
    assert "symbolic link" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (real / "data" / "PG_VERSION").is_file() and link.is_symlink()


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


@pytest.mark.parametrize("closed", [">&-", "2>&-", ">&- 2>&-"])
def test_cleanup_with_stdout_or_stderr_closed_stops_and_exits_0(
    cluster_env: dict[str, str], closed: str
) -> None:
    # A trap or a supervisor may run it with a descriptor closed: Python then has no
    # sys.stdout/sys.stderr at all. The original (dash) still stops and returns 0.
    assert run_cmd([script("postgres-init")], cluster_env).returncode == 0
    pid = postmaster_pid(wd_of(cluster_env))
    r = run_cmd(["sh", "-c", f'exec "$0" {closed}', script("postgres-cleanup")], cluster_env)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert not alive(pid)


def test_the_background_worker_holds_the_template_lock_before_postgres_init_returns(
    cluster_env: dict[str, str],
) -> None:
    """The init takes the template's lock and hands it to the worker it starts: a waiter
    (postgres-cleanup, next in a sandbox's script) never sees a free lock while a worker is
    still starting up (nice 19, on a busy machine: tens of milliseconds without the lock)."""
    from db_tool import fslock

    env = {k: v for k, v in cluster_env.items() if k != "XDG_CACHE_HOME"}
    env["HOME"] = "/homeless-shelter"
    wd = wd_of(env)
    cache = wd.parent / f".db-tool-cache-{os.geteuid()}"
    r = run_cmd([script("postgres-init")], env)  # cold: the worker builds the template next
    locks = list(cache.glob("templates/*/lock"))
    held = [fslock.held(lock) for lock in locks]
    assert r.returncode == 0, r.stderr
    assert held == [True], (locks, held)
    r = run_cmd([script("postgres-cleanup")], env)
    assert r.returncode == 0, r.stderr
    assert not any(fslock.held(lock) for lock in locks)


def test_cleanup_lets_the_worker_of_a_cache_inside_the_tree_finish_so_the_tree_can_go(
    cluster_env: dict[str, str],
) -> None:
    """HOME unusable (a build sandbox): the cache falls back to beside the working dir, where
    the background worker builds the template and copies a spare after a cold init. A
    sandbox removes the whole tree right after postgres-cleanup; cleanup waits for that
    worker, so the removal does not race files still being written ("Directory not empty")."""
    from db_tool import fslock

    env = {k: v for k, v in cluster_env.items() if k != "XDG_CACHE_HOME"}
    env["HOME"] = "/homeless-shelter"
    wd = wd_of(env)
    cache = wd.parent / f".db-tool-cache-{os.geteuid()}"
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0, r.stderr
    assert cache.is_dir()
    r = run_cmd([script("postgres-cleanup")], env)
    assert r.returncode == 0, r.stderr
    locks = list(cache.glob("templates/*/lock"))
    assert locks, sorted(p.name for p in cache.rglob("*"))[:20]
    assert not any(fslock.held(lock) for lock in locks)
    assert any((lock.parent / "ready").is_file() for lock in locks)  # it finished, not died
    shutil.rmtree(wd)
    shutil.rmtree(cache)  # what the sandbox does next: nothing is still being written
