"""The text fed to psql by history_pg (pure: no files, no processes; tested on its own).

start_script(): under the advisory lock (waited with lock_timeout), apply the bundle unless ours
at this version is in place, report psql's client encoding and print the history between
markers. driver_script(): the planned steps, each either
  BEGIN \\; <the migration, each `;` written as `\\;`> \\; INSERT/DELETE history row \\; COMMIT;
ONE query, one round trip (when sqlsplit.one_query is certain the rewrite means the same), or
  BEGIN; \\i file; INSERT/DELETE history row \\; COMMIT;
(the history statement, COMMIT and the next `\\i` step's BEGIN share one round trip via `\\;`);
every BEGIN is preceded by FRESH so a step starts from the session defaults. `\\echo` markers
tell which step was running if psql stopped.
"""

from __future__ import annotations

import os

from db_tool.history import GUARD
from db_tool.record import Record
from db_tool.sqlsplit import psql_meta_quote

TYPE_CHECKING = False  # typing is not imported at run time
if TYPE_CHECKING:
    from collections.abc import Sequence

    from db_tool.migrations import Step
    from db_tool.sqlsplit import OneQuery, TxControl

# pg_advisory_lock key shared by every migrator on a database: b"hecticmg" as a big-endian int.
LOCK_KEY = int.from_bytes(b"hecticmg", "big")
VAR = "__migrator_"
# Client encodings in which a trail byte of a character can look like `\\` or a quote: psql
# lexes them differently, so non-ASCII migrations are not inlined under them.
UNSAFE_ENCODINGS = frozenset({"SJIS", "SHIFT_JIS_2004", "BIG5", "GBK", "UHC", "GB18030", "JOHAB"})
# Every step starts from the session's defaults, as if it had its own psql: a plain SET (say
# `SET hectic.migration_mode = 'on'` without LOCAL, or SET search_path / ROLE) in one
# migration must not leak into the next. Same line as BEGIN, so error LINE numbers still match.
FRESH = "RESET SESSION AUTHORIZATION \\; RESET ROLE \\; RESET ALL"
READ_SQL = (
    "SELECT name, hash, to_char(applied_at AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM hectic.migration ORDER BY id;\n"
)
# Names are file names: hex keeps any byte of them off our field/line separators.
READ_HEX_SQL = (
    "SELECT encode(convert_to(name, 'UTF8'), 'hex'), hash, to_char(applied_at AT TIME ZONE "
    "'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM hectic.migration ORDER BY id;\n"
)


def marker(token: str, word: str) -> str:
    return f"@@migrator-{token} {word}"


def start_script(
    token: str, lock_timeout: float, bundle_file: str | os.PathLike[str], *, version: str,
    comment: str,
) -> str:
    """Lock, apply the bundle unless ours at `version` (schema comment `comment`) is in
    place, then print the encoding and the history between markers."""
    timeout_ms = max(1, int(lock_timeout * 1000))
    return "\n".join([
        "\\set ON_ERROR_STOP 1",
        f"SELECT '{marker(token, 'lock')}';",
        f"SET lock_timeout = {timeout_ms};",
        f"SELECT pg_advisory_lock({LOCK_KEY}) \\g /dev/null",
        "RESET lock_timeout;",
        # Our bundle at this version already in place (see bundle_comment): skip it.
        f"\\set {VAR}version {psql_meta_quote(version)}",
        f"\\set {VAR}comment {psql_meta_quote(comment)}",
        "SELECT to_regclass('hectic.version') IS NOT NULL AND pg_catalog.obj_description("
        "to_regnamespace('hectic'), 'pg_namespace') IS NOT DISTINCT FROM "
        f":'{VAR}comment' AS {VAR}maybe \\gset",
        f"\\if :{VAR}maybe",
        f"SELECT count(*) = 1 AS {VAR}current FROM hectic.version WHERE name = 'hectic' "
        f"AND version = :'{VAR}version' \\gset",
        "\\else",
        f"\\set {VAR}current false",
        "\\endif",
        f"\\if :{VAR}current",
        "\\else",
        # The bundle's "already exists, skipping" NOTICEs would bury a real error.
        "SET client_min_messages = warning;",
        "BEGIN;",
        f"\\i {psql_meta_quote(os.fspath(bundle_file))}",
        "COMMIT;",
        "RESET client_min_messages;",
        "\\endif",
        f"\\echo {marker(token, 'encoding')} :ENCODING",
        f"SELECT '{marker(token, 'history')}';",
        READ_HEX_SQL,
        f"SELECT '{marker(token, 'end')}';",
        "",
    ])


class Inline(Record):
    __slots__ = _fields = ("sql", "source", "first_line")

    def __init__(self, sql: OneQuery, source: str, first_line: int) -> None:
        self.sql = sql
        self.source = source  # the file to name in psql's messages
        self.first_line = first_line  # the line of source where the migration's text starts


def driver_script(
    steps: Sequence[Step], inlined: Sequence[Inline | None], tx: Sequence[TxControl],
    files: Sequence[str | None], token: str, *, start: int = 0,
) -> tuple[str, dict[int, str]]:
    """The driver for the planned steps and, for each driver line psql names for an inlined
    step, that step's file. files[i]: what `\\i` runs for a step that is not inlined. start:
    the plan's index of steps[0] (a plan may be sent as several drivers, one after another;
    the markers and variables carry the plan's index).

    One piece (~70 lines): the three step shapes share the line counting that maps psql's
    error positions back to the migration files."""
    echo = f"\\echo {marker(token, '')}"
    # A step run with `\\i` is either a BEGIN … COMMIT file of its own (wrapper) or runs in
    # our transaction under the savepoint guard.
    guarded = [one is None and not t.wrapper for one, t in zip(inlined, tx, strict=True)]
    lines = ["\\set ON_ERROR_STOP 1"]
    lineno = 1  # the driver line of the last entry in lines
    sources: dict[int, str] = {}  # driver line psql names for an inlined step → its file
    for i, step in enumerate(steps):
        n = start + i
        name_var, hash_var = f"{VAR}name_{n}", f"{VAR}hash_{n}"
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
            f"{echo}begin {n}",
        ]
        one = inlined[i]
        if one is not None:
            # The text starts on query line first_line (BEGIN on line 1; psql keeps lines
            # holding a space), so the server's "LINE n" of an error is line n of the
            # migration's file. psql names the driver line of the final `;`.
            gap = "\n " * (one.first_line - 2) + "\n" if one.first_line > 1 else " "
            entries += [
                f"{FRESH} \\; BEGIN \\;{gap}{one.sql.text}",
                ("" if one.sql.terminated else "\\; ") + record + " \\; COMMIT;",
            ]
        elif tx[i].wrapper:
            # The file is one BEGIN … COMMIT of its own: it commits itself, the history row
            # follows in a transaction of its own (as the original does it).
            entries += [
                f"{FRESH};",
                f"\\i {psql_meta_quote(os.fspath(_file(files, i)))}",
                "\\set ON_ERROR_STOP 1",
                f"{record};",
            ]
        else:
            path = psql_meta_quote(os.fspath(_file(files, i)))
            # One round trip for the history row, COMMIT and the next `\\i` step's BEGIN.
            next_too = i + 1 < len(steps) and guarded[i + 1]
            if i == 0 or not guarded[i - 1]:
                entries.append(f"{FRESH} \\; BEGIN \\; SAVEPOINT {GUARD};")
            entries += [
                f"\\i {path}",
                "\\set ON_ERROR_STOP 1",
                f"{echo}guard {n}",
                f"RELEASE SAVEPOINT {GUARD} \\; " + record
                + (f" \\; COMMIT \\; {FRESH} \\; BEGIN \\; SAVEPOINT {GUARD};"
                   if next_too else " \\; COMMIT;"),
            ]
        for entry in entries:
            lineno += entry.count("\n") + 1
        if one is not None:
            sources[lineno] = one.source
        entries.append(f"{echo}done {n}")
        lineno += 1
        lines += entries
    return "\n".join(lines) + "\n", sources


def _file(files: Sequence[str | None], i: int) -> str:
    path = files[i]
    assert path is not None
    return path
