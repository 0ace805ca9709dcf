"""Why a server did not start: read its log and say what is wrong and what to do.

A start failure that says the *data* is broken (BROKEN_DATA, unless a NOT_DATA line says the
cause lies elsewhere) raises BrokenData, on which the caller may move the data aside (self-heal);
everything else is an Error that leaves the data as it was.

Everything takes explicit values (the log window, data dir, socket dir, port, superuser).
"""

from __future__ import annotations

from db_tool import safefs
from db_tool.errors import Error

TYPE_CHECKING = False  # no typing at run time: a start's StartLog is made on the hook path
if TYPE_CHECKING:
    from pathlib import Path
    from typing import NoReturn

    from db_tool import pgwire, proc

# Start failures that say the *data* is broken (self-heal moves it aside) ...
BROKEN_DATA = (
    "could not locate a valid checkpoint record",
    "invalid checkpoint record",
    "invalid primary checkpoint",
    "invalid secondary checkpoint",
    "incorrect checksum in control file",
    "could not find the database system",
    "invalid magic number",
    "could not read from log segment",
    "invalid resource manager id",
    "could not open file \"global/",
    "could not open file \"base/",
    "could not open file \"pg_",
    "could not open directory \"pg_",
    "could not access status of transaction",
    "is not a valid data directory",
    "invalid data in file",
    "PANIC:",
)
# ... unless one of these says the cause lies elsewhere (never touch the data then).
NOT_DATA = (
    "lock file",
    "Address already in use",
    "could not bind",
    "could not create any Unix-domain sockets",
    "configuration file",
    "invalid value for parameter",
    "unrecognized configuration parameter",
    "could not access file",
    "could not load library",
    "database files are incompatible",
    "Permission denied",
    "permission denied",
    "is another postmaster",
    "could not create shared memory",
    "could not map anonymous shared memory",
)


class BrokenData(Exception):
    """The server refused to start because its data is damaged (reason: the log's words)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StartLog:
    """Where one start's messages are: `server_log` from byte `offset`, and the newest file
    of `log_dir` written since `started_at` (after the logging collector took over)."""

    __slots__ = ("account", "log_dir", "offset", "server_log", "started_at")

    def __init__(self, server_log: Path, log_dir: Path, offset: int, started_at: float,
                 account: proc.RunAs | None) -> None:
        self.server_log = server_log
        self.log_dir = log_dir
        self.offset = offset
        self.started_at = started_at
        self.account = account

    def tail(self, lines: int = 20) -> str:
        text = ""
        try:
            with open(self.server_log, "rb") as fh:
                fh.seek(self.offset)
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            pass
        try:
            newest = max(
                (p for p in self.log_dir.iterdir() if p.stat().st_mtime >= self.started_at - 1),
                key=lambda p: p.stat().st_mtime,
                default=None,
            )
            if newest is not None:
                text += safefs.read_text(newest, self.account) or ""
        except (OSError, Error):
            pass
        return "\n".join(text.strip().splitlines()[-lines:])


def start_failed(log: StartLog, datadir: Path, sockdir: Path, port: int) -> NoReturn:
    """The server exited during start-up: raise BrokenData or the Error that says why."""
    tail = log.tail(lines=60)
    if not any(s in tail for s in NOT_DATA):
        for marker in BROKEN_DATA:
            if marker in tail:
                raise BrokenData(marker.rstrip(":").strip('"'))
    if 'lock file "postmaster.pid" already exists' in tail:
        raise Error(
            f"{datadir}/postmaster.pid names a process that is not this cluster's "
            "server, so PostgreSQL will not start: if no server runs on this data dir, "
            "remove that file — the data was left as it was",
            detail=tail,
        )
    sock_lock = f".s.PGSQL.{port}.lock"
    if sock_lock in tail and ("already exists" in tail or "another postmaster" in tail):
        raise Error(
            f"the socket in {sockdir} (port {port}) is in use by another server; "
            "stop it or choose another PG_PORT — the data was left as it was",
            detail=tail,
        )
    if "could not create lock file" in tail and (
        "Read-only file system" in tail or "Permission denied" in tail
    ):
        where = sockdir if sock_lock in tail else datadir
        why = "read-only file system" if "Read-only" in tail else "permission denied"
        raise Error(
            f"{where} is not writable for the server ({why}): make it writable — the data "
            "was left as it was",
            detail=tail,
        )
    raise Error(
        f"PostgreSQL failed to start (data in {datadir} left as it was); the server "
        f"said (full log: {log.server_log}):",
        detail="\n".join(tail.splitlines()[-15:]),
    )


def connect_failed(exc: pgwire.PgError, log: StartLog, datadir: Path, superuser: str) -> NoReturn:
    """The server is up but the first connection was refused: raise what that means."""
    # Up, but its catalogs are unreadable (e.g. a missing global/1262): broken data.
    if exc.code.startswith(("58", "XX")) and any(m in exc.message for m in BROKEN_DATA):
        raise BrokenData(exc.message) from exc
    if exc.code == "28000" and "role" in exc.message:
        raise Error(
            f"the cluster in {datadir} has no role {superuser!r} (it was "
            "made by another login): unset PG_REUSE for a fresh cluster, or turn a "
            "copy into a local one with `database normalize-backup` — its data was "
            "left as it was",
        ) from exc
    raise Error(
        f"PostgreSQL started but refuses connections: {exc.message}",
        detail=log.tail(),
    ) from exc
