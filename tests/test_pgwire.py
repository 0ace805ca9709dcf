"""pgwire, the small wire-protocol client (readiness checks, CREATE DATABASE), against the
real session cluster."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from db_tool import pgwire
from tests.conftest import PG


def connect(pg: PG, database: str = "postgres") -> pgwire.Connection:
    return pgwire.connect(pg.sockdir, pg.port, pg.user, database)


def test_query_returns_rows_of_text_and_null(pg: PG) -> None:
    with connect(pg) as conn:
        assert conn.query("SELECT 1, 'ü 🔑', NULL::text UNION ALL SELECT 2, '', 'x'") == [
            ["1", "ü 🔑", None], ["2", "", "x"]]
        assert conn.query("SELECT 1 WHERE false") == []
        assert conn.query("CREATE TEMP TABLE t (x int)") == []  # a command: no rows


def test_several_statements_in_one_query_return_every_row(pg: PG) -> None:
    with connect(pg) as conn:
        assert conn.query("SELECT 1; SELECT 2") == [["1"], ["2"]]


def test_server_error_carries_the_sqlstate_and_the_connection_stays_usable(pg: PG) -> None:
    with connect(pg) as conn:
        with pytest.raises(pgwire.PgError) as failed:
            conn.query("SELECT 1/0")
        assert (failed.value.code, failed.value.message) == ("22012", "division by zero")
        with pytest.raises(pgwire.PgError) as failed:
            conn.query("SELEKT")
        assert failed.value.code == "42601"
        assert conn.query("SELECT 'still here'") == [["still here"]]


def test_queries_are_answered_in_order_and_a_failing_one_does_not_stop_the_next(
        pg: PG) -> None:
    with connect(pg) as conn:
        first, failed, last = conn.queries(["SELECT 1, NULL::text", "SELECT 1/0", "SELECT 'x'"])
        assert first == [["1", None]] and last == [["x"]]
        assert isinstance(failed, pgwire.PgError) and failed.code == "22012"
        assert conn.query("SELECT 'still here'") == [["still here"]]


def test_queries_sent_with_the_startup_packet_are_answered_later(pg: PG) -> None:
    pending = pgwire.start(pg.sockdir, pg.port, pg.user, "postgres",
                           ["SELECT current_user", "SELEKT", "SELECT repeat('x', 100000)"])
    time.sleep(0.01)  # the caller's own work meanwhile
    user, failed, big = pending.answers()
    assert user == [[pg.user]] and big == [["x" * 100000]]
    assert isinstance(failed, pgwire.PgError) and failed.code == "42601"
    missing = pgwire.start(pg.sockdir, pg.port, pg.user, "no_such_db_" + uuid.uuid4().hex[:8],
                           ["SELECT 1"])
    with pytest.raises(pgwire.PgError) as refused:
        missing.answers()
    assert refused.value.code == "3D000"


def test_connection_identifies_itself_and_close_ends_the_backend(pg: PG) -> None:
    conn = connect(pg)
    (pid,), = conn.query("SELECT pg_backend_pid()::text")
    assert conn.query("SELECT current_setting('application_name'), current_user") == [
        ["db-tool", pg.user]]
    conn.close()
    deadline = time.monotonic() + 10
    with connect(pg) as other:
        while other.query(f"SELECT 1 FROM pg_stat_activity WHERE pid = {pid}"):
            assert time.monotonic() < deadline, "the closed connection's backend lives on"
            time.sleep(0.02)


def test_missing_database_is_3d000_and_missing_socket_08006(pg: PG, tmp_path: Path) -> None:
    with pytest.raises(pgwire.PgError) as failed:
        connect(pg, "no_such_db_" + uuid.uuid4().hex[:8])
    assert failed.value.code == "3D000"
    with pytest.raises(pgwire.PgError) as failed:
        pgwire.connect(tmp_path, pg.port, pg.user, "postgres")
    assert failed.value.code == "08006"
    assert pgwire.socket_path(tmp_path, pg.port) in failed.value.message


def test_wait_ready_returns_for_a_running_server_even_without_the_database(
    pg: PG, tmp_path: Path
) -> None:
    deadline = time.monotonic() + 5
    pgwire.wait_ready(pg.sockdir, pg.port, pg.user, "postgres", deadline)
    pgwire.wait_ready(pg.sockdir, pg.port, pg.user, "no_such_db", deadline)
    started = time.monotonic()
    with pytest.raises(pgwire.PgError) as failed:
        pgwire.wait_ready(tmp_path, pg.port, pg.user, "postgres", time.monotonic() + 0.3)
    assert failed.value.code == "08006"
    assert 0.3 <= time.monotonic() - started < 5  # polled until the deadline, not forever


def test_quote_ident_and_literal_round_trip_through_the_server(pg: PG, db_url: str) -> None:
    name = 'we"ird ü name'
    value = "it's a \\ back'slash ; --"
    database = db_url.split("@/", 1)[1].split("?", 1)[0]
    with connect(pg, database) as conn:
        conn.query(f"CREATE TABLE {pgwire.quote_ident(name)} (v text)")
        conn.query(f"INSERT INTO {pgwire.quote_ident(name)} VALUES "
                   f"({pgwire.quote_literal(value)})")
        assert conn.query(f"SELECT v FROM {pgwire.quote_ident(name)}") == [[value]]
        assert conn.query("SELECT relname FROM pg_class WHERE relname = "
                          f"{pgwire.quote_literal(name)}") == [[name]]
    with pytest.raises(ValueError, match="NUL"):
        pgwire.quote_literal("a\0b")
