"""Databases as template copies: clone, rename, drop, describe — shared by `database branch`
and the pytest plugin.

A clone is `CREATE DATABASE new TEMPLATE source`: PostgreSQL refuses it while any other
session is connected to the source. pg_cron's scheduler keeps a connection to PG_DATABASE and
pg_cron 1.4 neither lets go of it quickly nor comes back once ended, so that case is reported
as CronInTheWay and the caller copies with the server stopped. Any other session is listed in
the error.

Everything here speaks through the built-in wire client (pgwire): no psql start-up per
statement, which is what makes a clone cost little more than the copy itself.
"""

from __future__ import annotations

import time

from db_tool import pgwire
from db_tool.errors import Error
from db_tool.record import Frozen

NAME_MAX = 63  # NAMEDATALEN - 1 bytes
COMMENT_TAG = "db-tool branch "
_BUSY = "55006"  # object_in_use: "source database is being accessed by other users"
_DISK_FULL = "53100"  # disk_full: ENOSPC while writing the copy


class Clone(Frozen):
    """A database copied from another (how long it took)."""

    __slots__ = _fields = ("name", "source", "seconds")
    name: str
    source: str
    seconds: float

    def __init__(self, name: str, source: str, seconds: float) -> None:
        self._set(name=name, source=source, seconds=seconds)


class CronInTheWay(Error):
    """The only session on the source is pg_cron's scheduler: copy with the server stopped."""


class DiskFull(Error):
    """The copy did not fit where it was to go (PostgreSQL removed what it had written)."""


class DatabaseInfo(Frozen):
    """One database of a cluster, as `database branch list` shows it."""

    __slots__ = _fields = ("name", "size_bytes", "comment")
    name: str
    size_bytes: int
    comment: str | None

    def __init__(self, name: str, size_bytes: int, comment: str | None) -> None:
        self._set(name=name, size_bytes=size_bytes, comment=comment)


def check_name(name: str, what: str = "database") -> str:
    if not name or "\0" in name or "\n" in name:
        raise Error(f"{what} name {name!r} is empty or holds a NUL or newline: choose another")
    if len(name.encode("utf-8")) > NAME_MAX:
        raise Error(f"{what} name {name!r} is longer than {NAME_MAX} bytes: choose a shorter one")
    if name in ("postgres", "template0", "template1"):
        raise Error(f"{name} is PostgreSQL's own database: choose another {what} name")
    return name


def exists(conn: pgwire.Connection, name: str) -> bool:
    rows = conn.query(f"SELECT 1 FROM pg_database WHERE datname = {pgwire.quote_literal(name)}")
    return bool(rows)


def _sessions(conn: pgwire.Connection, name: str) -> list[tuple[str, str, str]]:
    rows = conn.query(
        "SELECT pid::text, coalesce(backend_type, ''), coalesce(application_name, '') "
        f"FROM pg_stat_activity WHERE datname = {pgwire.quote_literal(name)} "
        "AND pid <> pg_backend_pid()"
    )
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


def clone_sql(
    name: str, source: str, strategy: str | None = None, tablespace: str | None = None
) -> str:
    sql = f"CREATE DATABASE {pgwire.quote_ident(name)} TEMPLATE {pgwire.quote_ident(source)}"
    if strategy:
        sql += f" STRATEGY {strategy}"
    return sql + (f" TABLESPACE {pgwire.quote_ident(tablespace)}" if tablespace else "")


def clone(
    conn: pgwire.Connection, name: str, source: str, *, strategy: str | None = None,
    tablespace: str | None = None,
) -> Clone:
    """CREATE DATABASE name TEMPLATE source; CronInTheWay when only pg_cron is connected."""
    started = time.monotonic()
    # PostgreSQL waits 5 s for other sessions to leave before it refuses: look first.
    _refuse_if_used(_sessions(conn, source), source)
    for _ in range(3):
        try:
            conn.query(clone_sql(name, source, strategy, tablespace))
            return Clone(name, source, time.monotonic() - started)
        except pgwire.PgError as exc:
            if exc.code == "42P04":
                raise Error(f"database {name} exists already: choose another name or drop "
                            "it first") from None
            if exc.code == "3D000":
                raise Error(f"database {source} does not exist: nothing to copy") from None
            if exc.code == _DISK_FULL:
                raise DiskFull(f"copying database {source} to {name} failed: {exc.message}") \
                    from None
            if exc.code != _BUSY:
                raise Error(f"copying database {source} to {name} failed: {exc.message}") \
                    from None
            _refuse_if_used(_sessions(conn, source), source)
            time.sleep(0.05)  # a session that just left: try again
    raise Error(f"cannot copy database {source}: sessions keep connecting to it; retry")


def _refuse_if_used(others: list[tuple[str, str, str]], source: str) -> None:
    # An autovacuum worker is no user: CREATE DATABASE signals it to leave and waits.
    others = [o for o in others if o[1] != "autovacuum worker"]
    if not others:
        return
    if all(kind == "pg_cron launcher" for _, kind, _ in others):
        raise CronInTheWay(f"pg_cron's scheduler is connected to {source}")
    shown = ", ".join(f"pid {pid} ({app or kind})" for pid, kind, app in others[:5])
    raise Error(
        f"cannot copy database {source}: other sessions are connected to it ({shown}); "
        "PostgreSQL copies a database only while nobody else uses it — close them and retry"
    )


def rename(conn: pgwire.Connection, old: str, new: str) -> None:
    try:
        conn.query(f"ALTER DATABASE {pgwire.quote_ident(old)} RENAME TO {pgwire.quote_ident(new)}")
    except pgwire.PgError as exc:
        raise Error(f"renaming database {old} to {new} failed: {exc.message}") from None


def drop(conn: pgwire.Connection, name: str, *, force: bool = True) -> None:
    sql = f"DROP DATABASE IF EXISTS {pgwire.quote_ident(name)}"
    if force:
        sql += " WITH (FORCE)"
    try:
        conn.query(sql)
    except pgwire.PgError as exc:
        raise Error(f"dropping database {name} failed: {exc.message}") from None


def set_comment(conn: pgwire.Connection, name: str, comment: str | None) -> None:
    value = "NULL" if comment is None else pgwire.quote_literal(comment)
    conn.query(f"COMMENT ON DATABASE {pgwire.quote_ident(name)} IS {value}")


def databases(conn: pgwire.Connection) -> list[DatabaseInfo]:
    rows = conn.query(
        "SELECT d.datname, pg_database_size(d.oid)::text, "
        "shobj_description(d.oid, 'pg_database') FROM pg_database d "
        "WHERE d.datallowconn AND NOT d.datistemplate ORDER BY d.datname"
    )
    return [DatabaseInfo(str(r[0]), int(r[1] or 0), r[2]) for r in rows]


# ---- branch metadata, kept in the database's own comment (it travels with the data) --------
class BranchMeta(Frozen):
    """A branch's parent and creation time, kept in its database comment."""

    __slots__ = _fields = ("parent", "created")
    parent: str
    created: float  # unix time

    def __init__(self, parent: str, created: float) -> None:
        self._set(parent=parent, created=created)

    def to_comment(self) -> str:
        # JSON written by hand: `branch create` would otherwise import json for this alone.
        parent = _json_string(self.parent)
        return COMMENT_TAG + f'{{"parent": {parent}, "created": {self.created!r}}}'

    @classmethod
    def from_comment(cls, comment: str | None) -> BranchMeta | None:
        if not comment or not comment.startswith(COMMENT_TAG):
            return None
        import json

        try:
            data = json.loads(comment[len(COMMENT_TAG):])
            return cls(str(data["parent"]), float(data["created"]))
        except (ValueError, KeyError, TypeError):
            return None


def _json_string(value: str) -> str:
    """value as a JSON string literal (what json.dumps writes, non-ASCII kept as is)."""
    out = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(f"\\u{ord(ch):04x}" if ord(ch) < 0x20 or 0xD800 <= ord(ch) < 0xE000
                         else ch for ch in out) + '"'
