"""Planning: a pure function of (disk, history, target, force, strict) → Plan, and each
migration's status. No database, no printing (commands/migrate.py calls these)."""

from __future__ import annotations

import os

from db_tool.errors import Error, ExitCode
from db_tool.migrations import FILE, LATEST_WORDS, Applied, Migration, Step
from db_tool.record import Record

TYPE_CHECKING = False  # typing and collections.abc are not imported at run time
if TYPE_CHECKING:
    from collections.abc import Sequence


class HistoryMismatch(Error):
    """Applied history and the files on disk disagree (exit 2 unless --force)."""

    exit_code = ExitCode.AMBIGUOUS


# --------------------------------------------------------------------------- targets


class Target(Record):
    """What `migrate` was asked for. number None means "all" (up); name for `to`."""

    __slots__ = _fields = ("direction", "number", "name")

    def __init__(self, direction: str, number: int | None = None, name: str | None = None) -> None:
        self.direction = direction  # "up", "down" or "to"
        self.number = number
        self.name = name  # for "to": a migration name or one of LATEST_WORDS

    @classmethod
    def parse(cls, direction: str, arg: str | None) -> Target:
        """As the original: `up` alone is ONE step, `up all|latest|head` all of them; `down`
        alone one step; 0 is a valid count (nothing to do when something is applied)."""
        if direction == "up":
            if arg is None:
                return cls("up", 1)
            if arg in ("all", *LATEST_WORDS):
                return cls("up")
            if not _is_count(arg):
                raise Error("up argument not a number or 'all'; give N, all, latest or head")
            return cls("up", int(arg))
        if direction == "down":
            if arg is None:
                return cls("down", 1)
            if not _is_count(arg):
                raise Error("down argument not a number; give how many to roll back")
            return cls("down", int(arg))
        if direction == "to":
            if not arg:
                raise Error("no migration name specified; give a migration name, latest or head")
            return cls("to", name=arg)
        raise Error(f"unknown migrate direction {direction!r}", ExitCode.UNKNOWN)


def _is_count(arg: str) -> bool:
    return arg != "" and _DIGITS.issuperset(arg)  # r"[0-9]+" without importing re


_DIGITS = frozenset("0123456789")


# --------------------------------------------------------------------------- planning




class Plan(Record):
    __slots__ = _fields = ("steps", "notices", "already")

    def __init__(self, steps: list[Step], notices: list[str], already: str | None = None) -> None:
        self.steps = steps
        # Non-fatal things the user must see (history mismatch passed with --force).
        self.notices = notices
        # Set when there is nothing to do because we are already where asked.
        self.already = already


def check_history(available: Sequence[Migration], applied: Sequence[Applied]) -> str | None:
    """The mismatch report, or None when the applied names are a prefix of the disk names
    (the original's check; a changed hash is reported by modified(), not here)."""
    disk = [m.name for m in available]
    db = [a.name for a in applied]
    for i, a in enumerate(applied):
        d = available[i] if i < len(available) else None
        if d is None or d.name != a.name:
            return _mismatch_report(
                i + 1,
                f"Database has: {a.name}",
                f"Filesystem has: {d.name if d else '(nothing: fewer migrations on disk)'}",
                disk, db,
                "Restore or rename the migration files so that the applied migrations come first "
                "in the same order, or roll the database back (or recreate it) to match the files.",
            )
    return None


class Modified(Record):
    """An applied migration whose up file no longer has the hash it was applied with."""

    __slots__ = _fields = ("name", "applied_hash", "disk_hash")

    def __init__(self, name: str, applied_hash: str, disk_hash: str) -> None:
        self.name = name
        self.applied_hash = applied_hash
        self.disk_hash = disk_hash

    def describe(self) -> str:
        return (
            f"applied migration {self.name} was modified since it was applied "
            f"(database has hash {self.applied_hash}, the file has {self.disk_hash}); "
            "the change is not applied: put it in a new migration (migrator create)"
        )


def modified(available: Sequence[Migration], applied: Sequence[Applied]) -> list[Modified]:
    by_disk = {m.name: m for m in available}
    out = []
    for a in applied:
        m = by_disk.get(a.name)
        if m is not None and m.hash is not None and m.hash != a.hash.strip().lower():
            out.append(Modified(a.name, a.hash, m.hash))
    return out


def _mismatch_report(
    position: int, db_line: str, fs_line: str, disk: list[str], db: list[str], fix: str
) -> str:
    def numbered(names: list[str]) -> list[str]:
        return [f"  {i}. {n}" for i, n in enumerate(names, 1)] or ["  (none)"]

    lines = [
        "Migration history mismatch detected!",
        f"Position: Migration #{position}",
        db_line,
        fs_line,
        "Full filesystem migrations (in order):",
        *numbered(disk),
        "Full database migrations (in order):",
        *numbered(db),
        f"How to proceed: {fix} Or rerun with --force to proceed anyway.",
    ]
    return "\n".join(lines)


def plan(
    available: Sequence[Migration],
    applied: Sequence[Applied],
    target: Target,
    *,
    force: bool = False,
    strict: bool = False,
) -> Plan:
    """Steps that move the database from `applied` to `target`.

    Consistent history: applied is a prefix of available and "position" is its length.
    With --force past a mismatch the same rules work on sets: pending = on disk and not
    applied (name order); rollback = applied, latest first. A modified applied migration is a
    notice (the original does not look at hashes), an error (exit 2) with strict and no force.
    Edge cases keep the original's messages and exit codes (1; 0 when already there).

    One piece (~75 lines): up, down and to share the history check and the "already there"
    answers; split apart, each would repeat them.
    """
    notices: list[str] = []
    report = check_history(available, applied)
    if report is not None:
        if not force:
            first, _, rest = report.partition("\n")
            raise HistoryMismatch(first, detail=rest)
        notices.append("--force: proceeding despite the history check\n" + report)
    changed = modified(available, applied)
    if changed and strict and not force:
        raise HistoryMismatch(
            changed[0].describe() + "; refusing because of --strict / MIGRATOR_STRICT=1 "
            "(restore the file, or rerun with --force)",
            detail="\n".join(c.describe() for c in changed[1:]),
        )
    notices += [c.describe() for c in changed]

    applied_names = {a.name for a in applied}
    by_name = {m.name: m for m in available}
    pending = [m for m in available if m.name not in applied_names]

    if target.direction == "up":
        if target.number is None:
            if not pending:
                return Plan([], notices, already=_already(applied))
            return Plan(_ups(pending), notices)
        if target.number == 0 and applied:
            return Plan([], notices, already=_already(applied))
        if target.number == 0 or target.number > len(pending):
            raise Error(
                f"cannot migrate up {target.number} step(s): not enough migrations; "
                f"{len(pending)} pending (migrator status shows them)"
            )
        return Plan(_ups(pending[: target.number]), notices)

    if target.direction == "down":
        count = 1 if target.number is None else target.number
        if not applied:
            raise Error("cannot migrate down: no migrations applied")
        if count == 0:
            return Plan([], notices, already=_already(applied))
        if count > len(applied):
            raise Error(
                f"cannot migrate down {count} step(s): would go before first migration; "
                f"{len(applied)} applied"
            )
        return Plan(_downs(list(reversed(applied))[:count], by_name), notices)

    # "to"
    name = target.name or ""
    if name in LATEST_WORDS:
        if not pending:
            return Plan([], notices, already=_already(applied))
        return Plan(_ups(pending), notices)
    wanted = _resolve_name(name, available)
    if wanted in applied_names:
        position = [a.name for a in applied].index(wanted)
        later = list(reversed(applied[position + 1 :]))
        if not later:
            return Plan([], notices, already=f"database already at {wanted}")
        return Plan(_downs(later, by_name), notices)
    return Plan(_ups([m for m in pending if m.name <= wanted]), notices)


def _already(applied: Sequence[Applied]) -> str:
    if not applied:
        return "database already at clean state (no migrations)"
    return f"database already at {applied[-1].name}"


def _resolve_name(name: str, available: Sequence[Migration]) -> str:
    names = [m.name for m in available]
    if name in names:
        return name
    candidates = [n for n in names if n.startswith(name)]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise Error(
            f"migration name {name!r} is ambiguous: {', '.join(candidates)}", ExitCode.AMBIGUOUS
        )
    raise Error(f"no migration named {name!r} in the migration directory")


def _not_found(m: Migration, direction: str) -> Error:
    if m.layout == FILE:
        expected = f"a '-- migrate:{direction}' section in {m.path}"
    else:
        single = os.path.join(m.path, f"{direction}.sql")
        multi = os.path.join(m.path, direction, "entrypoint.sql")
        expected = f"either {single} or {multi}"
    return Error(f"migration {direction} not found for {m.name}; expected {expected}")


def _ups(migrations: Sequence[Migration]) -> list[Step]:
    for m in migrations:
        if m.up is None:
            raise _not_found(m, "up")
    return [Step("up", m) for m in migrations]


def _downs(rows: Sequence[Applied], by_name: dict[str, Migration]) -> list[Step]:
    steps = []
    for a in rows:
        m = by_name.get(a.name)
        if m is None:
            raise Error(f"cannot roll back {a.name}: it is applied but not on disk")
        if m.down is None:
            raise _not_found(m, "down")
        steps.append(Step("down", m))
    return steps


# --------------------------------------------------------------------------- status


class StatusRow(Record):
    __slots__ = _fields = ("name", "state", "applied_at", "disk_hash", "db_hash")

    def __init__(self, name: str, state: str, applied_at: str | None, disk_hash: str | None,
                 db_hash: str | None) -> None:
        self.name = name
        self.state = state  # "applied", "pending", "missing" (applied, not on disk), "modified"
        self.applied_at = applied_at
        self.disk_hash = disk_hash
        self.db_hash = db_hash


def status(available: Sequence[Migration], applied: Sequence[Applied]) -> list[StatusRow]:
    """One row per migration known to disk or database, in name order."""
    by_disk = {m.name: m for m in available}
    by_db = {a.name: a for a in applied}
    rows = []
    for name in sorted(set(by_disk) | set(by_db)):
        m, a = by_disk.get(name), by_db.get(name)
        if a is None:
            state = "pending"
        elif m is None:
            state = "missing"
        elif m.hash is not None and m.hash != a.hash.strip().lower():
            state = "modified"
        else:
            state = "applied"
        rows.append(StatusRow(
            name, state, a.applied_at if a else None, m.hash if m else None, a.hash if a else None,
        ))
    return rows
