"""What the database says is applied, and applying planned steps.

Two backends with one shape: `migrate_session(variables, lock_timeout)` is a context manager
yielding a session whose `.applied` is the history read UNDER the migration lock (so the plan
made from it cannot go stale) and whose `.apply(steps)` runs the plan.

PostgreSQL (`PgHistory`): history in hectic.migration (created by the bundle). A whole `migrate`
run is ONE psql process used as a coprocess: we write to its stdin
  pg_advisory_lock (waited with lock_timeout) → BEGIN; \\i bundle; COMMIT; → read the history,
read the rows back (query output is flushed per query; a final marker row ends the read), plan
in Python, then send one `\\i driver.sql` and close stdin. Each step of the driver is either
  BEGIN \\; <the migration, each `;` written as `\\;`> \\; INSERT/DELETE history row \\; COMMIT;
ONE query, one round trip (when sqlsplit.one_query is certain the rewrite means the same), or
  BEGIN; \\i file; INSERT/DELETE history row \\; COMMIT;
(the history statement, COMMIT and the next `\\i` step's BEGIN share one round trip via `\\;`);
every BEGIN is preceded by _FRESH so a step starts from the session defaults.
`\\echo` markers tell us which step was running if psql stopped. The lock is held for
the whole session, so concurrent migrators apply each migration exactly once.

SQLite (`SqliteHistory`): history in hectic_version / hectic_migration; files run through ONE
`sqlite3` process with `.read`. Concurrent runners are serialised by flock() on the database file
held around init → read → plan → apply.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from db_tool.errors import Error, ExitCode, NotInstalledError
from db_tool.migrations import FILE, Applied, StatusRow, Step
from db_tool.sqlsplit import TxControl, psql_meta_quote

if TYPE_CHECKING:
    from db_tool import history_wire
    from db_tool.settings import MigratorSettings
    from db_tool.sqlsplit import OneQuery

# pg_advisory_lock key shared by every migrator on a database: b"hecticmg" as a big-endian int.
LOCK_KEY = int.from_bytes(b"hecticmg", "big")
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_VAR = "__migrator_"
# Client encodings in which a trail byte of a character can look like `\\` or a quote: psql
# lexes them differently, so non-ASCII migrations are not inlined under them.
_UNSAFE_ENCODINGS = frozenset({"SJIS", "SHIFT_JIS_2004", "BIG5", "GBK", "UHC", "GB18030", "JOHAB"})


class MigrationFailed(Error):
    exit_code = ExitCode.MIGRATION_FAILED

    def __init__(self, message: str, detail: str, completed: Sequence[StepResult]) -> None:
        super().__init__(message, detail=detail)
        self.completed = list(completed)


@dataclass(frozen=True)
class StepResult:
    step: Step  # a step that was applied and committed


# --------------------------------------------------------------------------- quoting helpers


def sqlite_literal(text: str) -> str:
    """A SQLite string literal: SQLite has no backslash escapes, only doubled quotes."""
    if "\0" in text:
        raise Error("NUL byte in a value for SQLite")
    return "'" + text.replace("'", "''") + "'"


def sqlite_dot_quote(text: str) -> str:
    """Quote one argument of a sqlite3 shell dot-command (.read): double quotes with C escapes."""
    out = text.replace("\\", "\\\\").replace('"', '\\"')
    out = out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{out}"'


# --------------------------------------------------------------------------- backends


class Session(Protocol):
    applied: list[Applied]

    def apply(self, steps: Sequence[Step]) -> list[StepResult]: ...


class History(Protocol):
    def init(self, variables: Mapping[str, str]) -> None: ...

    def read_applied(self) -> list[Applied]: ...

    def migrate_session(
        self, variables: Mapping[str, str], lock_timeout: float
    ) -> AbstractContextManager[Session]: ...


def sqlite_path(url: str) -> str | None:
    """The file path when url names a SQLite database, else None."""
    if url.startswith("sqlite://"):
        return url[len("sqlite://") :]
    if url.startswith("sqlite:"):
        return url[len("sqlite:") :]
    if "://" not in url and url.endswith(SQLITE_SUFFIXES):
        return url
    return None


def for_url(url: str, settings: MigratorSettings | None = None) -> PgHistory | SqliteHistory:
    """The backend for url; settings (None: the defaults) say where sqlite3 is looked up,
    whether migrations may be inlined and libpq's PGHOST/PGPORT/PGUSER."""
    path = sqlite_path(url)
    if path is not None:
        return SqliteHistory(path, search_path=None if settings is None else settings.search_path)
    if settings is None:
        return PgHistory(url)
    return PgHistory(url, inline=settings.inline, libpq=settings.libpq)


# Every step starts from the session's defaults, as if it had its own psql: a plain SET (say
# `SET hectic.migration_mode = 'on'` without LOCAL, or SET search_path / ROLE) in one
# migration must not leak into the next. Same line as BEGIN, so error LINE numbers still match.
_FRESH = "RESET SESSION AUTHORIZATION \\; RESET ROLE \\; RESET ALL"
# A file run with `\\i` (or `.read`) runs inside this savepoint of the step's transaction. If
# the file ends our transaction itself (COMMIT, ROLLBACK, \\c), releasing it fails, so the
# history row is never written next to half a migration; the `guard` marker before the release
# tells that failure from one inside the file. No round trip of its own: it shares the lines of
# BEGIN and of the history statement.
_GUARD = "migrator_guard"


def _materialize(step: Step, tmp: Path, index: int) -> Path:
    """The file psql/sqlite3 should run for this step (FILE layout: a temporary copy of the
    section, so an unterminated statement in it cannot swallow our history INSERT)."""
    m = step.migration
    if m.layout != FILE:
        path = m.up if step.direction == "up" else m.down
        assert path is not None
        return path
    body = m.up_sql if step.direction == "up" else m.down_sql
    assert body is not None
    out = tmp / f"{index:05d}-{step.direction}.sql"
    out.write_bytes(body)
    return out


def _markers(out: str, token: str) -> tuple[list[str], str]:
    """(marker words in order, the remaining output)"""
    prefix = f"@@migrator-{token} "
    marks, rest = [], []
    for line in out.splitlines():
        if line.startswith(prefix):
            marks.append(line[len(prefix) :])
        else:
            rest.append(line)
    return marks, "\n".join(rest)


def _results(
    steps: Sequence[Step], marks: list[str]
) -> tuple[list[StepResult], int | None, bool]:
    """Completed steps, the index of the step that was running when the script stopped, and
    whether that step had got past its file (to the savepoint guard)."""
    done: list[StepResult] = []
    running: int | None = None
    guard = False
    for mark in marks:
        word, _, num = mark.partition(" ")
        if word == "begin":
            running, guard = int(num), False
        elif word == "guard":
            guard = True
        elif word == "done":
            done.append(StepResult(steps[int(num)]))
            running, guard = None, False
    return done, running, guard


_NO_TX = TxControl()


def _transaction_control(step: Step) -> TxControl:
    """The step's file's own transaction control (TxControl() when it cannot be read: running
    it reports that)."""
    from db_tool.sqlsplit import transaction_control

    m = step.migration
    if m.layout == FILE:
        body = m.up_sql if step.direction == "up" else m.down_sql
    else:
        path = m.up if step.direction == "up" else m.down
        try:
            body = path.read_bytes() if path is not None else None
        except OSError:
            body = None
    return transaction_control(body) if body is not None else _NO_TX


_READ_SQL = (
    "SELECT name, hash, to_char(applied_at AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM hectic.migration ORDER BY id;\n"
)
# Names are file names: hex keeps any byte of them off our field/line separators.
_READ_HEX_SQL = (
    "SELECT encode(convert_to(name, 'UTF8'), 'hex'), hash, to_char(applied_at AT TIME ZONE "
    "'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM hectic.migration ORDER BY id;\n"
)




class PgHistory:
    def __init__(
        self, url: str, *, inline: bool = True, libpq: Mapping[str, str] | None = None
    ) -> None:
        self.url = url
        self.inline = inline  # send a migration as one query when sqlsplit allows it
        self.libpq: Mapping[str, str] = libpq or {}  # PGHOST, PGPORT, PGUSER for the wire client

    def init(self, variables: Mapping[str, str]) -> None:
        from db_tool import bundle

        bundle.apply(self.url)

    def quick_state(self) -> history_wire.State | None:
        """The bundle's state and the history over the wire client, or None (use psql)."""
        from db_tool import history_wire

        return history_wire.quick_state(self.url, self.libpq)

    def read_applied(self) -> list[Applied]:
        """Read-only (status): an uninitialised database has an empty history."""
        from db_tool import psql

        quick = self.quick_state()
        if quick is not None:
            return quick.applied or []

        rows = psql.query(
            self.url,
            "SELECT to_regclass('hectic.migration') IS NOT NULL AS has_table \\gset\n"
            "\\if :has_table\n" + _READ_SQL + "\\endif\n",
        )
        return [Applied(r[0], r[1], r[2]) for r in rows]

    @contextmanager
    def migrate_session(
        self, variables: Mapping[str, str], lock_timeout: float
    ) -> Iterator[PgSession]:
        from db_tool import proc, psql

        argv = psql.base_argv(self.url, variables=variables) + [
            "-A", "-t", "-F", psql.FIELD_SEP, "-f", "-",
        ]
        from db_tool.signals import interrupt_on_signals

        # SIGTERM/SIGHUP unwind like Ctrl-C: psql is stopped and the temp dir removed.
        with interrupt_on_signals(), tempfile.TemporaryDirectory(prefix="migrator-") as tmpdir, \
                open(Path(tmpdir) / "stderr", "w+b") as errfile:
            child = proc.spawn(argv, env=psql.env("migrator", self.url), stderr=errfile)
            session = PgSession(child, errfile, Path(tmpdir), lock_timeout,
                                inline=self.inline, variables=dict(variables))
            try:
                session.start()
                yield session
            finally:
                session.close(aborted=sys.exc_info()[0] is not None)


@dataclass
class PgSession:
    child: subprocess.Popen[bytes]
    errfile: IO[bytes]
    tmp: Path
    lock_timeout: float
    inline: bool = True
    variables: dict[str, str] = field(default_factory=dict)  # the --set values psql started with
    applied: list[Applied] = field(default_factory=list)
    token: str = field(default_factory=lambda: os.urandom(8).hex())
    encoding: str = ""  # psql's client encoding (its ENCODING variable) at the start

    def _send(self, text: str) -> None:
        assert self.child.stdin is not None
        try:
            self.child.stdin.write(text.encode("utf-8"))
            self.child.stdin.flush()
        except BrokenPipeError:
            pass  # psql already quit; its stderr says why

    def _stderr(self) -> str:
        self.errfile.seek(0)
        return self.errfile.read().decode("utf-8", "replace").strip()

    def _mark(self, word: str) -> str:
        return f"@@migrator-{self.token} {word}"

    def start(self) -> None:
        """Lock, apply the bundle, read the history — all before any plan is made."""
        from db_tool import bundle, history_wire

        bundle_file = self.tmp / "bundle.sql"
        bundle_file.write_text(bundle.render(), encoding="utf-8")
        timeout_ms = max(1, int(self.lock_timeout * 1000))
        self._send("\n".join([
            "\\set ON_ERROR_STOP 1",
            f"SELECT '{self._mark('lock')}';",
            f"SET lock_timeout = {timeout_ms};",
            f"SELECT pg_advisory_lock({LOCK_KEY}) \\g /dev/null",
            "RESET lock_timeout;",
            # Our bundle at this version already in place (see bundle_comment): skip it.
            f"\\set {_VAR}version {psql_meta_quote(bundle.VERSION)}",
            f"\\set {_VAR}comment {psql_meta_quote(history_wire.bundle_comment())}",
            "SELECT to_regclass('hectic.version') IS NOT NULL AND pg_catalog.obj_description("
            "to_regnamespace('hectic'), 'pg_namespace') IS NOT DISTINCT FROM "
            f":'{_VAR}comment' AS {_VAR}maybe \\gset",
            f"\\if :{_VAR}maybe",
            f"SELECT count(*) = 1 AS {_VAR}current FROM hectic.version WHERE name = 'hectic' "
            f"AND version = :'{_VAR}version' \\gset",
            "\\else",
            f"\\set {_VAR}current false",
            "\\endif",
            f"\\if :{_VAR}current",
            "\\else",
            # The bundle's "already exists, skipping" NOTICEs would bury a real error.
            "SET client_min_messages = warning;",
            "BEGIN;",
            f"\\i {psql_meta_quote(os.fspath(bundle_file))}",
            "COMMIT;",
            "RESET client_min_messages;",
            "\\endif",
            f"\\echo {self._mark('encoding')} :ENCODING",
            f"SELECT '{self._mark('history')}';",
            _READ_HEX_SQL,
            f"SELECT '{self._mark('end')}';",
            "",
        ]))
        assert self.child.stdout is not None
        seen: list[str] = []
        rows: list[list[str]] = []
        while True:
            raw = self.child.stdout.readline()
            if not raw:
                self._failed_start(seen)
            line = raw.decode("utf-8").rstrip("\n")
            if line.startswith(self._mark("")):
                seen.append(line[len(self._mark("")) :])
                if seen[-1].startswith("encoding "):
                    self.encoding = seen[-1].partition(" ")[2]
                if seen[-1] == "end":
                    break
            elif seen and seen[-1] == "history":
                rows.append(line.split("\x1f"))
        self.applied = [Applied(bytes.fromhex(r[0]).decode("utf-8"), r[1], r[2]) for r in rows]

    def _failed_start(self, seen: list[str]) -> None:
        self.child.wait()
        err = self._stderr()
        if "lock" in seen and "lock timeout" in err:
            raise Error(
                f"timed out after {self.lock_timeout:g}s waiting for the migration lock: "
                f"another migrator is working on this database (pg_advisory_lock({LOCK_KEY})); "
                "rerun when it is done or raise MIGRATOR_LOCK_TIMEOUT",
                detail=err,
            )
        if "lock" not in seen:
            raise Error("psql could not connect to the database", detail=err)
        from db_tool import psql

        raise Error(psql.first_error(err) or "applying the hectic bundle failed", detail=err)

    def apply(self, steps: Sequence[Step]) -> list[StepResult]:
        if not steps:
            return []
        echo = f"\\echo {self._mark('')}"
        # Which steps go as one query. Until the first `\\i` step, psql's variables and encoding
        # are the ones it started with; after it (the file may `\\set` or `\\encoding`), only
        # text that depends on neither is inlined.
        inlined: list[_Inline | None] = []
        certain = True
        for step in steps:
            inlined.append(self._inline(step, certain))
            certain = certain and inlined[-1] is not None
        # A step run with `\\i` is either a BEGIN … COMMIT file of its own (wrapper) or runs in
        # our transaction under the savepoint guard.
        tx = [_transaction_control(step) if one is None else _NO_TX
              for step, one in zip(steps, inlined, strict=True)]
        guarded = [one is None and not t.wrapper for one, t in zip(inlined, tx, strict=True)]
        lines = ["\\set ON_ERROR_STOP 1"]
        lineno = 1  # the driver line of the last entry in lines
        sources: dict[int, Path] = {}  # driver line psql names for an inlined step → its file
        for i, step in enumerate(steps):
            name_var, hash_var = f"{_VAR}name_{i}", f"{_VAR}hash_{i}"
            if step.direction == "up":
                record = (
                    f"INSERT INTO hectic.migration (name, hash, applied_at) "
                    f"VALUES (:'{name_var}', :'{hash_var}', now())"
                )
            else:
                record = f"DELETE FROM hectic.migration WHERE name = :'{name_var}'"
            entries = [
                f"\\set {name_var} {psql_meta_quote(step.migration.name)}",
                f"\\set {hash_var} {psql_meta_quote(step.migration.hash or '')}",
                f"{echo}begin {i}",
            ]
            one = inlined[i]
            if one is not None:
                # The text starts on query line first_line (BEGIN on line 1; psql keeps lines
                # holding a space), so the server's "LINE n" of an error is line n of the
                # migration's file. psql names the driver line of the final `;`.
                gap = "\n " * (one.first_line - 2) + "\n" if one.first_line > 1 else " "
                entries += [
                    f"{_FRESH} \\; BEGIN \\;{gap}{one.sql.text}",
                    ("" if one.sql.terminated else "\\; ") + record + " \\; COMMIT;",
                ]
            elif tx[i].wrapper:
                # The file is one BEGIN … COMMIT of its own: it commits itself, the history row
                # follows in a transaction of its own (as the original does it).
                entries += [
                    f"{_FRESH};",
                    f"\\i {psql_meta_quote(os.fspath(_materialize(step, self.tmp, i)))}",
                    "\\set ON_ERROR_STOP 1",
                    f"{record};",
                ]
            else:
                path = psql_meta_quote(os.fspath(_materialize(step, self.tmp, i)))
                # One round trip for the history row, COMMIT and the next `\\i` step's BEGIN.
                next_too = i + 1 < len(steps) and guarded[i + 1]
                if i == 0 or not guarded[i - 1]:
                    entries.append(f"{_FRESH} \\; BEGIN \\; SAVEPOINT {_GUARD};")
                entries += [
                    f"\\i {path}",
                    "\\set ON_ERROR_STOP 1",
                    f"{echo}guard {i}",
                    f"RELEASE SAVEPOINT {_GUARD} \\; " + record
                    + (f" \\; COMMIT \\; {_FRESH} \\; BEGIN \\; SAVEPOINT {_GUARD};"
                       if next_too else " \\; COMMIT;"),
                ]
            for entry in entries:
                lineno += entry.count("\n") + 1
            if one is not None:
                sources[lineno] = one.source
            entries.append(f"{echo}done {i}")
            lineno += 1
            lines += entries
        driver = self.tmp / "driver.sql"
        driver.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._send(f"\\i {psql_meta_quote(os.fspath(driver))}\n")
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.close()
        out = self.child.stdout.read().decode("utf-8", "replace")
        rc = self.child.wait()
        return _outcome(
            steps, out, self.token, ok=rc == 0,
            stderr=_name_sources(self._stderr(), driver, sources) if rc else "",
            crashed="psql stopped unexpectedly while applying migrations", tx=tx,
        )

    def _inline(self, step: Step, certain: bool) -> _Inline | None:
        """The step as one query, or None for `\\i`. certain: psql's variables and encoding
        are still the ones it started with."""
        from db_tool.sqlsplit import OneQuery, one_query

        if not self.inline:
            return None
        m = step.migration
        if m.layout == FILE:
            body = m.up_sql if step.direction == "up" else m.down_sql
            source, first_line = m.path, m.up_line if step.direction == "up" else m.down_line
        else:
            path = m.up if step.direction == "up" else m.down
            assert path is not None
            try:
                body = path.read_bytes()
            except OSError:
                return None  # `\\i` reports it
            source, first_line = path, 1
        assert body is not None
        sql = one_query(
            body,
            variables=self.variables if certain else {},
            non_ascii=certain and bool(self.encoding) and self.encoding not in _UNSAFE_ENCODINGS,
        )
        return _Inline(sql, source, first_line) if isinstance(sql, OneQuery) else None

    def close(self, aborted: bool = False) -> None:
        """End the session: psql quits at the end of its input (releasing the lock).
        `aborted` (we are unwinding from a signal or an error): psql's running query is
        cancelled first (SIGINT), so the rollback does not wait for a long statement."""
        if aborted and self.child.poll() is None:
            with suppress(ProcessLookupError):
                self.child.send_signal(signal.SIGINT)
        if self.child.stdin is not None and not self.child.stdin.closed:
            with suppress(BrokenPipeError):
                self.child.stdin.close()
        if self.child.stdout is not None:
            self.child.stdout.close()
        try:
            self.child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()


@dataclass(frozen=True)
class _Inline:
    sql: OneQuery
    source: Path  # the file to name in psql's messages
    first_line: int  # the line of source where the migration's text starts


def _name_sources(stderr: str, driver: Path, sources: Mapping[int, Path]) -> str:
    """psql names the driver and the line of an inlined step's final `;`: name the migration's
    file instead (the statement within it is not known; the server's LINE n counts in it)."""
    import re

    def repl(match: re.Match[str]) -> str:
        source = sources.get(int(match.group(1)))
        return match.group(0) if source is None else f"psql:{source}: "

    prefix = re.escape(f"psql:{os.fspath(driver)}:")
    return re.sub(rf"^{prefix}(\d+): ", repl, stderr, flags=re.MULTILINE)


def _outcome(
    steps: Sequence[Step], out: str, token: str, *, ok: bool, stderr: str, crashed: str,
    tx: Sequence[TxControl] = (),
) -> list[StepResult]:
    """What a driver run did, from its markers: the completed steps, or MigrationFailed naming
    the step that was running and what became of its work, or Error when the client died
    between steps."""
    marks, rest = _markers(out, token)
    completed, running, guard = _results(steps, marks)
    if ok:
        return completed
    err = "\n".join(x for x in (stderr.strip(), rest.strip()) if x)
    before = f"; {_count(completed)} applied before it stay" if completed else ""
    if running is not None:
        step = steps[running]
        what = f"migration {step.migration.name} ({step.direction})"
        own = tx[running] if running < len(tx) else _NO_TX
        # A failing BEGIN … COMMIT file failed inside its own transaction: rolled back.
        ends = () if own.wrapper else own.ends
        named = " and ".join(dict.fromkeys(ends)) or "COMMIT, ROLLBACK or \\c"
        if guard:
            raise MigrationFailed(
                f"{what} ended the migrator's transaction itself ({named}): what it ran before "
                "that was committed or rolled back by it, what it ran after was committed "
                "statement by statement, and it is NOT recorded as applied; check the "
                "database and finish or undo it by hand, then remove the transaction control "
                "(each migration already runs in one transaction) or make the file one "
                "BEGIN ... COMMIT block" + before,
                detail=err, completed=completed,
            )
        if ends:
            raise MigrationFailed(
                f"{what} failed after its own {named}, which ends the migrator's transaction: "
                "what it ran before that may be committed and was NOT rolled back; it is not "
                "recorded as applied; check the database and undo or finish it by hand"
                + before,
                detail=err, completed=completed,
            )
        raise MigrationFailed(
            f"{what} failed; it was rolled back"
            + (f", {_count(completed)} applied before it stay" if completed else ""),
            detail=err,
            completed=completed,
        )
    raise Error(crashed, detail=err)


def _count(completed: Sequence[StepResult]) -> str:
    n = len(completed)
    return f"{n} step{'s' if n != 1 else ''}"


# --------------------------------------------------------------------------- SQLite


def _sqlite_cli(search_path: str | None = None) -> str:
    found = shutil.which("sqlite3", path=search_path)
    if not found:
        raise NotInstalledError(
            "sqlite3 not found: install the SQLite shell (apt-get install sqlite3) "
            "or put it on PATH"
        )
    return found


_SQLITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hectic_migration ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " name TEXT NOT NULL UNIQUE CHECK (name GLOB '" + "[0-9]" * 14 + "-*'),"
    " hash TEXT NOT NULL CHECK (length(hash) = 64 AND hash NOT GLOB '*[^0-9a-f]*'),"
    " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')))"
)
_SQLITE_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS hectic_version ("
    " name TEXT PRIMARY KEY, version TEXT NOT NULL,"
    " installed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')))"
)


def sqlite_init_sql(version: str) -> str:
    return (
        f"{_SQLITE_VERSION_TABLE};\n"
        f"INSERT OR IGNORE INTO hectic_version (name, version) VALUES ('hectic', "
        f"{sqlite_literal(version)});\n"
        f"{_SQLITE_SCHEMA};\n"
    )


class SqliteHistory:
    def __init__(self, path: str, search_path: str | None = None) -> None:
        self.path = path
        self.search_path = search_path  # PATH to find sqlite3 in (None: os.environ)

    def cli(self) -> str:
        return _sqlite_cli(self.search_path)

    def init(self, variables: Mapping[str, str]) -> None:
        import sqlite3

        from db_tool import __version__

        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30)
        try:
            with con:
                con.execute(_SQLITE_VERSION_TABLE)
                con.execute(
                    "INSERT OR IGNORE INTO hectic_version (name, version) VALUES ('hectic', ?)",
                    (__version__,),
                )
                (have,) = con.execute(
                    "SELECT version FROM hectic_version WHERE name = 'hectic'"
                ).fetchone()
                if have != __version__:
                    raise Error(
                        f"hectic schema version mismatch: database has {have}, "
                        f"code expects {__version__}"
                    )
                con.execute(_SQLITE_SCHEMA)
        except sqlite3.Error as exc:
            raise Error(f"cannot initialise SQLite database {self.path}: {exc}") from None
        finally:
            con.close()

    def read_applied(self) -> list[Applied]:
        import sqlite3

        if not Path(self.path).exists():
            return []
        try:
            con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        except sqlite3.Error as exc:
            raise Error(f"cannot open SQLite database {self.path}: {exc}") from None
        try:
            has = con.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'hectic_migration'"
            ).fetchone()
            if not has:
                return []
            rows = con.execute(
                "SELECT name, hash, applied_at FROM hectic_migration ORDER BY id"
            ).fetchall()
        except sqlite3.Error as exc:
            raise Error(f"cannot read SQLite database {self.path}: {exc}") from None
        finally:
            con.close()
        return [Applied(str(n), str(h), str(t)) for n, h, t in rows]

    @contextmanager
    def migrate_session(
        self, variables: Mapping[str, str], lock_timeout: float
    ) -> Iterator[SqliteSession]:
        with self._locked(lock_timeout):
            self.init(variables)
            yield SqliteSession(self, self.read_applied(), variables, lock_timeout)

    @contextmanager
    def _locked(self, lock_timeout: float) -> Iterator[None]:
        """flock() on the database file around init → read → plan → apply. SQLite itself
        uses fcntl() byte-range locks, which on Linux do not interact with flock()."""
        import fcntl

        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise Error(
                            f"timed out after {lock_timeout:g}s waiting for the migration lock "
                            f"on {self.path}: another migrator is working on it; rerun when it "
                            "is done or raise MIGRATOR_LOCK_TIMEOUT"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)

    def apply(
        self, steps: Sequence[Step], *, variables: Mapping[str, str], lock_timeout: float
    ) -> list[StepResult]:
        """Run steps in one sqlite3 process; the caller holds the flock."""
        from db_tool import proc

        cli = self.cli()
        if not steps:
            return []
        token = os.urandom(8).hex()
        mark = f".print @@migrator-{token}"
        lines = [".bail on", f".timeout {max(1, int(lock_timeout * 1000))}"]
        for name, value in variables.items():
            # Bound parameters (`:name` in statements); the value is one SQL literal argument.
            lines.append(f".parameter set :{name} {sqlite_dot_quote(sqlite_literal(value))}")
        tx = [_transaction_control(step) for step in steps]
        from db_tool.signals import interrupt_on_signals

        with interrupt_on_signals(), tempfile.TemporaryDirectory(prefix="migrator-") as tmpdir:
            tmp = Path(tmpdir)
            for i, step in enumerate(steps):
                m = step.migration
                path = sqlite_dot_quote(os.fspath(_materialize(step, tmp, i)))
                # No `.cd`: a nested `.read` resolves against our working directory, as in
                # the original (and a relative migration dir keeps working).
                if step.direction == "up":
                    record = (
                        "INSERT INTO hectic_migration (name, hash) VALUES "
                        f"({sqlite_literal(m.name)}, {sqlite_literal(m.hash or '')});"
                    )
                else:
                    record = f"DELETE FROM hectic_migration WHERE name = {sqlite_literal(m.name)};"
                if tx[i].wrapper:  # its own BEGIN … COMMIT; the history row after it
                    lines += [f"{mark} begin {i}", f".read {path}", record, f"{mark} done {i}"]
                    continue
                lines += [
                    f"{mark} begin {i}", "BEGIN;", f"SAVEPOINT {_GUARD};", f".read {path}",
                    f"{mark} guard {i}", f"RELEASE {_GUARD};", record, "COMMIT;",
                    f"{mark} done {i}",
                ]
            result = proc.run(
                [cli, "-init", os.devnull, "-batch", "-bail", self.path],
                input="\n".join(lines) + "\n", check=False, what="sqlite3",
            )
        return _outcome(
            steps, result.out, token, ok=result.ok, stderr=result.err,
            crashed="sqlite3 could not run the migrations", tx=tx,
        )


# --------------------------------------------------------------------------- for other commands


@dataclass
class SqliteSession:
    history: SqliteHistory
    applied: list[Applied]
    variables: Mapping[str, str]
    lock_timeout: float

    def apply(self, steps: Sequence[Step]) -> list[StepResult]:
        return self.history.apply(steps, variables=self.variables, lock_timeout=self.lock_timeout)


def load_status(url: str, migration_dir: str | os.PathLike[str]) -> list[StatusRow]:
    """Status rows (migrations.StatusRow) for `database status` and friends."""
    from db_tool import migrations

    return list(migrations.status(migrations.discover(migration_dir), for_url(url).read_applied()))


def pending_count(url: str, migration_dir: str | os.PathLike[str]) -> int:
    """How many migrations on disk are not applied (read-only; does not apply the bundle)."""
    from db_tool import migrations

    rows = migrations.status(migrations.discover(migration_dir), for_url(url).read_applied())
    return sum(1 for r in rows if r.state == "pending")
