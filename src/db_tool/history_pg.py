"""PostgreSQL history (hectic.migration, created by the bundle): the IO half.

A whole `migrate` run is ONE psql process used as a coprocess: we write pg_script's start script
to its stdin (lock → bundle unless current → history), read the rows back (query output is
flushed per query; a final marker row ends the read), plan in Python, then send one
`\\i driver.sql` (pg_script.driver_script) and close stdin. The lock is held for the whole
session, so concurrent migrators apply each migration exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager, suppress

from db_tool.errors import Error
from db_tool.history import MigrationFailed, StepResult, materialize, no_tx, outcome
from db_tool.history import transaction_control as own_transaction_control
from db_tool.migrations import FILE, Applied, Step, read_file

# pg_script, sqlsplit (and the re it compiles) and tempfile are imported once psql is started:
# they load while it connects, not before it starts.
TYPE_CHECKING = False  # typing is not imported at run time
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from typing import IO

    from db_tool import history_wire
    from db_tool.pg_script import Inline
    from db_tool.sqlsplit import TxControl

__all__ = ["MigrationFailed", "PgHistory", "PgSession"]

_FIRST_DRIVER = 4  # steps in the first driver; each next one has 4 times as many


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

    def read_applied(self, *, wire: bool = True) -> list[Applied]:
        """Read-only (status): an uninitialised database has an empty history. wire=False:
        through psql only (the caller's wire attempt could not tell)."""
        from db_tool import psql
        from db_tool.pg_script import READ_SQL

        quick = self.quick_state() if wire else None
        if quick is not None:
            return quick.applied or []

        rows = psql.query(
            self.url,
            "SELECT to_regclass('hectic.migration') IS NOT NULL AS has_table \\gset\n"
            "\\if :has_table\n" + READ_SQL + "\\endif\n",
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
        # psql starts first (its stderr an anonymous file, which needs no directory); the temp
        # dir for the bundle and the drivers is made while it connects.
        with interrupt_on_signals(), _anonymous_file() as errfile:
            child = proc.spawn(argv, env=psql.env("migrator", self.url), stderr=errfile)
            session = PgSession(child, errfile, "", lock_timeout,
                                inline=self.inline, variables=dict(variables))
            try:
                import tempfile

                with tempfile.TemporaryDirectory(prefix="migrator-") as tmpdir:
                    session.tmp = tmpdir
                    try:
                        session.send_start()
                        yield session
                    finally:
                        session.close(aborted=sys.exc_info()[0] is not None)
            finally:
                session.close(aborted=True)  # (a no-op once closed above)


class PgSession:
    # A plain class, not a dataclass: dataclasses (inspect, ast, …) cost more than a step.
    def __init__(self, child: subprocess.Popen[bytes], errfile: IO[bytes], tmp: str,
                 lock_timeout: float, *, inline: bool = True,
                 variables: dict[str, str] | None = None) -> None:
        self.child = child
        self.errfile = errfile
        self.tmp = tmp
        self.lock_timeout = lock_timeout
        self.inline = inline
        self.variables = variables or {}  # the --set values psql started with
        self.read: list[Applied] | None = None  # the history, once start_script's answer is read
        self.token = os.urandom(8).hex()
        self.encoding = ""  # psql's client encoding (its ENCODING variable) at the start

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
        from db_tool.pg_script import marker

        return marker(self.token, word)

    def send_start(self) -> None:
        """Ask psql to lock, apply the bundle and print the history; `applied` waits for the
        answer, so the caller can read the migration dir while psql connects and locks."""
        from db_tool import bundle, history_wire
        from db_tool.pg_script import start_script

        bundle_file = os.path.join(self.tmp, "bundle.sql")
        with open(bundle_file, "w", encoding="utf-8") as fh:
            fh.write(bundle.render())
        self._send(start_script(self.token, self.lock_timeout, bundle_file,
                                version=bundle.VERSION, comment=history_wire.bundle_comment()))

    @property
    def applied(self) -> list[Applied]:
        """The history as read under the lock (waits for psql's answer the first time)."""
        if self.read is None:
            self.read = self._read_start()
        return self.read

    def _read_start(self) -> list[Applied]:
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
        return [Applied(bytes.fromhex(r[0]).decode("utf-8"), r[1], r[2]) for r in rows]

    def _failed_start(self, seen: list[str]) -> None:
        self.child.wait()
        err = self._stderr()
        if "lock" in seen and "lock timeout" in err:
            from db_tool.pg_script import LOCK_KEY

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
        from db_tool.pg_script import driver_script
        from db_tool.sqlsplit import psql_meta_quote

        none = no_tx()
        self.applied  # noqa: B018 -- psql's answer to the start script (sets self.encoding)
        # Which steps go as one query. Until the first `\\i` step, psql's variables and encoding
        # are the ones it started with; after it (the file may `\\set` or `\\encoding`), only
        # text that depends on neither is inlined.
        # The plan goes as drivers of 4, 16, 64, … steps, each `\\i`-ed as soon as it is
        # written: psql runs one while the next is prepared (reading and scanning a step costs
        # a tenth of running it), instead of waiting for the whole plan to be prepared.
        tx: list[TxControl] = []
        drivers: list[tuple[str, dict[int, str]]] = []  # each driver, its lines → files
        certain = True
        start, size = 0, _FIRST_DRIVER
        while start < len(steps):
            chunk = steps[start:start + size]
            inlined: list[Inline | None] = []
            files: list[str | None] = []
            for i, step in enumerate(chunk, start):
                one = self._inline(step, certain)
                certain = certain and one is not None
                inlined.append(one)
                tx.append(own_transaction_control(step) if one is None else none)
                files.append(materialize(step, self.tmp, i) if one is None else None)
            text, sources = driver_script(chunk, inlined, tx[start:], files, self.token,
                                          start=start)
            driver = os.path.join(self.tmp, f"driver-{len(drivers)}.sql")
            with open(driver, "w", encoding="utf-8") as fh:
                fh.write(text)
            # psql stops at the first error (ON_ERROR_STOP): the lines after it are not read.
            self._send(f"\\i {psql_meta_quote(driver)}\n")
            drivers.append((driver, sources))
            start, size = start + size, size * 4
        assert self.child.stdin is not None and self.child.stdout is not None
        with suppress(BrokenPipeError):  # psql quit at an error: a `\\i` line was left unsent
            self.child.stdin.close()
        out = self.child.stdout.read().decode("utf-8", "replace")
        rc = self.child.wait()
        stderr = self._stderr() if rc else ""
        for driver, sources in drivers:
            stderr = _name_sources(stderr, driver, sources)
        return outcome(
            steps, out, self.token, ok=rc == 0, stderr=stderr,
            crashed="psql stopped unexpectedly while applying migrations", tx=tx,
        )

    def _inline(self, step: Step, certain: bool) -> Inline | None:
        """The step as one query, or None for `\\i`. certain: psql's variables and encoding
        are still the ones it started with."""
        from db_tool.pg_script import UNSAFE_ENCODINGS, Inline
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
                body = read_file(path)
            except OSError:
                return None  # `\\i` reports it
            source, first_line = path, 1
        assert body is not None
        sql = one_query(
            body,
            variables=self.variables if certain else {},
            non_ascii=certain and bool(self.encoding) and self.encoding not in UNSAFE_ENCODINGS,
        )
        return Inline(sql, source, first_line) if isinstance(sql, OneQuery) else None

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


@contextmanager
def _anonymous_file() -> Iterator[IO[bytes]]:
    """A file without a name for psql's stderr, read back once psql is done: a memfd, so it
    needs no directory before psql starts; an unlinked temporary file where there is none."""
    try:
        fd = os.memfd_create("migrator-psql-stderr", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        import tempfile

        with tempfile.TemporaryFile() as fh:
            yield fh
        return
    with open(fd, "w+b") as fh:
        yield fh


def _name_sources(stderr: str, driver: str, sources: Mapping[int, str]) -> str:
    """psql names the driver and the line of an inlined step's final `;`: name the migration's
    file instead (the statement within it is not known; the server's LINE n counts in it)."""
    import re

    def repl(match: re.Match[str]) -> str:
        source = sources.get(int(match.group(1)))
        return match.group(0) if source is None else f"psql:{source}: "

    prefix = re.escape(f"psql:{driver}:")
    return re.sub(rf"^{prefix}(\d+): ", repl, stderr, flags=re.MULTILINE)
