"""test: run $DATABASE_DIR/test/test.sql so that it leaves no trace in the database.

How "no trace" is guaranteed — two strategies, chosen by reading the test files first:

* transaction (the default): psql runs `BEGIN; \\i test.sql; ROLLBACK;` in one session.
  Everything the tests do — rows, DDL, even CREATE ROLE — is rolled back. A pgTAP-style file
  with its own `BEGIN; ... ROLLBACK;` is fine: its BEGIN is a no-op inside ours, its ROLLBACK
  ends everything. It needs no exclusive access to the database (the app and pg_cron may stay
  connected).
* copy: when the files (with their \\i/\\ir includes) would end the wrapping transaction and then
  keep working outside it (a COMMIT, statements after a ROLLBACK, \\connect, VACUUM ...), they
  run in a throw-away copy `CREATE DATABASE <tmp> TEMPLATE <db>` that is dropped afterwards.
  PostgreSQL allows that only while no other session is connected to <db>; if one is, the test
  is refused (exit 1) with the list of sessions — it never runs where it could leave a trace.

Results: TAP output (`ok N`, `not ok N`, `1..N`, `# TODO`/`# SKIP`) is counted; any other output
passes when psql finishes without an error. psql runs with -tA (tuples only, unaligned) like
pg_prove, and ON_ERROR_STOP, so an SQL error fails the run.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from urllib.parse import quote, urlsplit, urlunsplit

from db_tool import output, psql, sqlscript, sqlsplit
from db_tool.commands import sqlrun
from db_tool.errors import Error
from db_tool.project_settings import ProjectSettings

# ------------------------------------------------------------------------------------ TAP


@dataclass(frozen=True)
class TapSummary:
    planned: int | None
    passed: int
    failed: int
    todo: int  # `not ok ... # TODO`: expected failures, not counted as failed
    skipped: int
    failures: tuple[str, ...] = ()

    @property
    def ran(self) -> int:
        return self.passed + self.failed + self.todo

    @property
    def ok(self) -> bool:
        return self.failed == 0 and (self.planned is None or self.planned == self.ran)


_PLAN = re.compile(r"^\s*1\.\.(\d+)\b")
_RESULT = re.compile(r"^\s*(not\s+)?ok\b(?:\s+\d+)?(.*)$")
_DIRECTIVE = re.compile(r"#\s*(TODO|SKIP)\b", re.IGNORECASE)


def parse_tap(text: str) -> TapSummary | None:
    """Count TAP results; None when the output holds no TAP at all."""
    planned: int | None = None
    passed = failed = todo = skipped = 0
    failures: list[str] = []
    seen = False
    for line in text.splitlines():
        plan = _PLAN.match(line)
        if plan:
            planned = int(plan.group(1))
            seen = True
            continue
        result = _RESULT.match(line)
        if not result:
            continue
        seen = True
        directive = _DIRECTIVE.search(result.group(2))
        kind = directive.group(1).upper() if directive else ""
        if result.group(1):
            if kind == "TODO":
                todo += 1
            else:
                failed += 1
                failures.append(line.strip())
        else:
            if kind == "SKIP":
                skipped += 1
            passed += 1
    if not seen:
        return None
    return TapSummary(planned, passed, failed, todo, skipped, tuple(failures))


# ---------------------------------------------------- reading psql scripts (sqlscript)


@dataclass(frozen=True)
class Statement:
    file: Path
    line: int
    text: str  # SQL without comments, or a meta-command line starting with a backslash


_INCLUDE = {"i": False, "include": False, "ir": True, "include_relative": True}
_NO_TRANSACTION = re.compile(
    r"^(VACUUM|CREATE\s+DATABASE|DROP\s+DATABASE|ALTER\s+SYSTEM|CREATE\s+TABLESPACE|"
    r"DROP\s+TABLESPACE|REINDEX\s+(\w+\s+)?(DATABASE|SYSTEM)|CHECKPOINT)\b"
    r"|^\S+(\s+\S+){0,3}\s+CONCURRENTLY\b",
    re.IGNORECASE,
)


def _words(sql: str) -> list[str]:
    return re.findall(r"[A-Za-z_]+", sql.upper())[:4]


def classify(sql: str) -> str:
    """begin | rollback | rollback-chain | commit | no-transaction | other"""
    words = _words(sql)
    first = words[0] if words else ""
    if first == "BEGIN" or words[:2] == ["START", "TRANSACTION"]:
        return "begin"
    if first in ("ROLLBACK", "ABORT"):
        if len(words) > 1 and words[1] in ("TO", "PREPARED"):
            return "other"
        return "rollback-chain" if "CHAIN" in words and "NO" not in words else "rollback"
    if first in ("COMMIT", "END") or words[:2] == ["PREPARE", "TRANSACTION"]:
        return "other" if words[:2] == ["COMMIT", "PREPARED"] else "commit"
    if _NO_TRANSACTION.search(sql):
        return "no-transaction"
    return "other"


def wrapper_hazard(path: Path, cwd: Path) -> str | None:
    """Why `BEGIN; \\i path; ROLLBACK;` could leave a trace, or None when it cannot."""
    in_tx = True
    seen: set[Path] = set()

    def walk(file: Path) -> Iterator[Statement]:
        real = file.resolve()
        if real in seen:  # a recursive include would loop psql itself; stop here
            return
        seen.add(real)
        try:
            text = file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        for piece in sqlscript.script_pieces(text):
            stmt = Statement(file, piece.line, piece.text)
            if piece.meta:
                parts = stmt.text[1:].split(None, 1)
                name = parts[0] if parts else ""
                if name in _INCLUDE and len(parts) > 1:
                    arg = parts[1].strip().strip("'\"")
                    base = file.parent if _INCLUDE[name] else cwd
                    yield from walk(base / arg)
                    continue
            yield stmt
        seen.discard(real)

    for stmt in walk(path):
        where = f"{stmt.file}:{stmt.line}"
        if stmt.text.startswith("\\"):
            name = stmt.text[1:].split(None, 1)[0] if len(stmt.text) > 1 else ""
            if name in ("c", "connect"):
                return f"{where}: \\{name} opens a new session outside the transaction"
            continue
        kind = classify(stmt.text)
        if kind == "begin":
            in_tx = True
        elif kind == "rollback":
            in_tx = False
        elif kind == "commit":
            return f"{where}: {_words(stmt.text)[0]} would make the work before it permanent"
        elif kind == "no-transaction":
            return f"{where}: {' '.join(_words(stmt.text)[:2])} cannot run inside a transaction"
        elif kind == "other" and not in_tx:
            return f"{where}: runs after a ROLLBACK, outside any transaction"
    return None


# ------------------------------------------------------------------------------------ run


@dataclass(frozen=True)
class TestResult:
    path: Path
    strategy: str  # "transaction" or "copy"
    why_copy: str | None
    psql_ok: bool
    error: str
    tap: TapSummary | None
    output: str = field(repr=False)
    returncode: int = 0  # psql's: 2 = it could not connect

    @property
    def connection_failed(self) -> bool:
        return self.returncode == 2

    @property
    def ok(self) -> bool:
        return self.psql_ok and (self.tap is None or self.tap.ok)


def test_file_of(settings: ProjectSettings) -> Path:
    if settings.database_dir is None:
        settings.require_local_dir()
    assert settings.database_dir is not None
    return settings.database_dir / "test" / "test.sql"


def url_with_database(url: str, database: str) -> str:
    """The same connection, another database (URI or key=value conninfo)."""
    if url.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(url)
        query = "&".join(p for p in parts.query.split("&")
                         if p and not p.startswith("dbname="))
        return urlunsplit((parts.scheme, parts.netloc, "/" + quote(database, safe=""), query,
                           parts.fragment))
    escaped = database.replace("\\", "\\\\").replace("'", "\\'")
    return f"{url} dbname='{escaped}'"


_TAP_ARGS = ("-t", "-A", "-P", "pager=off")


def run_tests(settings: ProjectSettings, url: str, *, out: TextIO | None = None) -> TestResult:
    path = test_file_of(settings)
    if not path.is_file():
        raise Error(f"no tests: {path} does not exist (it is $DATABASE_DIR/test/test.sql)")
    try:
        cwd = Path.cwd()  # psql runs where the caller is, as the original's does
    except OSError:
        raise Error("the current directory no longer exists: cd into an existing directory "
                    "(psql runs the tests from where you are, for relative \\i paths)") from None
    hazard = wrapper_hazard(path, cwd)
    if hazard is None:
        with output.step(f"run {path} inside a transaction that is rolled back"):
            wrapper = (
                "BEGIN;\n"
                f"\\i {sqlsplit.psql_meta_quote(str(path))}\n"
                # The test may have ended our transaction itself (pgTAP's ROLLBACK): then this
                # ROLLBACK only warns, which is silenced here.
                "\\set QUIET on\nSET client_min_messages = error;\nROLLBACK;\n"
            )
            run = _run_text(url, wrapper, cwd, out)
        return _result(path, "transaction", None, run)
    output.info(f"test.sql ends transactions itself ({hazard}); running it in a copy")
    return _run_in_copy(path, url, cwd, hazard, out)


def _run_text(url: str, script: str, cwd: Path, out: TextIO | None) -> sqlrun.FileRun:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".sql", prefix="db-tool-test-",
                                     encoding="utf-8") as fh:
        fh.write(script)
        fh.flush()
        return sqlrun.run_file(url, Path(fh.name), log=None, out=out, extra_args=_TAP_ARGS,
                               cwd=cwd, capture=True)


def _result(path: Path, strategy: str, why: str | None, run: sqlrun.FileRun) -> TestResult:
    return TestResult(path, strategy, why, run.ok, run.error, parse_tap(run.output), run.output,
                      run.returncode)


def _run_in_copy(path: Path, url: str, cwd: Path, hazard: str, out: TextIO | None) -> TestResult:
    rows = psql.query(
        url,
        "SELECT current_database(), coalesce(string_agg(format('pid %s (%s%s)', a.pid, "
        "coalesce(nullif(a.application_name, ''), a.backend_type), "
        "coalesce(', user ' || a.usename, '')), '; ') FILTER (WHERE a.pid IS NOT NULL), '') "
        "FROM (SELECT current_database() AS db) AS d LEFT JOIN pg_stat_activity AS a "
        "ON a.datname = d.db AND a.pid <> pg_backend_pid() GROUP BY d.db",
    )
    database, others = rows[0][0], rows[0][1]
    if others:
        raise Error(
            f"test.sql ends the wrapping transaction itself ({hazard}), so it must run in a "
            f"throw-away copy of {database}, and PostgreSQL copies a database only while "
            f"nobody else is connected to it: {others}. Close those sessions (pg_cron's "
            "launcher stays connected: PG_SHARED_PRELOAD_LIBRARIES='' for the dev cluster), or "
            "keep test.sql inside one transaction (BEGIN ... ROLLBACK, no COMMIT)"
        )
    copy = f"{database[:30]}_dbtool_test_{secrets.token_hex(4)}"
    with output.step(f"copy {database} to {copy}"):
        psql.run_sql(url, 'CREATE DATABASE :"copy" TEMPLATE :"db";',
                     variables={"copy": copy, "db": database}, what="copying the database")
    try:
        with output.step(f"run {path} in {copy}"):
            run = sqlrun.run_file(url_with_database(url, copy), path, log=None, out=out,
                                  extra_args=_TAP_ARGS, cwd=cwd, capture=True)
    finally:
        with output.step(f"drop {copy}"):
            psql.run_sql(url, 'DROP DATABASE IF EXISTS :"copy" WITH (FORCE);',
                         variables={"copy": copy}, what="dropping the test copy")
    return _result(path, "copy", hazard, run)
