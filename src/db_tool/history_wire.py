"""Read the migration history and the bundle's state over the built-in wire client.

A `migrate` with nothing to do and every `status` need two small reads; spawning psql for them
(~30 ms) and re-applying the 20 KB bundle cost more than the answer. When the URL names a unix
socket we can reach with trust auth, `read_state` answers over db_tool.pgwire in a few round
trips; in every other case (TCP, a password, SSL or other options, an error of any kind) it
returns None and the caller takes the psql path, which then reports real errors itself.
"""

from __future__ import annotations

import os

from db_tool.conninfo import unpct
from db_tool.record import Record

TYPE_CHECKING = False  # typing is not imported at run time (a no-op migrate starts fast)
if TYPE_CHECKING:
    from collections.abc import Mapping

    from db_tool import pgwire
    from db_tool.migrations import Applied

# The libpq URL parameters that do not change where or how we connect.
_HARMLESS = frozenset({"application_name", "connect_timeout", "fallback_application_name"})


class Address(Record):
    __slots__ = _fields = ("sockdir", "port", "user", "database")

    def __init__(self, sockdir: str, port: int, user: str, database: str) -> None:
        self.sockdir = sockdir
        self.port = port
        self.user = user
        self.database = database


class State(Record):
    """What the database holds: whether the bundle is ours at this version, and the history
    (None when there is no hectic.migration table)."""

    __slots__ = _fields = ("bundle_current", "applied")

    def __init__(self, bundle_current: bool, applied: list[Applied] | None) -> None:
        self.bundle_current = bundle_current
        self.applied = applied


def _unpct(text: str) -> str:
    return unpct(text, errors="strict")  # bytes that are no UTF-8: leave it to psql


def address(url: str, env: Mapping[str, str]) -> Address | None:
    """Where a postgresql:// URL points, when that is a unix socket without a password."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return None
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if ":" in userinfo or "," in hostport:
        return None  # a password (trust auth only here), or several hosts
    try:
        params = {}
        for pair in query.split("&") if query else []:
            key, eq, value = pair.partition("=")
            if not eq:
                return None
            params[_unpct(key)] = _unpct(value)
        host, port = hostport, ""
        if not hostport.startswith("["):
            host, _, port = hostport.partition(":")
        host = params.pop("host", _unpct(host)) or env.get("PGHOST", "")
        port = params.pop("port", port) or env.get("PGPORT", "") or "5432"
        user = params.pop("user", _unpct(userinfo) if at else "") or env.get("PGUSER", "")
        database = params.pop("dbname", _unpct(path)) or user
        # Over a unix socket libpq never tries SSL: these modes connect as we do.
        if params.get("sslmode") in ("disable", "allow", "prefer"):
            del params["sslmode"]
        if set(params) - _HARMLESS or "password" in params:
            return None
        if not user:
            import pwd

            user = pwd.getpwuid(os.geteuid()).pw_name
            database = database or user
        if not host.startswith("/") or not port.isdigit():
            return None
        return Address(host, int(port), user, database)
    except (UnicodeError, KeyError, ValueError):
        return None


_HISTORY = (
    "SELECT encode(convert_to(name, 'UTF8'), 'hex'), hash, to_char(applied_at AT TIME ZONE "
    "'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM hectic.migration ORDER BY id"
)


_READS = [
    "SELECT to_regclass('hectic.version') IS NOT NULL, "
    "to_regclass('hectic.migration') IS NOT NULL, "
    "pg_catalog.obj_description(to_regnamespace('hectic'), 'pg_namespace')",
    "SELECT version FROM hectic.version WHERE name = 'hectic'",
    _HISTORY,
]


class PendingState:
    """The reads of read_state, sent and not yet answered (start_state)."""

    def __init__(self, pending: pgwire.Pending | None, version: str, comment: str) -> None:
        self.pending = pending
        self.version = version
        self.comment = comment

    def close(self) -> None:
        """Not waiting for the answers after all."""
        if self.pending is not None:
            self.pending.conn.close()
            self.pending = None

    def result(self) -> State | None:
        """The database's State, or None when the wire client cannot tell (use psql then)."""
        if self.pending is None:
            return None
        from db_tool import pgwire
        from db_tool.migrations import Applied

        try:
            # One round trip: the reads of tables that may be missing fail on their own
            # (42P01), and the first answer says which of them exist.
            tables, have, history = self.pending.answers()
            if isinstance(tables, pgwire.PgError):
                return None
            (has_version, has_history, schema_comment), = tables
            if (has_version == "t") == isinstance(have, pgwire.PgError):
                return None  # changed between the queries, or another error: ask psql
            if (has_history == "t") == isinstance(history, pgwire.PgError):
                return None
            current = (has_version == "t" and schema_comment == self.comment
                       and have == [[self.version]])
            applied = None
            if not isinstance(history, pgwire.PgError):
                applied = [
                    Applied(bytes.fromhex(r[0] or "").decode("utf-8"), r[1] or "", r[2] or "")
                    for r in history
                ]
            return State(current, applied)
        except (pgwire.PgError, OSError, UnicodeError, ValueError, IndexError):
            return None


def start_state(url: str, env: Mapping[str, str], *, version: str, comment: str
                ) -> PendingState:
    """read_state's reads sent at once; .result() answers (the caller works meanwhile)."""
    where = address(url, env)
    if where is None:
        return PendingState(None, version, comment)
    from db_tool import pgwire

    try:
        pending = pgwire.start(where.sockdir, where.port, where.user, where.database, _READS,
                               timeout=10.0)
    except (pgwire.PgError, OSError):
        return PendingState(None, version, comment)
    return PendingState(pending, version, comment)


def read_state(url: str, env: Mapping[str, str], *, version: str, comment: str) -> State | None:
    """The database's State, or None when the wire client cannot tell (use psql then).

    bundle_current: hectic.version says `version` and the hectic schema carries `comment`
    (which only our bundle sets: a database the original's bundle made still gets ours once)."""
    return start_state(url, env, version=version, comment=comment).result()


def bundle_comment() -> str:
    """The COMMENT our bundle puts on schema hectic: with the version row it says "our bundle,
    this version, is in place" (the original's bundle sets no comment)."""
    from db_tool import bundle

    with open(bundle.sql_file("version"), encoding="utf-8") as fh:
        text = fh.read()
    # The literal after the first `COMMENT ON SCHEMA hectic IS '` ('' stands for ') — without
    # `re`, which the no-op paths do not import.
    lead = "COMMENT ON SCHEMA hectic IS '"
    at = text.find(lead)
    if at < 0:
        return ""
    start = end = at + len(lead)
    while True:
        end = text.find("'", end)
        if end < 0:
            return ""
        if text.startswith("''", end):
            end += 2
            continue
        return text[start:end].replace("''", "'")


def quick_state(url: str, env: Mapping[str, str]) -> State | None:
    """read_state for our bundle at its version."""
    return start_quick(url, env).result()


def start_quick(url: str, env: Mapping[str, str]) -> PendingState:
    """start_state for our bundle at its version. The reads go out first: the server starts
    the backend while the bundle's version and comment are looked up here."""
    if address(url, env) is None:
        return PendingState(None, "", "")
    state = start_state(url, env, version="", comment="")
    try:
        from db_tool import bundle

        state.version, state.comment = bundle.VERSION, bundle_comment()
    except BaseException:
        state.close()
        raise
    return state
