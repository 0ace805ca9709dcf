"""What the database says is applied, and applying planned steps.

Two backends with one shape:

PostgreSQL (`PgHistory`): history in hectic.migration (created by the bundle). All steps of one
run go through ONE psql process driven by a generated script: it takes a session-level advisory
lock (waited with lock_timeout), then for every step re-checks inside the session that the step
is still needed (a concurrent migrator may have applied it after we planned), and runs
`BEGIN; \\i file; INSERT/DELETE history row; COMMIT;`. `\\echo` markers tell us which step was
running when psql stopped.

SQLite (`SqliteHistory`): history in hectic_version / hectic_migration; files run through ONE
`sqlite3` process with `.read`. Concurrent runners are serialised by flock() on the database file
held around read → plan → apply, so the plan is made under the lock and needs no re-check.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from db_tool.errors import Error, ExitCode, NotInstalledError
from db_tool.migrations import FILE, Applied, StatusRow, Step

# pg_advisory_lock key shared by every migrator on a database: b"hecticmg" as a big-endian int.
LOCK_KEY = int.from_bytes(b"hecticmg", "big")
DEFAULT_LOCK_TIMEOUT = 60.0
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_VAR = "__migrator_"


class MigrationFailed(Error):
    exit_code = ExitCode.MIGRATION_FAILED

    def __init__(self, message: str, detail: str, completed: Sequence[StepResult]) -> None:
        super().__init__(message, detail=detail)
        self.completed = list(completed)


@dataclass(frozen=True)
class StepResult:
    step: Step
    done: bool  # False: skipped because a concurrent migrator already did it


# --------------------------------------------------------------------------- quoting helpers


def psql_meta_quote(text: str) -> str:
    """Quote one argument of a psql meta-command (\\i, \\ir): single quotes, with psql's
    escapes for backslash, quote and control characters."""
    out = text.replace("\\", "\\\\").replace("'", "''")
    out = out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f"'{out}'"


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


class History(Protocol):
    def init(self, variables: Mapping[str, str]) -> None: ...

    def read_applied(self) -> list[Applied]: ...

    def session(self, lock_timeout: float) -> AbstractContextManager[None]: ...

    def apply(
        self, steps: Sequence[Step], *, variables: Mapping[str, str], lock_timeout: float
    ) -> list[StepResult]: ...


def sqlite_path(url: str) -> str | None:
    """The file path when url names a SQLite database, else None."""
    if url.startswith("sqlite://"):
        return url[len("sqlite://") :]
    if url.startswith("sqlite:"):
        return url[len("sqlite:") :]
    if "://" not in url and url.endswith(SQLITE_SUFFIXES):
        return url
    return None


def for_url(url: str, env: Mapping[str, str] | None = None) -> PgHistory | SqliteHistory:
    path = sqlite_path(url)
    if path is not None:
        return SqliteHistory(path, search_path=None if env is None else env.get("PATH"))
    return PgHistory(url)


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


def _results(steps: Sequence[Step], marks: list[str]) -> tuple[list[StepResult], int | None]:
    """Completed steps and the index of the step that was running when the script stopped."""
    done: list[StepResult] = []
    running: int | None = None
    for mark in marks:
        word, _, num = mark.partition(" ")
        if word == "begin":
            running = int(num)
        elif word == "done":
            done.append(StepResult(steps[int(num)], True))
            running = None
        elif word == "skip":
            done.append(StepResult(steps[int(num)], False))
    return done, running


class PgHistory:
    def __init__(self, url: str) -> None:
        self.url = url

    def init(self, variables: Mapping[str, str]) -> None:
        from db_tool import bundle

        bundle.apply(self.url)

    def read_applied(self) -> list[Applied]:
        from db_tool import psql

        rows = psql.query(
            self.url,
            "SELECT to_regclass('hectic.migration') IS NOT NULL AS has_table \\gset\n"
            "\\if :has_table\n"
            "SELECT name, hash, to_char(applied_at AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM hectic.migration ORDER BY id;\n"
            "\\endif\n",
        )
        return [Applied(r[0], r[1], r[2]) for r in rows]

    @contextmanager
    def session(self, lock_timeout: float) -> Iterator[None]:
        # The lock is taken inside the applying psql session itself (see apply).
        yield

    def apply(
        self, steps: Sequence[Step], *, variables: Mapping[str, str], lock_timeout: float
    ) -> list[StepResult]:
        from db_tool import psql

        if not steps:
            return []
        token = secrets.token_hex(8)
        mark = f"\\echo @@migrator-{token}"
        timeout_ms = max(1, int(lock_timeout * 1000))
        all_vars = dict(variables)
        lines = [
            "\\set ON_ERROR_STOP 1",
            f"{mark} lock",
            f"SET lock_timeout = {timeout_ms};",
            f"SELECT pg_advisory_lock({LOCK_KEY}) \\g /dev/null",
            "RESET lock_timeout;",
            f"{mark} locked",
        ]
        with tempfile.TemporaryDirectory(prefix="migrator-") as tmpdir:
            tmp = Path(tmpdir)
            for i, step in enumerate(steps):
                name_var, hash_var = f"{_VAR}name_{i}", f"{_VAR}hash_{i}"
                all_vars[name_var] = step.migration.name
                all_vars[hash_var] = step.migration.hash or ""
                path = psql_meta_quote(os.fspath(_materialize(step, tmp, i)))
                exists = f"EXISTS (SELECT 1 FROM hectic.migration WHERE name = :'{name_var}')"
                if step.direction == "up":
                    guard = f"SELECT NOT {exists} AS {_VAR}run \\gset"
                    record = (
                        f"INSERT INTO hectic.migration (name, hash, applied_at) "
                        f"VALUES (:'{name_var}', :'{hash_var}', now());"
                    )
                else:
                    guard = f"SELECT {exists} AS {_VAR}run \\gset"
                    record = f"DELETE FROM hectic.migration WHERE name = :'{name_var}';"
                lines += [
                    guard,
                    f"\\if :{_VAR}run",
                    f"{mark} begin {i}",
                    "BEGIN;",
                    f"\\i {path}",
                    "\\set ON_ERROR_STOP 1",
                    record,
                    "COMMIT;",
                    f"{mark} done {i}",
                    "\\else",
                    f"{mark} skip {i}",
                    "\\endif",
                ]
            driver = tmp / "driver.sql"
            driver.write_text("\n".join(lines) + "\n", encoding="utf-8")
            result = psql.run_file(self.url, driver, variables=all_vars, check=False)
        marks, rest = _markers(result.out, token)
        completed, running = _results(steps, marks)
        if result.ok:
            return completed
        err = "\n".join(x for x in (result.err.strip(), rest.strip()) if x)
        if "lock" in marks and "locked" not in marks:
            if "lock timeout" in result.err:
                raise Error(
                    f"timed out after {lock_timeout:g}s waiting for the migration lock: another "
                    f"migrator is working on this database (pg_advisory_lock({LOCK_KEY})); "
                    "rerun when it is done or raise MIGRATOR_LOCK_TIMEOUT",
                    detail=err,
                )
            raise Error("could not take the migration lock", detail=err)
        if running is not None:
            step = steps[running]
            raise MigrationFailed(
                f"migration {step.migration.name} ({step.direction}) failed; it was rolled back"
                + (f", {_count(completed)} applied before it stay" if completed else ""),
                detail=err,
                completed=completed,
            )
        if not marks:
            raise Error("psql could not run the migrations (connection failed?)", detail=err)
        raise Error("psql stopped unexpectedly while applying migrations", detail=err)


def _count(completed: Sequence[StepResult]) -> str:
    n = sum(1 for r in completed if r.done)
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
    def session(self, lock_timeout: float) -> Iterator[None]:
        """flock() on the database file around read → plan → apply. SQLite itself uses
        fcntl() byte-range locks, which on Linux do not interact with flock()."""
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
        from db_tool import proc

        cli = self.cli()
        if not steps:
            return []
        token = secrets.token_hex(8)
        mark = f".print @@migrator-{token}"
        lines = [".bail on", f".timeout {max(1, int(lock_timeout * 1000))}"]
        for name, value in variables.items():
            # Bound parameters (`:name` in statements); the value is one SQL literal argument.
            lines.append(f".parameter set :{name} {sqlite_dot_quote(sqlite_literal(value))}")
        with tempfile.TemporaryDirectory(prefix="migrator-") as tmpdir:
            tmp = Path(tmpdir)
            for i, step in enumerate(steps):
                m = step.migration
                path = sqlite_dot_quote(os.fspath(_materialize(step, tmp, i)))
                # sqlite3 resolves a nested `.read` against the working directory: make it the
                # directory of the migration's own file (the section file's for FILE layout),
                # which gives the entrypoint layout the meaning of psql's \\ir.
                own = m.path.parent if m.layout == FILE else (m.up if step.direction == "up"
                                                              else m.down)
                assert own is not None
                here = own if m.layout == FILE else own.parent
                if step.direction == "up":
                    record = (
                        "INSERT INTO hectic_migration (name, hash) VALUES "
                        f"({sqlite_literal(m.name)}, {sqlite_literal(m.hash or '')});"
                    )
                else:
                    record = f"DELETE FROM hectic_migration WHERE name = {sqlite_literal(m.name)};"
                lines += [
                    f"{mark} begin {i}", "BEGIN;", f".cd {sqlite_dot_quote(os.fspath(here))}",
                    f".read {path}", f".cd {sqlite_dot_quote(os.getcwd())}", record, "COMMIT;",
                    f"{mark} done {i}",
                ]
            result = proc.run(
                [cli, "-init", os.devnull, "-batch", "-bail", self.path],
                input="\n".join(lines) + "\n", check=False, what="sqlite3",
            )
        marks, rest = _markers(result.out, token)
        completed, running = _results(steps, marks)
        if result.ok:
            return completed
        err = "\n".join(x for x in (result.err.strip(), rest.strip()) if x)
        if running is not None:
            step = steps[running]
            raise MigrationFailed(
                f"migration {step.migration.name} ({step.direction}) failed; it was rolled back"
                + (f", {_count(completed)} applied before it stay" if completed else ""),
                detail=err,
                completed=completed,
            )
        raise Error("sqlite3 could not run the migrations", detail=err)


# --------------------------------------------------------------------------- for other commands


def load_status(url: str, migration_dir: str | os.PathLike[str]) -> list[StatusRow]:
    """Status rows (migrations.StatusRow) for `database status` and friends."""
    from db_tool import migrations

    return list(migrations.status(migrations.discover(migration_dir), for_url(url).read_applied()))


def pending_count(url: str, migration_dir: str | os.PathLike[str]) -> int:
    """How many migrations on disk are not applied (read-only; does not apply the bundle)."""
    from db_tool import migrations

    rows = migrations.status(migrations.discover(migration_dir), for_url(url).read_applied())
    return sum(1 for r in rows if r.state == "pending")
