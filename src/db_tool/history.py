"""What the database says is applied, and applying planned steps: what both backends share.

Two backends with one shape: `migrate_session(variables, lock_timeout)` is a context manager
yielding a session whose `.applied` is the history read UNDER the migration lock (so the plan
made from it cannot go stale) and whose `.apply(steps)` runs the plan.

- PostgreSQL: history_pg.py runs ONE psql process per `migrate` (the IO); pg_script.py builds
  the text it is fed (pure: the start script and the driver of the planned steps).
- SQLite: history_sqlite.py, one `sqlite3` process per `migrate`.

Both mark their progress with `@@migrator-<token> begin|guard|done <i>` lines on stdout, which
_outcome() here turns into the steps that stay applied or MigrationFailed.
"""

from __future__ import annotations

import os

from db_tool.errors import Error, ExitCode
from db_tool.migrations import FILE, Step, read_file
from db_tool.record import Record

TYPE_CHECKING = False  # typing is not imported at run time
if TYPE_CHECKING:  # nor sqlsplit (and the re it compiles) before psql is started
    from collections.abc import Sequence

    from db_tool.history_pg import PgHistory
    from db_tool.history_sqlite import SqliteHistory
    from db_tool.settings import MigratorSettings
    from db_tool.sqlsplit import TxControl

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


class MigrationFailed(Error):
    exit_code = ExitCode.MIGRATION_FAILED

    def __init__(self, message: str, detail: str, completed: Sequence[StepResult]) -> None:
        super().__init__(message, detail=detail)
        self.completed = list(completed)


class StepResult(Record):
    __slots__ = _fields = ("step",)

    def __init__(self, step: Step) -> None:
        self.step = step  # a step that was applied and committed


def sqlite_path(url: str) -> str | None:
    """The file path when url names a SQLite database, else None."""
    if url.startswith("sqlite://"):
        return url[len("sqlite://") :]
    if url.startswith("sqlite:"):
        return url[len("sqlite:") :]
    if "://" not in url and url.endswith(SQLITE_SUFFIXES):
        return url
    return None


def for_url(url: str, settings: MigratorSettings) -> PgHistory | SqliteHistory:
    """The backend for url; settings say where sqlite3 is looked up, whether migrations may be
    inlined and libpq's PGHOST/PGPORT/PGUSER."""
    path = sqlite_path(url)
    if path is not None:
        from db_tool.history_sqlite import SqliteHistory

        return SqliteHistory(path, search_path=settings.search_path)
    from db_tool.history_pg import PgHistory

    return PgHistory(url, inline=settings.inline, libpq=settings.libpq)


# A file run with `\\i` (or `.read`) runs inside this savepoint of the step's transaction. If
# the file ends our transaction itself (COMMIT, ROLLBACK, \\c), releasing it fails, so the
# history row is never written next to half a migration; the `guard` marker before the release
# tells that failure from one inside the file.
GUARD = "migrator_guard"


def materialize(step: Step, tmp: str | os.PathLike[str], index: int) -> str:
    """The file psql/sqlite3 should run for this step (FILE layout: a temporary copy of the
    section, so an unterminated statement in it cannot swallow our history INSERT)."""
    m = step.migration
    if m.layout != FILE:
        path = m.up if step.direction == "up" else m.down
        assert path is not None
        return path
    body = m.up_sql if step.direction == "up" else m.down_sql
    assert body is not None
    out = os.path.join(tmp, f"{index:05d}-{step.direction}.sql")
    with open(out, "wb") as fh:
        fh.write(body)
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


def no_tx() -> TxControl:
    """No transaction control of its own (a step sent as one query, or an unreadable file)."""
    from db_tool.sqlsplit import TxControl

    return TxControl()


def transaction_control(step: Step) -> TxControl:
    """The step's file's own transaction control (TxControl() when it cannot be read: running
    it reports that)."""
    from db_tool import sqlsplit

    m = step.migration
    if m.layout == FILE:
        body = m.up_sql if step.direction == "up" else m.down_sql
    else:
        path = m.up if step.direction == "up" else m.down
        try:
            body = read_file(path) if path is not None else None
        except OSError:
            body = None
    return sqlsplit.transaction_control(body) if body is not None else no_tx()


def outcome(
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
        own = tx[running] if running < len(tx) else no_tx()
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


def pending_count(
    url: str, migration_dir: str | os.PathLike[str], settings: MigratorSettings
) -> int:
    """How many migrations on disk are not applied (read-only; does not apply the bundle)."""
    from db_tool import migrations, planning

    applied = for_url(url, settings).read_applied()
    rows = planning.status(migrations.discover(migration_dir), applied)
    return sum(1 for r in rows if r.state == "pending")
