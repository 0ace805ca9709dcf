"""A minimal PostgreSQL wire-protocol client for unix sockets with trust auth.

Used where spawning psql (~30 ms) or importing psycopg (~300 ms) would dominate:
readiness checks after start, "does this database exist", CREATE DATABASE.
Only the simple-query protocol and AuthenticationOk are supported.
"""

from __future__ import annotations

import os
import struct
import time

TYPE_CHECKING = False  # typing is not imported at run time (a no-op migrate starts fast)
if TYPE_CHECKING:
    import _socket


class PgError(Exception):
    """An ErrorResponse from the server (or a connection problem: code '08006')."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


def socket_path(sockdir: str | os.PathLike[str], port: int) -> str:
    return os.path.join(os.fspath(sockdir), f".s.PGSQL.{port}")


class Connection:
    # A plain class, not a dataclass: importing dataclasses costs more than a no-op migrate.
    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        # What the server sent and was not read yet: one recv serves many messages (a
        # history of 500 rows is 500 DataRows, 1000 recv calls when read message by message).
        self._buf = bytearray()

    def _read_exact(self, n: int) -> bytes:
        buf = self._buf
        while len(buf) < n:
            chunk = self.sock.recv(max(65536, n - len(buf)))
            if not chunk:
                raise PgError("08006", "server closed the connection")
            buf += chunk
        out = bytes(buf[:n])
        del buf[:n]  # from the front of a bytearray: no copy of the rest
        return out

    def _read_message(self) -> tuple[bytes, bytes]:
        header = self._read_exact(5)
        (length,) = struct.unpack("!I", header[1:])
        return header[:1], self._read_exact(length - 4)

    @staticmethod
    def _error(body: bytes) -> PgError:
        fields = {}
        for part in body.split(b"\0"):
            if part:
                fields[part[:1]] = part[1:].decode("utf-8", "replace")
        return PgError(fields.get(b"C", "XX000"), fields.get(b"M", "unknown error"))

    def _until_ready(self) -> list[list[str | None]]:
        rows: list[list[str | None]] = []
        error: PgError | None = None
        while True:
            kind, body = self._read_message()
            if kind == b"E":
                error = self._error(body)
            elif kind == b"D":
                (count,) = struct.unpack("!H", body[:2])
                pos = 2
                row: list[str | None] = []
                for _ in range(count):
                    (size,) = struct.unpack("!i", body[pos : pos + 4])
                    pos += 4
                    if size < 0:
                        row.append(None)
                    else:
                        row.append(body[pos : pos + size].decode("utf-8"))
                        pos += size
                rows.append(row)
            elif kind == b"Z":
                if error is not None:
                    raise error
                return rows

    def _await_ready(self) -> None:
        """The server's answer to the startup packet, up to its first ReadyForQuery."""
        while True:
            kind, body = self._read_message()
            if kind == b"E":
                raise self._error(body)
            if kind == b"R":
                (code,) = struct.unpack("!I", body[:4])
                if code != 0:
                    raise PgError("28000", "server asks for a password; db-tool needs trust auth")
            elif kind == b"Z":
                return

    def query(self, sql: str) -> list[list[str | None]]:
        self.sock.sendall(_query_message(sql))
        return self._until_ready()

    def queries(self, sqls: list[str]) -> list[list[list[str | None]] | PgError]:
        """Each query's rows, or its PgError, in one round trip: the queries are sent
        together and run one after another, each in its own implicit transaction (a failing
        one does not stop the next)."""
        self.sock.sendall(b"".join(_query_message(sql) for sql in sqls))
        return self._answers(len(sqls))

    def _answers(self, count: int) -> list[list[list[str | None]] | PgError]:
        answers: list[list[list[str | None]] | PgError] = []
        for _ in range(count):
            try:
                answers.append(self._until_ready())
            except PgError as exc:
                if exc.code == "08006":
                    raise
                answers.append(exc)
        return answers

    def close(self, wait: bool = False) -> None:
        """Terminate the session. wait=True returns only once the server process has left:
        it closes the socket after leaving the process array, and until then PostgreSQL
        counts it as a session of the database, so an ALTER DATABASE … RENAME or DROP right
        after a plain close would sleep 100 ms in its "other sessions?" poll."""
        try:  # (not contextlib.suppress: the no-op migrate / status path imports no contextlib)
            self.sock.sendall(b"X\0\0\0\4")
            if wait:
                self.sock.settimeout(5.0)
                while self.sock.recv(4096):
                    pass
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _query_message(sql: str) -> bytes:
    payload = sql.encode("utf-8") + b"\0"
    return b"Q" + struct.pack("!I", len(payload) + 4) + payload


def connect(
    sockdir: str | os.PathLike[str], port: int, user: str, database: str, timeout: float = 10.0
) -> Connection:
    conn = _open(sockdir, port, user, database, timeout, b"")
    try:
        conn._await_ready()
    except BaseException:
        conn.sock.close()
        raise
    return conn


class Pending:
    """Queries sent with the startup packet (start()): their answers, read when asked for."""

    def __init__(self, conn: Connection, count: int) -> None:
        self.conn = conn
        self.count = count

    def answers(self) -> list[list[list[str | None]] | PgError]:
        """Each query's rows or PgError (as Connection.queries); the connection is closed
        after. Raises PgError when the connection itself failed (auth, missing database)."""
        try:
            self.conn._await_ready()
            return self.conn._answers(self.count)
        finally:
            self.conn.close()


def start(
    sockdir: str | os.PathLike[str], port: int, user: str, database: str, sqls: list[str],
    timeout: float = 10.0,
) -> Pending:
    """Connect and send the queries at once, without waiting: the server starts a backend
    and runs them while the caller does other work, then Pending.answers() reads them. Trust
    auth only: a server that asks for a password reads the first query as the password
    message and refuses it (answers() raises PgError 28000 then)."""
    early = b"".join(_query_message(sql) for sql in sqls)
    return Pending(_open(sockdir, port, user, database, timeout, early), len(sqls))


def _open(
    sockdir: str | os.PathLike[str], port: int, user: str, database: str, timeout: float,
    early: bytes,
) -> Connection:
    # The C module, not `socket` (its enums and selectors cost more than this connection);
    # here, not at the top: postgres-cleanup (a trap) never connects.
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_path(sockdir, port))
    except OSError as exc:
        sock.close()
        raise PgError("08006", f"cannot connect to {socket_path(sockdir, port)}: {exc}") from exc
    params = b"".join(
        k.encode() + b"\0" + v.encode() + b"\0"
        for k, v in (("user", user), ("database", database), ("application_name", "db-tool"))
    ) + b"\0"
    try:
        sock.sendall(struct.pack("!II", len(params) + 8, 196608) + params + early)
    except BaseException:
        sock.close()
        raise
    return Connection(sock)


def wait_ready(
    sockdir: str | os.PathLike[str], port: int, user: str, database: str, deadline: float
) -> None:
    """Poll until a real connection succeeds or the monotonic deadline passes."""
    while True:
        try:
            connect(sockdir, port, user, database, timeout=2.0).close()
            return
        except PgError as exc:
            if exc.code == "3D000":
                return  # up and answering; only that database is missing

            # 57P03 = starting up; 08006 = socket not there yet
            if exc.code not in ("57P03", "08006") or time.monotonic() > deadline:
                raise
        time.sleep(0.005)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    # Only for the simple-query protocol with standard_conforming_strings=on (the default).
    if "\0" in value:
        raise ValueError("NUL byte in SQL literal")
    return "'" + value.replace("'", "''") + "'"
