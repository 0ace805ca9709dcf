"""The migrator's verbs as functions returning values: init, migrate (up/down/to), create,
list and status. `cli/migrator.py` parses argv and prints what these return; `database diff`
calls them directly.

Nothing here prints. Warnings found along the way (discovery, a history mismatch forced
through) go to the `warn` callable the caller passes, at the moment they are found, so a
warning shows before a long wait for the migration lock, not after it.
"""

from __future__ import annotations

from db_tool.errors import Error, ExitCode
from db_tool.record import Record

TYPE_CHECKING = False  # typing is not imported at run time (a no-op migrate starts fast)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from db_tool.history import StepResult
    from db_tool.history_wire import PendingState
    from db_tool.migrations import Applied, Migration
    from db_tool.planning import StatusRow, Target
    from db_tool.settings import MigratorSettings

if TYPE_CHECKING:
    Warn = Callable[[str], None]
STATES = ("applied", "pending", "missing", "modified")


class Outcome(Record):
    """What a `migrate` run did."""

    __slots__ = _fields = ("already", "results", "summary")

    def __init__(self, already: str | None, results: list[StepResult], summary: str | None
                 ) -> None:
        self.already = already  # nothing to do: why (e.g. "already at 2024…-x"); else None
        self.results = results  # the steps applied and committed, in order
        self.summary = summary  # "successfully migrated to …" when steps ran


def discover(migration_dir: str, warn: Warn) -> list[Migration]:
    from db_tool import migrations

    warnings: list[str] = []
    found = migrations.discover(migration_dir, warnings)
    for warning in warnings:
        warn(warning)
    return found


def init_sql(url: str | None) -> str:
    """What `init --dry-run` prints: the SQLite schema for a SQLite URL, else the bundle."""
    from db_tool import history

    if url and history.sqlite_path(url) is not None:
        from db_tool import __version__
        from db_tool.history_sqlite import sqlite_init_sql

        return sqlite_init_sql(__version__)
    from db_tool import bundle

    return bundle.render()


def init(url: str, variables: Mapping[str, str], settings: MigratorSettings) -> None:
    """Apply the hectic bundle (PostgreSQL) or create the history tables (SQLite)."""
    from db_tool import history

    history.for_url(url, settings).init(variables)


def migrate(
    url: str,
    migration_dir: str,
    target: Target,
    settings: MigratorSettings,
    warn: Warn,
    *,
    variables: Mapping[str, str] | None = None,
    force: bool = False,
    strict: bool = False,
) -> Outcome:
    """Bring the database to `target` with the migrations in migration_dir. Raises
    history.MigrationFailed (its `.completed` are the steps that stay applied) when a migration
    fails, Error for anything else (a missing migration dir before any database work)."""
    from db_tool import history_wire, planning

    strict = strict or settings.strict
    variables = dict(variables or {})
    lock_timeout = settings.lock_timeout()  # checked before any database work
    # Nothing to do is answered from one consistent read over the wire client when our bundle
    # at this version is in place (no psql, no bundle, no lock: the answer is that of a
    # migrator that ran just before any concurrent one). Anything else: the locked session.
    quick = history_wire.quick_state(url, settings.libpq)
    available: list[Migration] | None = None
    if quick is None or not quick.bundle_current or quick.applied is None:
        available = discover(migration_dir, warn)
    elif not _work_likely(migration_dir, quick.applied, target):
        available = discover(migration_dir, warn)
        early = planning.plan(available, quick.applied, target, force=force, strict=strict)
        if early.already is not None:
            for notice in early.notices:
                warn(notice)
            return Outcome(early.already, [], None)
    from db_tool import history

    backend = history.for_url(url, settings)
    if history.sqlite_path(url) is not None:  # (for PostgreSQL, history_sqlite stays unread)
        from db_tool.history_sqlite import SqliteHistory

        assert isinstance(backend, SqliteHistory)
        backend.cli()  # fail with 127 before touching anything
    # The session holds the migration lock from before the history is read until the last
    # step, so the plan below cannot be invalidated by a concurrent migrator.
    with backend.migrate_session(variables, lock_timeout) as session:
        if available is None:
            # Work is pending and the bundle is in place: read the directory while psql
            # connects, takes the lock and reads the history (session.applied waits for it).
            available = discover(migration_dir, warn)
        plan = planning.plan(available, session.applied, target, force=force, strict=strict)
        for notice in plan.notices:
            warn(notice)
        if plan.already is not None:
            return Outcome(plan.already, [], None)
        results = session.apply(plan.steps)
    return Outcome(None, results, _summary(available, results))


def _work_likely(migration_dir: str, applied: Sequence[Applied], target: Target) -> bool:
    """A cheap guess (names only, no file read) that `target` has steps to run, so psql is
    worth starting before the migrations are read. Wrong either way only costs time: the
    plan made under the lock decides."""
    import os

    from db_tool.migrations import is_migration_name

    if target.direction == "down":
        return target.number != 0 and bool(applied)
    if target.direction != "up" or target.number == 0:
        return False
    try:
        names = {e[:-4] if e.endswith(".sql") else e
                 for e in os.listdir(migration_dir) if is_migration_name(e)}
    except OSError:
        return False  # discovery says what is wrong, before any database work
    return bool(names - {a.name for a in applied})


def _summary(available: Sequence[Migration], results: Sequence[StepResult]) -> str:
    last = results[-1].step
    if last.direction == "up":
        return f"successfully migrated to {last.migration.name}"
    names = [m.name for m in available]
    position = names.index(last.migration.name)
    return "successfully migrated down to " + (
        names[position - 1] if position > 0 else "clean state"
    )


def result_lines(results: Sequence[StepResult]) -> list[str]:
    """`applied <name>` / `rolled back <name>`, one per step: what `migrate` prints."""
    return [
        f"{'applied' if r.step.direction == 'up' else 'rolled back'} {r.step.migration.name}"
        for r in results
    ]


_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def random_word() -> str:
    import secrets

    return "".join(
        secrets.choice(_CONSONANTS if i % 2 == 0 else _VOWELS) for i in range(6)
    )


def create(directory: str, name: str | None, now: float | None = None) -> str:
    """Create <dir>/<local YYYYMMDDHHMMSS>-<name>.sql (local time, as the original's `date`);
    the timestamp is bumped past any taken one (under flock on the directory), so two creates
    in one second never collide. Returns the new file's path."""
    import fcntl
    import os
    import time

    from db_tool.migrations import is_migration_name

    name = (name if name is not None else "").strip() or random_word()
    if "/" in name or "\0" in name or name in (".", ".."):
        raise Error(f"migration name {name!r} may not contain '/' or NUL")
    root = directory
    os.makedirs(root, exist_ok=True)
    stamp = int(time.time() if now is None else now)
    content = "-- migrate:up\n\n\n-- migrate:down\n\n"
    dir_fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        taken = {e[:14] for e in os.listdir(root) if is_migration_name(e)}
        while True:
            prefix = time.strftime("%Y%m%d%H%M%S", time.localtime(stamp))
            if prefix not in taken:
                path = os.path.join(root, f"{prefix}-{name}.sql")
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    taken.add(prefix)
                    continue
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(content)
                return path
            stamp += 1
    finally:
        os.close(dir_fd)


def listing(available: Sequence[Migration], *, raw: bool) -> list[str]:
    """One line per migration; without raw, `<name>: missing up.sql down.sql` as the original
    prints it for both of its layouts (it looks for up.sql or up/entrypoint.sql)."""
    from db_tool import migrations

    lines = []
    for m in available:
        missing = [f"{d}.sql" for d, f in (("up", m.up), ("down", m.down)) if f is None]
        if m.layout == migrations.FILE:
            missing = [f"-- migrate:{d}" for d, f in (("up", m.up), ("down", m.down)) if f is None]
        lines.append(m.name if raw or not missing else f"{m.name}: missing {' '.join(missing)}")
    return lines


class Status(Record):
    __slots__ = _fields = ("rows", "counts")

    def __init__(self, rows: list[StatusRow], counts: dict[str, int]) -> None:
        self.rows = rows
        self.counts = counts  # per state in STATES, in that order


def status_of_dir(url: str, migration_dir: str, settings: MigratorSettings, warn: Warn
                  ) -> Status:
    """status() of the migrations in migration_dir: the wire client's reads are sent first,
    and the server answers them while the directory is read."""
    from db_tool import history_wire

    state = history_wire.start_quick(url, settings.libpq)
    try:
        available = discover(migration_dir, warn)
    except BaseException:
        state.close()
        raise
    return status(url, available, settings, state=state)


def status(url: str, available: Sequence[Migration], settings: MigratorSettings, *,
           state: PendingState | None = None) -> Status:
    """Each migration's state; read-only (an uninitialised database has an empty history).
    state: the wire client's reads, already sent (status_of_dir)."""
    from db_tool import history_wire, planning

    quick = (state or history_wire.start_quick(url, settings.libpq)).result()
    if quick is not None:
        applied = quick.applied or []
    else:
        from db_tool import history

        backend = history.for_url(url, settings)
        if history.sqlite_path(url) is None:
            from db_tool.history_pg import PgHistory

            assert isinstance(backend, PgHistory)
            applied = backend.read_applied(wire=False)  # not a second wire attempt
        else:
            applied = backend.read_applied()
    rows = planning.status(available, applied)
    return Status(rows, {s: sum(1 for r in rows if r.state == s) for s in STATES})


def refuse_modified(report: Status, settings: MigratorSettings, *, strict: bool) -> None:
    """--strict / MIGRATOR_STRICT: an applied migration modified since is an error (exit 2)."""
    if report.counts["modified"] and (strict or settings.strict):
        raise Error(
            f"{report.counts['modified']} applied migration(s) modified since they were "
            "applied; refusing because of --strict / MIGRATOR_STRICT=1", ExitCode.AMBIGUOUS,
        )
