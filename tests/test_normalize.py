"""database normalize-backup: a backup of a cluster with another superuser and configuration
becomes one `database restore` can use locally (issue 4)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from db_tool import pgbin, privs
from db_tool.cli import database
from db_tool.settings import login_name
from tests.dbproject import (
    LEFTOVERS,
    Project,
    add_to_base,
    leftovers,
    processes_with,
    project,
    short_dir,
)
from tests.helpers import base_env, next_port, stop_quietly, tree_snapshot


@dataclass
class Foreign:
    backup: Path
    root: Path


def _as_server(argv: list[str]) -> subprocess.CompletedProcess[str]:
    account = privs.server_account(None)
    kwargs = {"user": account.uid, "group": account.gid} if account else {}
    return subprocess.run(argv, capture_output=True, text=True, check=False, cwd="/",
                          stdin=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def foreign() -> Iterator[Foreign]:
    """A 'production' cluster: superuser someone_else, its own postgresql.conf, ALTER SYSTEM
    settings and a pg_hba.conf that admits nobody else; a pg_basebackup of it (tar, WAL)."""
    install = pgbin.find()
    root = short_dir("dbt-prod-")
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    account = privs.server_account(None)
    if account is not None:
        os.chown(sock, account.uid, account.gid)
        os.chown(root, account.uid, account.gid)
    init = _as_server([install.tool("initdb"), "-D", str(data), "-U", "someone_else",
                       "--auth=trust", "--no-sync"])
    assert init.returncode == 0, init.stderr
    with open(data / "postgresql.conf", "a") as fh:
        fh.write(f"port = 6432\nunix_socket_directories = '{sock}'\nlisten_addresses = ''\n"
                 "max_connections = 37\nwork_mem = '7MB'\n")
    (data / "postgresql.auto.conf").write_text("shared_buffers = '17MB'\n")
    (data / "pg_hba.conf").write_text(
        "local all someone_else trust\nlocal replication someone_else trust\n"
        "local all all reject\n")
    start = _as_server([install.tool("pg_ctl"), "-D", str(data), "-l", str(root / "log"),
                        "-w", "start"])
    assert start.returncode == 0, start.stderr
    try:
        url = f"postgresql://someone_else@/postgres?host={sock}&port=6432"
        for db, sql in (("postgres", "CREATE DATABASE appdb"),
                        ("appdb", "CREATE TABLE t (x int); INSERT INTO t VALUES (42)")):
            out = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-d",
                                  url.replace("/postgres?", f"/{db}?"), "-c", sql],
                                 capture_output=True, text=True, check=False)
            assert out.returncode == 0, out.stderr
        backup = root / "backup"
        taken = subprocess.run(
            [install.tool("pg_basebackup"), "-D", str(backup), "-h", str(sock), "-p", "6432",
             "-U", "someone_else", "-Ft", "-z", "-X", "stream", "--checkpoint=fast"],
            capture_output=True, text=True, check=False)
        assert taken.returncode == 0, taken.stderr
    finally:
        _as_server([install.tool("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
    try:
        yield Foreign(backup, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    root = short_dir()
    env = base_env(LOCAL_DIR=str(root), PG_PORT=str(next_port()),
                   PG_SHARED_PRELOAD_LIBRARIES="",
                   XDG_CACHE_HOME=str(tmp_path_factory.getbasetemp() / "cache"))
    for var in ("PG_WORKING_DIR", "PG_DATABASE", "PGURL", "DB_URL"):
        env.pop(var, None)
    try:
        yield root, env
    finally:
        stop_quietly(root / "focus" / "postgresql")
        shutil.rmtree(root, ignore_errors=True)


def psql(url: str, sql: str) -> str:
    out = subprocess.run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_normalize_then_restore_connects_as_the_login(
    foreign: Foreign, local: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, env = local
    before = tree_snapshot(foreign.backup)
    # what a normalize-backup killed with SIGKILL left: its temporary cluster dir
    stale = root / "focus" / ".norm-999999-dead"
    (stale / "data").mkdir(parents=True)
    (stale / "data" / "junk").write_bytes(b"x" * 4096)
    capsys.readouterr()
    assert database.main(["normalize-backup", str(foreign.backup)], env=env) == 0
    assert f"removed {stale}" in capsys.readouterr().err
    out = root / "focus" / "postgresql-backup-normalized"
    assert sorted(p.name for p in out.iterdir()) == ["base.tar.gz", "database_name"]
    assert (out / "database_name").read_text().strip() == "appdb"
    assert tree_snapshot(foreign.backup) == before  # the input is only read
    assert [p.name for p in (root / "focus").iterdir()] == ["postgresql-backup-normalized"]

    capsys.readouterr()
    assert database.main(["restore", str(out)], env=env) == 0
    url = capsys.readouterr().out.strip()
    assert "/appdb?" in url and f"//{login_name()}@" in url
    assert psql(url, "SELECT x FROM t") == "42"
    assert psql(url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == "t"
    # The backup's server configuration and ALTER SYSTEM settings are gone.
    assert psql(url, "SHOW max_connections") == "100"
    assert psql(url, "SHOW shared_buffers") != "17MB"
    assert psql(url, "SHOW work_mem") == "4MB"
    assert not (root / "focus" / "postgresql" / "data" / "standby.signal").exists()


def test_normalize_with_explicit_role_database_and_admin(
    foreign: Foreign, local: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    root, env = local
    out = tmp_path / "normalized"
    argv = ["normalize-backup", "-o", str(out), "--role", "dev_admin", "--database", "newdb",
            "--admin-role", "someone_else", str(foreign.backup)]
    assert database.main(argv, env=env) == 0
    assert (out / "database_name").read_text().strip() == "newdb"
    # Restore it with a superuser named dev_admin (the role the normalization ensured).
    from db_tool.cluster import Cluster
    from db_tool.commands.restore import restore_into
    from db_tool.settings import ClusterConfig

    cluster = Cluster(ClusterConfig.from_env(
        env, working_dir=root / "c", superuser="dev_admin", database="newdb"))
    try:
        restore_into(cluster, out)
        assert psql(cluster.url_for("appdb"), "SELECT x FROM t") == "42"
        assert psql(cluster.url, "SELECT current_database()") == "newdb"
    finally:
        cluster.stop()


def test_normalize_refusals_leave_the_input_untouched(
    foreign: Foreign, local: tuple[Path, dict[str, str]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, env = local
    src = tmp_path / "in"
    shutil.copytree(foreign.backup, src)
    before = tree_snapshot(tmp_path)
    cases = {
        str(src): "is the input",
        str(src / "sub" / "out"): "inside the input",
        str(tmp_path): "contains the input",
        str(src) + "/.": "is the input",
    }
    for output, message in cases.items():
        capsys.readouterr()
        assert database.main(["normalize-backup", "-o", output, str(src)], env=env) == 1
        assert message in capsys.readouterr().err
    assert tree_snapshot(tmp_path) == before
    not_backup = tmp_path / "empty"
    not_backup.mkdir()
    before = tree_snapshot(tmp_path)
    # exit 3 and the original's words, for a dir without base.tar.gz and a missing dir
    capsys.readouterr()
    assert database.main(["normalize-backup", "-o", str(tmp_path / "o"), str(not_backup)],
                         env=env) == 3
    assert f"missing {not_backup}/base.tar.gz" in capsys.readouterr().err
    assert tree_snapshot(tmp_path) == before
    assert not (root / "focus").exists() or not any((root / "focus").iterdir())
    # Default input ($LOCAL_DIR/focus/postgresql-backup) missing: refused too.
    assert database.main(["normalize-backup"], env=env) == 3
    assert "input backup directory not found" in capsys.readouterr().err
    # A missing option value is exit 3 (the original's `--output requires a path`).
    assert database.main(["normalize-backup", "-o"], env=env) == 3


@pytest.fixture
def appdb_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with project(tmp_path_factory.getbasetemp() / "cache", PG_DATABASE="appdb") as p:
        yield p


def test_normalize_defaults_fallback_database_leftovers_and_collations(
    appdb_project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """Input and output default to the backup dirs; no non-system database -> testdb; the
    standby/runtime leftovers of the source are not in the output; stale collation versions
    are refreshed."""
    p = appdb_project
    stale = "UPDATE pg_collation SET collversion = '0.stale' WHERE collname = 'und-x-icu'"
    if p.psql("SELECT count(*) FROM pg_collation WHERE collname = 'und-x-icu'", "postgres") != "1":
        pytest.fail("this PostgreSQL has no ICU collation und-x-icu to make stale")
    p.psql(stale, "postgres")
    p.psql("DROP DATABASE appdb WITH (FORCE)", "postgres")  # only system databases remain
    # A preload library this machine lacks (ALTER SYSTEM, in postgresql.auto.conf): the
    # temporary cluster must not inherit it, or it would not start.
    p.psql("ALTER SYSTEM SET shared_preload_libraries = 'no_such_library'", "postgres")
    assert p.db("backup") == 0
    assert (p.backup_dir / "database_name").read_text().strip() == "appdb"
    add_to_base(p.backup_dir, leftovers())
    before = tree_snapshot(p.backup_dir)

    assert p.db("normalize-backup") == 0
    out = p.focus / "postgresql-backup-normalized"
    assert sorted(e.name for e in out.iterdir()) == ["base.tar.gz", "database_name"]
    assert (out / "database_name").read_text().strip() == "testdb"
    with tarfile.open(out / "base.tar.gz") as tf:
        names = set(tf.getnames())
    assert "PG_VERSION" in names
    assert not names & set(LEFTOVERS)
    assert tree_snapshot(p.backup_dir) == before  # the input is only read
    assert not [e for e in p.focus.iterdir() if e.name.startswith(".norm-")]

    capsys.readouterr()
    assert p.db("restore", str(out)) == 0
    assert "/testdb?" in capsys.readouterr().out
    assert p.psql("SELECT current_database(), pg_is_in_recovery()", "testdb") == "testdb|f"
    assert p.psql("SELECT collversion = pg_collation_actual_version(oid) FROM pg_collation "
                  "WHERE collname = 'und-x-icu'", "postgres") == "t"
    assert p.psql("SHOW listen_addresses", "testdb") == ""
    assert "no_such_library" not in p.psql("SHOW shared_preload_libraries", "testdb")


def test_normalize_failure_stops_and_removes_the_temporary_cluster(appdb_project: Project) -> None:
    p = appdb_project
    assert p.db("backup") == 0
    before = tree_snapshot(p.backup_dir)
    target_parent = short_dir("dbt-o-")
    try:
        # ALTER ROLE on a reserved role fails once the temporary server is up.
        argv = ["normalize-backup", "--role", "pg_monitor", "-o", str(target_parent / "out")]
        assert p.db(*argv) == 1
        assert list(target_parent.iterdir()) == []  # no .norm-* dir, no output
        assert processes_with(f"{target_parent}/.norm-") == []
    finally:
        shutil.rmtree(target_parent, ignore_errors=True)
    assert tree_snapshot(p.backup_dir) == before
