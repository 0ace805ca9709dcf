"""Migration discovery and planning. PURE: no database, no printing.

Discovery (`discover`) only reads the migration directory. Three layouts, one migration each:

  dir         <name>/up.sql + <name>/down.sql
  entrypoint  <name>/up/entrypoint.sql + <name>/down/entrypoint.sql (may `\\ir` siblings)
  file        <name>.sql holding `-- migrate:up` and `-- migrate:down` sections (dbmate style)

Names match ``^[0-9]{14}-.+`` and sort as plain strings (the timestamp prefix orders them).

Hash (stored in hectic.migration.hash, used to notice an up file modified after it was applied):
  dir         sha256 of the bytes of up.sql — the same value `sha256sum up.sql` prints;
  entrypoint  sha256 of the bytes of up/entrypoint.sql alone (the original migrator hashes the
              file it runs, nothing else: the same value keeps its histories "applied");
  file        sha256 of the up section's bytes (from the line after `-- migrate:up` to the
              next marker or the end of the file).
A `<name>.sql` without a `-- migrate:up` marker (the original's `create` writes such files) is
not a migration: discover() skips it and says so in its `warnings`.

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
from pathlib import Path
from typing import NamedTuple

from db_tool.errors import Error, ExitCode, MissingError

# As the original (find -regex '^[0-9]{14}-.*', domain hectic.migration_name).
NAME_RE = re.compile(r"^[0-9]{14}-")
# dbmate accepts options after the marker (`-- migrate:up transaction:false`); we tolerate them.
_MARKER_RE = re.compile(rb"^--[ \t]*migrate:(up|down)\b[^\n]*$", re.MULTILINE)

DIR, ENTRYPOINT, FILE = "dir", "entrypoint", "file"
LATEST_WORDS = ("latest", "head", "last")


class HistoryMismatch(Error):
    """Applied history and the files on disk disagree (exit 2 unless --force)."""

    exit_code = ExitCode.AMBIGUOUS


# Value types are NamedTuples, not dataclasses: `migrate` with nothing to do must start fast,
# and importing dataclasses (inspect, ast, …) plus generating their methods costs more than the
# rest of that run.
class Migration(NamedTuple):
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


class Applied(NamedTuple):
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


def _read(path: Path) -> bytes:
    """A migration file's bytes, or a one-line Error (exit 1) saying why it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        if path.is_symlink() and not path.exists():
            why = f"it is a broken symbolic link to {os.readlink(path)}"
        else:
            why = exc.strerror or str(exc)
        raise Error(
            f"cannot read migration file {_shown(path)}: {why}; fix or remove it"
        ) from None


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
        up = up_file if _present(up_file) else None
        return Migration(
            name, ENTRYPOINT, path, up, down_file if _present(down_file) else None,
            sha256_hex(_read(up_file)) if up else None,
        )
    up_file, down_file = path / "up.sql", path / "down.sql"
    up = up_file if kinds.get("up.sql") is False else None
    return Migration(
        name, DIR, path, up, down_file if kinds.get("down.sql") is False else None,
        sha256_hex(_read(up_file)) if up else None,
    )


def _present(path: Path) -> bool:
    """A file, or a symlink that should be one (a broken link is an error when read, not a
    silently missing direction)."""
    return path.is_file() or path.is_symlink()


def _shown(path: Path | str) -> str:
    """A path for a message: undecodable bytes as \\x escapes, so the line stays printable."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _from_file(name: str, path: Path) -> Migration:
    content = _read(path)
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


def discover(
    directory: str | os.PathLike[str], warnings: list[str] | None = None
) -> list[Migration]:
    """All migrations under directory, in name order. Missing directory → exit 3.

    Things that look like migrations but are not (a `<name>.sql` without `-- migrate:up`) are
    skipped; a line saying so is appended to `warnings` when given."""
    root = Path(directory)
    if not root.is_dir():
        raise MissingError(
            f"migration directory {root} does not exist: create it (migrator create) "
            "or point --migration-dir / MIGRATION_DIR at it"
        )
    try:
        os.fsencode(root).decode("utf-8")
    except UnicodeDecodeError:
        raise Error(f"migration directory {_shown(root)} is not a valid UTF-8 path: rename it "
                    "or point --migration-dir / MIGRATION_DIR elsewhere") from None
    found: dict[str, Migration] = {}
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise Error(f"cannot read migration directory {_shown(root)}: {exc.strerror}") from None
    for entry in entries:
        is_sql = entry.name.endswith(".sql")
        name = entry.name[: -len(".sql")] if is_sql and not entry.is_dir() else entry.name
        if not NAME_RE.match(name):
            continue
        _check_name(name, Path(entry.path))
        if entry.is_dir():
            migration = _from_directory(name, Path(entry.path))
        elif is_sql and (entry.is_file() or entry.is_symlink()):
            migration = _from_file(name, Path(entry.path))
            if migration.up is None:
                if warnings is not None:
                    warnings.append(
                        f"skipping {_shown(entry.path)}: no '-- migrate:up' line, so it is not "
                        "a migration; add '-- migrate:up' (and '-- migrate:down') sections, or "
                        f"move it to {_shown(Path(entry.path).with_suffix(''))}/up.sql"
                    )
                continue
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


def _check_name(name: str, path: Path) -> None:
    """History names are UTF-8 text: refuse others up front (psql could not send them)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise Error(
            f"migration name {_shown(name)} is not valid UTF-8: rename {_shown(path)}"
        ) from None


# --------------------------------------------------------------------------- targets


class Target(NamedTuple):
    """What `migrate` was asked for. number None means "all" (up); name for `to`."""

    direction: str  # "up", "down" or "to"
    number: int | None = None
    name: str | None = None  # for "to": a migration name or one of LATEST_WORDS

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
    return re.fullmatch(r"[0-9]+", arg) is not None


# --------------------------------------------------------------------------- planning


class Step(NamedTuple):
    direction: str  # "up" or "down"
    migration: Migration


class Plan(NamedTuple):
    steps: list[Step]
    # Non-fatal things the user must see (history mismatch passed with --force).
    notices: list[str]
    # Set when there is nothing to do because we are already where asked.
    already: str | None = None


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


class Modified(NamedTuple):
    """An applied migration whose up file no longer has the hash it was applied with."""

    name: str
    applied_hash: str
    disk_hash: str

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
        single, multi = m.path / f"{direction}.sql", m.path / direction / "entrypoint.sql"
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


class StatusRow(NamedTuple):
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
        elif m.hash is not None and m.hash != a.hash.strip().lower():
            state = "modified"
        else:
            state = "applied"
        rows.append(StatusRow(
            name, state, a.applied_at if a else None, m.hash if m else None, a.hash if a else None,
        ))
    return rows
