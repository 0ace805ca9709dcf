"""SQLite history: hectic_version / hectic_migration; a `migrate` runs its files through ONE
`sqlite3` process with `.read`. Concurrent runners are serialised by flock() on the database file
held around init → read → plan → apply.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from db_tool.errors import Error, NotInstalledError
from db_tool.history import GUARD, StepResult, materialize, outcome, transaction_control
from db_tool.migrations import Applied, Step


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



def _sqlite_cli(search_path: str | None) -> str:
    """sqlite3 on search_path: the PATH of settings (MigratorSettings.search_path), always
    given; None means PATH is unset there, so the default path, as a shell would."""
    found = shutil.which("sqlite3", path=os.defpath if search_path is None else search_path)
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
    def __init__(self, path: str, search_path: str | None) -> None:
        self.path = path
        self.search_path = search_path  # PATH to find sqlite3 in (None: unset, the default path)

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
        tx = [transaction_control(step) for step in steps]
        from db_tool.signals import interrupt_on_signals

        with interrupt_on_signals(), tempfile.TemporaryDirectory(prefix="migrator-") as tmpdir:
            tmp = Path(tmpdir)
            for i, step in enumerate(steps):
                m = step.migration
                path = sqlite_dot_quote(os.fspath(materialize(step, tmp, i)))
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
                    f"{mark} begin {i}", "BEGIN;", f"SAVEPOINT {GUARD};", f".read {path}",
                    f"{mark} guard {i}", f"RELEASE {GUARD};", record, "COMMIT;",
                    f"{mark} done {i}",
                ]
            result = proc.run(
                [cli, "-init", os.devnull, "-batch", "-bail", self.path],
                input="\n".join(lines) + "\n", check=False, what="sqlite3",
            )
        return outcome(
            steps, result.out, token, ok=result.ok, stderr=result.err,
            crashed="sqlite3 could not run the migrations", tx=tx,
        )



@dataclass
class SqliteSession:
    history: SqliteHistory
    applied: list[Applied]
    variables: Mapping[str, str]
    lock_timeout: float

    def apply(self, steps: Sequence[Step]) -> list[StepResult]:
        return self.history.apply(steps, variables=self.variables, lock_timeout=self.lock_timeout)
