"""Migrations on disk and their value types. PURE: no database, no printing.

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
Plain SQL that sqlsplit can rewrite is sent inline as one query instead (see pg_script.py).
Planning lives in planning.py.
"""

from __future__ import annotations

import os

from db_tool.errors import Error, ExitCode, MissingError
from db_tool.record import Record

# The interpreter's built-in SHA-256: hashlib would load OpenSSL first (~3 ms, a tenth of a
# `migrate` with nothing to do); the digest is the same.
try:
    from _sha256 import sha256 as _sha256  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # an interpreter built without it
    from hashlib import sha256 as _sha256

_DIGITS = frozenset("0123456789")
_WORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def is_migration_name(name: str) -> bool:
    """As the original (find -regex '^[0-9]{14}-.*', domain hectic.migration_name): 14 ASCII
    digits and a `-`. No `re` here: a no-op `migrate` and `status` import nothing they can do
    without (re costs a tenth of such a run)."""
    return len(name) > 14 and name[14] == "-" and _DIGITS.issuperset(name[:14])


def _markers(content: bytes) -> list[tuple[str, int, int]]:
    """(kind, start, end) of each marker line (the start of the line, the end before its
    newline), in order: a line of `--`, spaces or tabs, then `migrate:up` or `migrate:down`
    not followed by a word character; dbmate's options after it
    (`-- migrate:up transaction:false`) are tolerated. (The regex
    `^--[ \t]*migrate:(up|down)\b[^\n]*$`, multi-line, written out.)"""
    found = []
    at = content.find(b"migrate:")
    while at >= 0:
        start = content.rfind(b"\n", 0, at) + 1
        lead = content[start:at]
        kind = ""
        if lead.startswith(b"--") and not lead[2:].strip(b" \t"):
            for word in ("up", "down"):
                after = at + 8 + len(word)
                if (content.startswith(word.encode(), at + 8)
                        and (after == len(content) or content[after] not in _WORD)):
                    kind = word
                    break
        if not kind:
            at = content.find(b"migrate:", at + 1)
            continue
        end = content.find(b"\n", at)
        end = len(content) if end < 0 else end
        found.append((kind, start, end))
        at = content.find(b"migrate:", end)
    return found

DIR, ENTRYPOINT, FILE = "dir", "entrypoint", "file"
LATEST_WORDS = ("latest", "head", "last")


# Value types are Records (plain classes with __slots__), not NamedTuples or dataclasses, and
# paths are str, not pathlib: `migrate` with nothing to do must start fast, and importing
# typing, dataclasses (inspect, ast, …) or pathlib (urllib.parse, …) costs more than the
# rest of that run.
class Migration(Record):
    __slots__ = _fields = ("name", "layout", "path", "up", "down", "hash", "up_sql", "down_sql",
                 "up_line", "down_line")

    def __init__(
        self, name: str, layout: str, path: str, up: str | None, down: str | None,
        hash: str | None, up_sql: bytes | None = None, down_sql: bytes | None = None,
        up_line: int = 1, down_line: int = 1,
    ) -> None:
        self.name = name
        self.layout = layout  # DIR, ENTRYPOINT or FILE
        self.path = path  # the directory (dir/entrypoint layouts) or the .sql file (file layout)
        self.up = up  # file to run for up; None when missing. FILE layout: the .sql file itself
        self.down = down
        self.hash = hash  # None when there is no up
        # FILE layout only: the section texts (psql runs them from a temporary copy).
        self.up_sql = up_sql
        self.down_sql = down_sql
        # FILE layout: the line of the .sql file where each section's text starts.
        self.up_line = up_line
        self.down_line = down_line

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


class Applied(Record):
    """One row of the history table, in application order."""

    __slots__ = _fields = ("name", "hash", "applied_at")

    def __init__(self, name: str, hash: str, applied_at: str = "") -> None:
        self.name = name
        self.hash = hash
        self.applied_at = applied_at


# --------------------------------------------------------------------------- discovery


def sha256_hex(data: bytes) -> str:
    digest: str = _sha256(data).hexdigest()
    return digest


def split_sections(content: bytes) -> tuple[bytes | None, bytes | None]:
    """(up, down) section bytes of a dbmate-style file; None for an absent marker."""
    sections: dict[str, bytes] = {}
    markers = _markers(content)
    for i, (kind, _, m_end) in enumerate(markers):
        start = m_end + 1 if m_end < len(content) else m_end
        end = markers[i + 1][1] if i + 1 < len(markers) else len(content)
        if kind in sections:
            raise Error(f"two '-- migrate:{kind}' markers")
        sections[kind] = content[start:end]
    return sections.get("up"), sections.get("down")


def section_lines(content: bytes) -> dict[str, int]:
    """The 1-based line of content where each section's text starts (see split_sections)."""
    return {
        kind: content.count(b"\n", 0, end) + 1 + (end < len(content))
        for kind, _, end in _markers(content)
    }


def read_file(path: str) -> bytes:
    """The file's bytes: os.open/os.read (4 system calls; open() adds an fstat, an ioctl and a
    seek, per migration on every run)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read(path: str) -> bytes:
    """A migration file's bytes, or a one-line Error (exit 1) saying why it cannot be read."""
    try:
        return read_file(path)
    except OSError as exc:
        if os.path.islink(path) and not os.path.exists(path):
            why = f"it is a broken symbolic link to {os.readlink(path)}"
        else:
            why = exc.strerror or str(exc)
        raise Error(
            f"cannot read migration file {_shown(path)}: {why}; fix or remove it"
        ) from None


def _from_directory(name: str, path: str) -> Migration:
    # One scandir instead of a stat per candidate: discovery of 500 migrations stays cheap.
    with os.scandir(path) as it:
        kinds = {e.name: e.is_dir() for e in it}
    flat = [f for f in ("up.sql", "down.sql") if f in kinds]
    nested = [d for d in ("up", "down") if kinds.get(d)]
    if flat and nested:
        raise Error(
            f"migration {name} mixes two layouts: "
            f"{', '.join(os.path.join(path, f) for f in flat)} "
            f"and {', '.join(os.path.join(path, d) + '/' for d in nested)}; keep one",
            ExitCode.AMBIGUOUS,
        )
    if nested:
        up_file = os.path.join(path, "up", "entrypoint.sql")
        down_file = os.path.join(path, "down", "entrypoint.sql")
        up = up_file if _present(up_file) else None
        return Migration(
            name, ENTRYPOINT, path, up, down_file if _present(down_file) else None,
            sha256_hex(_read(up_file)) if up else None,
        )
    up_file, down_file = os.path.join(path, "up.sql"), os.path.join(path, "down.sql")
    up = up_file if kinds.get("up.sql") is False else None
    return Migration(
        name, DIR, path, up, down_file if kinds.get("down.sql") is False else None,
        sha256_hex(_read(up_file)) if up else None,
    )


def _present(path: str) -> bool:
    """A file, or a symlink that should be one (a broken link is an error when read, not a
    silently missing direction)."""
    return os.path.isfile(path) or os.path.islink(path)


def _shown(path: str | os.PathLike[str]) -> str:
    """A path for a message: undecodable bytes as \\x escapes, so the line stays printable."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _from_file(name: str, path: str) -> Migration:
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
    root = os.fspath(directory)
    if not os.path.isdir(root):
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
        if not is_migration_name(name):
            continue
        _check_name(name, entry.path)
        if entry.is_dir():
            migration = _from_directory(name, entry.path)
        elif is_sql and (entry.is_file() or entry.is_symlink()):
            migration = _from_file(name, entry.path)
            if migration.up is None:
                if warnings is not None:
                    warnings.append(
                        f"skipping {_shown(entry.path)}: no '-- migrate:up' line, so it is not "
                        "a migration; add '-- migrate:up' (and '-- migrate:down') sections, or "
                        f"move it to {_shown(entry.path[:-len('.sql')])}/up.sql"
                    )
                continue
        else:
            continue
        if name in found:
            first, second = sorted([found[name].path, migration.path])
            raise Error(
                f"migration {name} exists in two layouts: {first} and {second}; keep one",
                ExitCode.AMBIGUOUS,
            )
        found[name] = migration
    return [found[n] for n in sorted(found)]


def _check_name(name: str, path: str) -> None:
    """History names are UTF-8 text: refuse others up front (psql could not send them)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise Error(
            f"migration name {_shown(name)} is not valid UTF-8: rename {_shown(path)}"
        ) from None


class Step(Record):
    __slots__ = _fields = ("direction", "migration")

    def __init__(self, direction: str, migration: Migration) -> None:
        self.direction = direction  # "up" or "down"
        self.migration = migration
