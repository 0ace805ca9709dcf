"""The pool of template copies (db_tool.clone_pool) and the wire client's waiting close, on
the session's real cluster (conftest `pg`)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from db_tool import clone, pgwire
from db_tool.clone_pool import Pool
from tests.conftest import PG


def _connect(pg: PG, database: str = "postgres") -> pgwire.Connection:
    return pgwire.connect(pg.sockdir, pg.port, pg.user, database)


@pytest.fixture
def template(pg: PG) -> Iterator[str]:
    name = "tpl_" + uuid.uuid4().hex[:10]
    with _connect(pg) as conn:
        conn.query(f'CREATE DATABASE "{name}"')
        with _connect(pg, name) as db:
            db.query("CREATE TABLE item (id int)")
        yield name
        clone.drop(conn, name)


def _pool(pg: PG, template: str, size: int) -> Pool:
    address: Any = SimpleNamespace(install=pg.install, sockdir=pg.sockdir, port=pg.port,
                                   superuser=pg.user)
    return Pool(address, template, size).start()


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
    with _connect(pg) as conn:
        left = conn.query("SELECT datname FROM pg_database WHERE datname LIKE 'dbt\\_%\\_"
                          f"{pool._tag}\\_%'")
    assert left == [], "close() drops what is ready and what was released"


def test_an_autovacuum_worker_on_the_template_does_not_refuse_the_copy() -> None:
    """CREATE DATABASE … TEMPLATE signals an autovacuum worker on the source to leave and
    waits for it; only real sessions make the copy fail (a CI run once failed on one)."""
    from db_tool.errors import Error

    clone._refuse_if_used([("42", "autovacuum worker", "")], "tpl")  # no error
    with pytest.raises(Error, match=r"pid 43 \(psql\)"):
        clone._refuse_if_used([("42", "autovacuum worker", ""), ("43", "client backend", "psql")],
                              "tpl")
