"""sqlsplit.one_query against psql itself: a fake server records the queries psql sends.

For every inlinable case (1) psql reading the original file ends its statements exactly where
one_query put a `\\;`, with standard_conforming_strings on and off, and (2) psql reading the
rewritten text sends ONE query holding the same statements.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from db_tool import psql
from db_tool.sqlsplit import OneQuery, one_query
from tests.test_sqlsplit import INLINED

PORT = 5432


class FakeServer:
    """Just enough of the PostgreSQL protocol for psql -f: trust auth, simple queries."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.params = {
            "server_version": "15.0", "server_encoding": "UTF8", "client_encoding": "UTF8",
            "standard_conforming_strings": "on", "DateStyle": "ISO, MDY",
            "integer_datetimes": "on",
        }
        self.queries: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(os.fspath(directory / f".s.PGSQL.{PORT}"))
        self.sock.listen(5)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as f:
                self._session(conn, f)

    def _session(self, conn: socket.socket, f: BinaryIO) -> None:
        read = f.read
        while True:
            n, code = struct.unpack("!ii", read(8))
            read(n - 8)
            if code not in (80877103, 80877104):  # SSL / GSS encryption requests
                break
            conn.sendall(b"N")
        out = [b"R" + struct.pack("!ii", 8, 0)]
        for key, value in self.params.items():
            body = key.encode() + b"\0" + value.encode() + b"\0"
            out.append(b"S" + struct.pack("!i", 4 + len(body)) + body)
        out += [b"K" + struct.pack("!iii", 12, 1, 2), b"Z" + struct.pack("!i", 5) + b"I"]
        conn.sendall(b"".join(out))
        while True:
            kind = read(1)
            if kind in (b"", b"X"):
                return
            (n,) = struct.unpack("!i", read(4))
            body = read(n - 4)
            if kind == b"Q":
                self.queries.append(body[:-1].decode("utf-8"))
                tag = b"SELECT 0\0"
                conn.sendall(b"C" + struct.pack("!i", 4 + len(tag)) + tag
                             + b"Z" + struct.pack("!i", 5) + b"I")

    def run(self, sql: str, tmp: Path) -> list[str]:
        """The queries psql sends for `psql -f` of a file holding sql."""
        path = tmp / "input.sql"
        path.write_text(sql, encoding="utf-8")
        self.queries = []
        out = subprocess.run(
            [psql.psql_path(), "-X", "-q", "-v", "ON_ERROR_STOP=0", "-d",
             f"host={self.directory} port={PORT} user=u dbname=u", "-f", os.fspath(path)],
            capture_output=True, text=True, check=False, timeout=30,
        )
        assert out.returncode == 0, out.stderr
        return list(self.queries)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    fake = FakeServer(tmp_path_factory.mktemp("fake-pg"))
    yield fake
    fake.sock.close()


def _norm(text: str) -> str:
    return re.sub(r"\s", "", text)


# (psql rewrites :{?name} to TRUE/FALSE, which the text comparison below would not find)
CORPUS = [sql for sql, _ in INLINED if "\\;" not in sql and ":{?" not in sql] + [
    "CREATE TABLE item (id serial, label text);\n\n-- seed; rows\nINSERT INTO item (label)\n"
    "  VALUES ('a;b'), (E'c\\';d'), ($x$e;f$x$);\nSELECT (SELECT 1; 2);\nSELECT 3",
    "CREATE FUNCTION f(int) RETURNS int LANGUAGE sql AS $$ SELECT $1; $$;\n"
    "CREATE FUNCTION g() RETURNS int LANGUAGE plpgsql AS $body$\nDECLARE x int := 1;\n"
    "BEGIN\n  IF x > 0 THEN RETURN 1; END IF;\n  RETURN 0;\nEND;\n$body$;\n",
    "UPDATE t SET a = CASE WHEN b THEN 1 ELSE 2 END;\nSELECT :'v' || :\"w\";",
]


@pytest.mark.parametrize("std_strings", ["on", "off"])
@pytest.mark.parametrize("sql", CORPUS)
def test_psql_ends_statements_where_one_query_does(
    server: FakeServer, tmp_path: Path, sql: str, std_strings: str
) -> None:
    got = one_query(sql)
    assert isinstance(got, OneQuery), got
    server.params["standard_conforming_strings"] = std_strings
    queries = server.run(sql, tmp_path)
    # Where psql's statements end, as offsets into sql without whitespace (psql drops empty
    # lines, leading comments and line ends; the order of the rest is unchanged).
    flat, pos, psql_ends = _norm(sql), 0, []
    for query in queries:
        at = flat.find(_norm(query), pos)
        assert at >= 0, (query, flat[pos:])
        pos = at + len(_norm(query))
        if query.endswith(";"):
            psql_ends.append(pos)
    ours = [m.start() - k + 1 for k, m in enumerate(re.finditer(r"\\;", _norm(got.text)))]
    assert psql_ends == ours
    tail = [q for q in queries if not q.endswith(";")]
    if got.terminated:
        # only a comment after the last `;` (psql sends a /* */ comment as an empty query)
        assert all(re.fullmatch(r"(\s|/\*.*\*/)*", q, re.S) for q in tail), tail
    else:
        assert len(tail) == 1 and queries[-1] == tail[0]


@pytest.mark.parametrize("sql", CORPUS)
def test_the_rewrite_goes_as_one_query(server: FakeServer, tmp_path: Path, sql: str) -> None:
    got = one_query(sql)
    assert isinstance(got, OneQuery), got
    server.params["standard_conforming_strings"] = "on"
    queries = server.run("BEGIN \\; " + got.text + "\n\\; COMMIT;\n", tmp_path)
    assert len(queries) == 1, queries
    body = _norm(queries[0])
    assert body.startswith("BEGIN;") and body.endswith(";COMMIT;")
    body = body[len("BEGIN;") : -len(";COMMIT;")]
    # the same text, `\;` now `;`; only empty statements from a trailing comment may differ
    assert _norm(sql).rstrip(";") == body.rstrip(";")


def test_why_a_backslash_in_a_plain_string_is_refused(server: FakeServer, tmp_path: Path) -> None:
    sql = "SELECT 'a\\';' ; SELECT 2;"
    assert not isinstance(one_query(sql), OneQuery)
    splits = {}
    for std_strings in ("on", "off"):
        server.params["standard_conforming_strings"] = std_strings
        splits[std_strings] = server.run(sql, tmp_path)
    assert splits["on"] != splits["off"]  # psql's split depends on the server's setting
