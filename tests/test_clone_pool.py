"""The pool of template copies (db_tool.clone_pool) and the wire client's waiting close, on
the session's real cluster (conftest `pg`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from db_tool import clone, clone_pool, pgwire, privs
from db_tool.clone_pool import Pool
from tests.conftest import PG


def _connect(pg: PG, database: str = "postgres") -> pgwire.Connection:
    return pgwire.connect(pg.sockdir, pg.port, pg.user, database)


def _databases_of(pg: PG, pool: Pool) -> list[list[str]]:
    """The databases the pool's process still has in the cluster (pool copies and handed out)."""
    with _connect(pg) as conn:
        return conn.query("SELECT datname FROM pg_database WHERE datname LIKE 'dbt\\_%\\_"
                          f"{pool._tag}\\_%'")


@pytest.fixture
def template(pg: PG) -> Iterator[str]:
    name = "tpl_" + uuid.uuid4().hex[:10]
    with _connect(pg) as conn:
        conn.query(f'CREATE DATABASE "{name}"')
        with _connect(pg, name) as db:
            db.query("CREATE TABLE item (id int)")
        yield name
        clone.drop(conn, name)


def _address(pg: PG) -> Any:
    return SimpleNamespace(install=pg.install, sockdir=pg.sockdir, port=pg.port,
                           superuser=pg.user, run_as=privs.server_account(None))


def _pool(pg: PG, template: str, size: int, tablespace: str | None = None) -> Pool:
    return Pool(_address(pg), template, size, tablespace=tablespace).start()


def _scratch_parent(tmp_path: Path) -> Path:
    parent = tmp_path / "scratch"
    parent.mkdir()
    account = privs.server_account(None)
    if account is not None:  # the server account must reach it (tmp_path is root's 0700)
        for p in [parent, *parent.parents]:
            if p.stat().st_mode & 0o001 == 0 and str(p).startswith(str(tmp_path.parent)):
                p.chmod(p.stat().st_mode | 0o001)
    return parent


def test_copies_go_to_the_scratch_tablespace_which_close_drops_with_its_dir(
    pg: PG, template: str, tmp_path: Path
) -> None:
    parent = _scratch_parent(tmp_path)
    with clone_pool.scratch_tablespace(_address(pg), str(parent)) as tablespace:
        assert tablespace == f"dbt_ts_{os.getpid()}"
        (location,) = list(parent.iterdir())
        pool = _pool(pg, template, size=2, tablespace=tablespace)
        try:
            handed = pool.acquire(pool.next_name("ts"))
            with _connect(pg) as conn:
                rows = conn.query("SELECT t.spcname FROM pg_database d JOIN pg_tablespace t "
                                  "ON t.oid = d.dattablespace WHERE d.datname = "
                                  + pgwire.quote_literal(handed.name))
            assert rows == [[tablespace]]
            with _connect(pg, handed.name) as db:
                assert db.query("SELECT count(*) FROM item") == [["0"]]
            pool.release(handed.name)
        finally:
            pool.close()
        assert location.is_dir()
    with _connect(pg) as conn:
        assert conn.query("SELECT 1 FROM pg_tablespace WHERE spcname = "
                          + pgwire.quote_literal(tablespace)) == []
    assert list(parent.iterdir()) == [], "the tablespace's directory is removed with it"


def test_a_dead_runs_tablespace_and_copies_and_stray_files_are_dropped_by_the_next_pool(
    pg: PG, template: str, tmp_path: Path
) -> None:
    parent = _scratch_parent(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    location = parent / f"db-tool-copies-{pid}"
    location.mkdir(mode=0o700)
    account = privs.server_account(None)
    if account is not None:
        os.chown(location, account.uid, account.gid)
    orphan_ts, orphan_db = f"dbt_ts_{pid}", f"dbt_p_{pid}_1"
    with _connect(pg) as conn:
        conn.query(f"CREATE TABLESPACE {orphan_ts} LOCATION '{location}'")
        conn.query(clone.clone_sql(orphan_db, template, tablespace=orphan_ts))
    # …and the files of a copy whose CREATE DATABASE never committed (the server stopped in
    # the middle): no database owns them, and DROP TABLESPACE refuses a non-empty one.
    (version,) = list(location.glob("PG_*"))
    (version / "4000000000").mkdir()
    (version / "4000000000" / "1259").write_bytes(b"\0" * 8192)
    pool = _pool(pg, template, size=1)
    try:
        pool.release(pool.acquire(pool.next_name("after")).name)
    finally:
        pool.close()
    with _connect(pg) as conn:
        assert conn.query(f"SELECT 1 FROM pg_tablespace WHERE spcname = '{orphan_ts}'") == []
        assert conn.query(f"SELECT 1 FROM pg_database WHERE datname = '{orphan_db}'") == []
    assert not location.exists()


def test_a_ram_dir_is_a_tmpfs_mount_with_room(tmp_path: Path) -> None:
    assert clone_pool.ram_dir(1, (str(tmp_path),)) is None, "not a mount point of its own"
    if "/dev/shm" not in clone_pool._tmpfs_mounts():
        pytest.skip("/dev/shm is no tmpfs here")
    assert clone_pool.ram_dir(1, ("/nonexistent", "/dev/shm")) == "/dev/shm"
    assert clone_pool.ram_dir(1 << 62, ("/dev/shm",)) is None, "not when it lacks the room"
    mib = 1 << 20
    assert clone_pool.ram_need(8 * mib, 8, 4) == 2 * clone_pool.ram_need(8 * mib, 8, 2) - 64 * mib
    assert clone_pool.ram_need(8 * mib, 8, 1) == clone_pool.ram_need(8 * mib, 8, 2), \
        "room for a second pool even without xdist"


def test_close_with_wait_returns_once_the_session_left_so_a_rename_does_not_wait(
    pg: PG, template: str
) -> None:
    # Without the wait PostgreSQL still counts the leaving session and the rename sleeps
    # 100 ms in most of these rounds.
    name = "w_" + uuid.uuid4().hex[:10]
    spent = 0.0
    with _connect(pg) as conn:
        conn.query(clone.clone_sql(name, template))
        try:
            for i in range(10):
                _connect(pg, name).close(wait=True)
                started = time.monotonic()
                clone.rename(conn, name, f"{name}_{i}")
                spent += time.monotonic() - started
                name = f"{name}_{i}"
        finally:
            clone.drop(conn, name)
    assert spent < 0.5, f"10 renames right after a close took {spent:.2f} s"


def test_pool_hands_out_each_copy_once_and_never_a_used_one(pg: PG, template: str) -> None:
    pool = _pool(pg, template, size=2)
    oids = set()
    try:
        for i in range(12):
            handed = pool.acquire(pool.next_name(f"t{i}"))
            with _connect(pg) as conn:
                (oid,), = conn.query("SELECT oid::text FROM pg_database WHERE datname = "
                                     + pgwire.quote_literal(handed.name))
            assert oid not in oids
            oids.add(oid)
            with _connect(pg, handed.name) as db:
                assert db.query("SELECT count(*) FROM item") == [["0"]]
                db.query(f"INSERT INTO item VALUES ({i})")
            pool.release(handed.name)  # dropped later, in the background
    finally:
        pool.close()
    assert _databases_of(pg, pool) == [], "close() drops what is ready and what was released"


def test_an_autovacuum_worker_on_the_template_does_not_refuse_the_copy() -> None:
    """CREATE DATABASE … TEMPLATE signals an autovacuum worker on the source to leave and
    waits for it; only real sessions make the copy fail (a CI run once failed on one)."""
    from db_tool.errors import Error

    clone._refuse_if_used([("42", "autovacuum worker", "")], "tpl")  # no error
    with pytest.raises(Error, match=r"pid 43 \(psql\)"):
        clone._refuse_if_used([("42", "autovacuum worker", ""), ("43", "client backend", "psql")],
                              "tpl")


def test_connections_opened_ahead_come_with_fresh_copies_and_plain_acquires_get_none(
    pg: PG, template: str
) -> None:
    pool = _pool(pg, template, size=2)
    opened: list[str] = []

    def connector(name: str) -> pgwire.Connection:
        opened.append(name)
        return _connect(pg, name)

    try:
        pool.connect_with(connector)
        deadline = time.monotonic() + 30
        while len(opened) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        seen = set()
        for i in range(6):
            handed = pool.acquire(pool.next_name(f"c{i}"), connected=True)
            if handed.conn is not None:
                assert handed.name in opened and handed.name.startswith("dbt_p_"), \
                    "a copy with a session keeps its pool name (it cannot be renamed)"
                conn = handed.conn
            else:
                conn = _connect(pg, handed.name)
            with conn:
                assert conn.query("SELECT current_database(), count(*) FROM item") == \
                    [[handed.name, "0"]]
                conn.query("INSERT INTO item VALUES (1)")
            assert handed.name not in seen
            seen.add(handed.name)
            pool.release(handed.name)
        assert any(n in opened for n in seen), "some copies came with their connection"
        plain = pool.acquire(pool.next_name("plain"))
        assert plain.conn is None, "a plain acquire never gets a connection opened ahead"
        pool.release(plain.name)
    finally:
        pool.close()
    assert _databases_of(pg, pool) == [], \
        "close() closes the connections opened ahead and drops their copies"


def test_a_full_scratch_tablespace_makes_the_copies_go_to_the_data_dir_not_fail(
    pg: PG, template: str, tmp_path: Path
) -> None:
    # /dev/shm is shared with every process on the machine: it can fill up mid-run (other
    # users, more xdist workers than ram_need counted). A copy that does not fit must still be
    # made, in the data dir, instead of failing every test after it.
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    parent = _scratch_parent(tmp_path)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0711", "tmpfs",
                              str(parent)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        with clone_pool.scratch_tablespace(_address(pg), str(parent)) as tablespace:
            assert tablespace is not None
            pool = _pool(pg, template, size=1, tablespace=tablespace)
            try:
                name = pool.acquire(pool.next_name("full")).name
                with _connect(pg, name) as db:
                    assert db.query("SELECT count(*) FROM item") == [["0"]]
                pool.release(name)
            finally:
                pool.close()
    finally:
        subprocess.run(["umount", "-l", str(parent)], check=False)


def test_the_scratch_dir_is_not_chowned_through_a_link_swapped_in_for_it(
    pg: PG, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --db-tool-scratch=DIR may be a directory another account controls: between mkdtemp and
    # the chown it can put a link to root's files in place of ours.
    account = privs.server_account(None)
    if account is None:
        pytest.skip("only root hands the directory to a server account")
    parent = _scratch_parent(tmp_path)
    victim = tmp_path / "roots"
    victim.mkdir()
    made = clone_pool.tempfile.mkdtemp

    def swapped(prefix: str, dir: str) -> str:
        location = made(prefix=prefix, dir=dir)
        os.rename(location, location + ".moved")
        os.symlink(victim, location)
        return location

    monkeypatch.setattr(clone_pool.tempfile, "mkdtemp", swapped)
    with clone_pool.scratch_tablespace(_address(pg), str(parent)) as tablespace:
        assert tablespace is None, "falls back to the data dir"
    assert victim.stat().st_uid == 0, "root's directory was handed to the server account"
