"""Migration discovery and planning. PURE: no database, no printing.

Discovery (`discover`) only reads the migration directory. Three layouts, one migration each:

  dir         <name>/up.sql + <name>/down.sql
  entrypoint  <name>/up/entrypoint.sql + <name>/down/entrypoint.sql (may `\\ir` siblings)
  file        <name>.sql holding `-- migrate:up` and `-- migrate:down` sections (dbmate style)

Names match ``^[0-9]{14}-.+`` and sort as plain strings (the timestamp prefix orders them).

Hash (stored in hectic.migration.hash, used to notice an up file modified after it was applied):
  dir         sha256 of the bytes of up.sql — the same value `sha256sum up.sql` prints;
  entrypoint  sha256 of entrypoint.sql when up/ holds nothing else; otherwise sha256 over
              entrypoint.sql followed by every other file under up/ (sorted by relative path,
              each as NUL + path + NUL + bytes), so editing an included sibling counts as a
              modification too;
  file        sha256 of the up section's bytes (from the line after `-- migrate:up` to the
              next marker or the end of the file).

Running: dir and entrypoint files are `\\i`-ed where they are, so `\\ir` inside them resolves
next to them; a single-file section runs from a temporary copy (so an unterminated statement
cannot swallow the history INSERT); use the entrypoint layout when a migration needs `\\ir`.
Plain SQL that sqlsplit can rewrite is sent inline as one query instead (see history.py).
Planning (`plan`) is a pure function of (disk, history, target, force) → Plan.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from db_tool.errors import Error, ExitCode, MissingError

NAME_RE = re.compile(r"^[0-9]{14}-.+")
# dbmate accepts options after the marker (`-- migrate:up transaction:false`); we tolerate them.
_MARKER_RE = re.compile(rb"^--[ \t]*migrate:(up|down)\b[^\n]*$", re.MULTILINE)

DIR, ENTRYPOINT, FILE = "dir", "entrypoint", "file"
LATEST_WORDS = ("latest", "head", "last")


class HistoryMismatch(Error):
    """Applied history and the files on disk disagree (exit 2 unless --force)."""

    exit_code = ExitCode.AMBIGUOUS


@dataclass(frozen=True)
class Migration:
    name: str
    layout: str  # DIR, ENTRYPOINT or FILE
    path: Path  # the directory (dir/entrypoint layouts) or the .sql file (file layout)
    up: Path | None  # file to run for up; None when missing. FILE layout: the .sql file itself
    down: Path | None
    hash: str | None  # None when there is no up
    # FILE layout only: the section texts (psql runs them from a temporary copy).
    up_sql: bytes | None = None
    down_sql: bytes | None = None
    # FILE layout: the line of the .sql file where each section's text starts.
    up_line: int = 1
    down_line: int = 1

    @property
    def missing(self) -> list[str]:
        """Labels of the missing directions, in the words of this layout."""
        labels = {
            DIR: ("up.sql", "down.sql"),
            ENTRYPOINT: ("up/entrypoint.sql", "down/entrypoint.sql"),
            FILE: ("-- migrate:up", "-- migrate:down"),
        }[self.layout]
        out = []
        if self.up is None:
            out.append(labels[0])
        if self.down is None:
            out.append(labels[1])
        return out


@dataclass(frozen=True)
class Applied:
    """One row of the history table, in application order."""

    name: str
    hash: str
    applied_at: str = ""


# --------------------------------------------------------------------------- discovery


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_sections(content: bytes) -> tuple[bytes | None, bytes | None]:
    """(up, down) section bytes of a dbmate-style file; None for an absent marker."""
    sections: dict[str, bytes] = {}
    markers = list(_MARKER_RE.finditer(content))
    for i, m in enumerate(markers):
        kind = m.group(1).decode()
        start = m.end() + 1 if m.end() < len(content) else m.end()
        end = markers[i + 1].start() if i + 1 < len(markers) else len(content)
        if kind in sections:
            raise Error(f"two '-- migrate:{kind}' markers")
        sections[kind] = content[start:end]
    return sections.get("up"), sections.get("down")


def section_lines(content: bytes) -> dict[str, int]:
    """The 1-based line of content where each section's text starts (see split_sections)."""
    return {
        m.group(1).decode(): content.count(b"\n", 0, m.end()) + 1 + (m.end() < len(content))
        for m in _MARKER_RE.finditer(content)
    }


def _entrypoint_hash(up_dir: Path) -> str:
    entry = up_dir / "entrypoint.sql"
    others = sorted(
        p.relative_to(up_dir).as_posix()
        for p in up_dir.rglob("*")
        if p.is_file() and p != entry
    )
    h = hashlib.sha256(entry.read_bytes())
    for rel in others:
        h.update(b"\0" + rel.encode() + b"\0" + (up_dir / rel).read_bytes())
    return h.hexdigest()


def _from_directory(name: str, path: Path) -> Migration:
    # One scandir instead of a stat per candidate: discovery of 500 migrations stays cheap.
    with os.scandir(path) as it:
        kinds = {e.name: e.is_dir() for e in it}
    flat = [f for f in ("up.sql", "down.sql") if f in kinds]
    nested = [d for d in ("up", "down") if kinds.get(d)]
    if flat and nested:
        raise Error(
            f"migration {name} mixes two layouts: {', '.join(str(path / f) for f in flat)} "
            f"and {', '.join(str(path / d) + '/' for d in nested)}; keep one",
            ExitCode.AMBIGUOUS,
        )
    if nested:
        up_file = path / "up" / "entrypoint.sql"
        down_file = path / "down" / "entrypoint.sql"
        up = up_file if up_file.is_file() else None
        return Migration(
            name, ENTRYPOINT, path, up, down_file if down_file.is_file() else None,
            _entrypoint_hash(path / "up") if up else None,
        )
    up_file, down_file = path / "up.sql", path / "down.sql"
    up = up_file if kinds.get("up.sql") is False else None
    return Migration(
        name, DIR, path, up, down_file if kinds.get("down.sql") is False else None,
        sha256_hex(up_file.read_bytes()) if up else None,
    )


def _from_file(name: str, path: Path) -> Migration:
    content = path.read_bytes()
    try:
        up_sql, down_sql = split_sections(content)
    except Error as exc:
        raise Error(f"{path}: {exc.message}") from None
    lines = section_lines(content)
    return Migration(
        name, FILE, path,
        path if up_sql is not None else None,
        path if down_sql is not None else None,
        sha256_hex(up_sql) if up_sql is not None else None,
        up_sql, down_sql, lines.get("up", 1), lines.get("down", 1),
    )


def discover(directory: str | os.PathLike[str]) -> list[Migration]:
    """All migrations under directory, in name order. Missing directory → exit 3."""
    root = Path(directory)
    if not root.is_dir():
        raise MissingError(
            f"migration directory {root} does not exist: create it (migrator create) "
            "or point --migration-dir / MIGRATION_DIR at it"
        )
    found: dict[str, Migration] = {}
    for entry in os.scandir(root):
        if entry.is_dir():
            name = entry.name
            if not NAME_RE.match(name):
                continue
            migration = _from_directory(name, Path(entry.path))
        elif entry.is_file() and entry.name.endswith(".sql"):
            name = entry.name[: -len(".sql")]
            if not NAME_RE.match(name):
                continue
            migration = _from_file(name, Path(entry.path))
        else:
            continue
        if name in found:
            first, second = sorted([str(found[name].path), str(migration.path)])
            raise Error(
                f"migration {name} exists in two layouts: {first} and {second}; keep one",
                ExitCode.AMBIGUOUS,
            )
        found[name] = migration
    return [found[n] for n in sorted(found)]


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """What `migrate` was asked for. count None means "all" (up) ; name for `to`."""

    direction: str  # "up", "down" or "to"
    count: int | None = None
    name: str | None = None  # for "to": a migration name or one of LATEST_WORDS

    @classmethod
    def parse(cls, direction: str, arg: str | None) -> Target:
        if direction == "up":
            if arg is None or arg in ("all", *LATEST_WORDS):
                return cls("up")
            return cls("up", _positive(arg, "up"))
        if direction == "down":
            return cls("down", 1 if arg is None else _positive(arg, "down"))
        if direction == "to":
            if not arg:
                raise MissingError("migrate to needs a target: a migration name, latest or head")
            return cls("to", name=arg)
        raise Error(f"unknown migrate direction {direction!r}", ExitCode.UNKNOWN)


def _positive(arg: str, direction: str) -> int:
    if not re.fullmatch(r"[0-9]+", arg) or int(arg) == 0:
        what = "all, latest, head or " if direction == "up" else ""
        raise Error(f"migrate {direction}: N must be {what}a positive integer, got {arg!r}")
    return int(arg)


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Step:
    direction: str  # "up" or "down"
    migration: Migration


@dataclass(frozen=True)
class Plan:
    steps: list[Step]
    # Non-fatal things the user must see (history mismatch passed with --force).
    notices: list[str] = field(default_factory=list)
    # Set when there is nothing to do because we are already where asked.
    already: str | None = None


def check_history(available: Sequence[Migration], applied: Sequence[Applied]) -> str | None:
    """The mismatch report, or None when the applied names are a prefix of the disk names and
    every applied migration's up file still has the hash it was applied with."""
    disk = [m.name for m in available]
    db = [a.name for a in applied]
    for i, a in enumerate(applied):
        d = available[i] if i < len(available) else None
        if d is None or d.name != a.name:
            return _mismatch_report(
                f"position {i + 1}",
                f"Database has:   {a.name}",
                f"Filesystem has: {d.name if d else '(nothing: fewer migrations on disk)'}",
                disk, db,
                "Restore or rename the migration files so that the applied migrations come first "
                "in the same order, or roll the database back (or recreate it) to match the files.",
            )
        if d.hash is not None and d.hash != a.hash:
            return _mismatch_report(
                f"position {i + 1}: {a.name} was modified since it was applied",
                f"Database has:   {a.name} (hash {a.hash})",
                f"Filesystem has: {d.name} (hash {d.hash})",
                disk, db,
                "Restore the applied up file to its applied content and put the change in a new "
                "migration (migrator create), or recreate the database.",
            )
    return None


def _mismatch_report(
    where: str, db_line: str, fs_line: str, disk: list[str], db: list[str], fix: str
) -> str:
    def numbered(names: list[str]) -> list[str]:
        return [f"  {i}. {n}" for i, n in enumerate(names, 1)] or ["  (none)"]

    lines = [
        f"Migration history mismatch at {where}",
        f"  {db_line}",
        f"  {fs_line}",
        "Full filesystem migrations:",
        *numbered(disk),
        "Full database migrations:",
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
) -> Plan:
    """Steps that move the database from `applied` to `target`.

    Consistent history: applied is a prefix of available and "position" is its length.
    With --force past a mismatch the same rules work on sets: pending = on disk and not
    applied (name order); rollback = applied, latest first.
    """
    notices: list[str] = []
    report = check_history(available, applied)
    if report is not None:
        if not force:
            first, _, rest = report.partition("\n")
            raise HistoryMismatch(first, detail=rest)
        notices.append("--force: proceeding despite the history check\n" + report)

    applied_names = {a.name for a in applied}
    by_name = {m.name: m for m in available}
    pending = [m for m in available if m.name not in applied_names]

    if target.direction == "up":
        if target.count is None:
            if not pending:
                return Plan([], notices, already=_already_latest(applied))
            return Plan(_ups(pending), notices)
        if target.count > len(pending):
            raise Error(
                f"not enough migrations: asked to apply {target.count}, "
                f"{len(pending)} pending"
            )
        return Plan(_ups(pending[: target.count]), notices)

    if target.direction == "down":
        count = target.count or 1
        if not applied:
            raise Error("nothing to roll back: no migrations are applied")
        if count > len(applied):
            raise Error(
                f"not enough applied migrations: asked to roll back {count}, "
                f"{len(applied)} applied"
            )
        return Plan(_downs(list(reversed(applied))[:count], by_name), notices)

    # "to"
    name = target.name or ""
    if name in LATEST_WORDS:
        if not pending:
            return Plan([], notices, already=_already_latest(applied))
        return Plan(_ups(pending), notices)
    wanted = _resolve_name(name, available)
    if wanted in applied_names:
        position = [a.name for a in applied].index(wanted)
        later = list(reversed(applied[position + 1 :]))
        if not later:
            return Plan([], notices, already=f"already at {wanted}: nothing to do")
        return Plan(_downs(later, by_name), notices)
    return Plan(_ups([m for m in pending if m.name <= wanted]), notices)


def _already_latest(applied: Sequence[Applied]) -> str:
    if not applied:
        return "no migrations to apply: nothing to do"
    return f"already at the latest migration ({applied[-1].name}): nothing to do"


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


def _ups(migrations: Sequence[Migration]) -> list[Step]:
    for m in migrations:
        if m.up is None:
            raise Error(f"cannot apply {m.name}: {' and '.join(m.missing)} missing")
    return [Step("up", m) for m in migrations]


def _downs(rows: Sequence[Applied], by_name: dict[str, Migration]) -> list[Step]:
    steps = []
    for a in rows:
        m = by_name.get(a.name)
        if m is None:
            raise Error(f"cannot roll back {a.name}: it is applied but not on disk")
        if m.down is None:
            raise Error(f"cannot roll back {m.name}: {' and '.join(m.missing)} missing")
        steps.append(Step("down", m))
    return steps


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class StatusRow:
    name: str
    state: str  # "applied", "pending", "missing" (applied, not on disk), "modified"
    applied_at: str | None
    disk_hash: str | None
    db_hash: str | None


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
        elif m.hash is not None and m.hash != a.hash:
            state = "modified"
        else:
            state = "applied"
        rows.append(StatusRow(
            name, state, a.applied_at if a else None, m.hash if m else None, a.hash if a else None,
        ))
    return rows
