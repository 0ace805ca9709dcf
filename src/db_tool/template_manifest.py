"""Whether a cached template can be trusted: its `ready` marker lists every file of data/
with its size (the manifest), written last by the worker that built it (template_worker);
a fresh init copies the template only when what is on disk still matches it, owned by the
expected account."""

from __future__ import annotations

import os
import stat

from db_tool.errors import Error

TYPE_CHECKING = False  # no typing at run time: a fresh init is the hook path
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = ["MAGIC", "manifest", "problem", "usable", "walk"]

MAGIC = "db-tool template v3"


def walk(data: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of everything below data, directories included."""
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(data / rel if rel else data) as it:
            for entry in it:
                sub = f"{rel}/{entry.name}" if rel else entry.name
                st = entry.stat(follow_symlinks=False)
                yield sub, st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(sub)


def problem(template: Path, owner: tuple[int, int]) -> str | None:
    """None when the template can be trusted, else what is wrong with it."""
    try:
        text = (template / "ready").read_text(encoding="utf-8")
    except FileNotFoundError:
        return "not built yet" if not (template / "data").exists() else "no ready marker"
    except (OSError, UnicodeDecodeError) as exc:
        return f"unreadable ready marker ({getattr(exc, 'strerror', None) or exc})"
    head, _, body = text.partition("\n")
    if head != MAGIC or not body.endswith("\nend\n"):
        return "incomplete ready marker"
    expected: dict[str, int | None] = {}
    for line in body[: -len("\nend\n")].splitlines()[1:]:  # first line: the installation
        kind, size, rel = line.split(" ", 2)
        expected[rel] = None if kind == "d" else int(size)
    data = template / "data"
    try:
        st = os.lstat(data)
        if not stat.S_ISDIR(st.st_mode):
            return "data is not a directory"
        seen = 0
        for rel, st in walk(data):
            if st.st_uid != owner[0]:
                return f"data/{rel} is owned by uid {st.st_uid}, not {owner[0]}"
            want = expected.get(rel, -1)
            if want == -1:
                continue  # extra files (a stray stats file) do no harm
            if want is None:
                if not stat.S_ISDIR(st.st_mode):
                    return f"data/{rel} is not a directory"
            elif not stat.S_ISREG(st.st_mode) or st.st_size != want:
                return f"data/{rel} is damaged (size {st.st_size}, expected {want})"
            seen += 1
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if seen != len(expected):
        return f"{len(expected) - seen} files of data/ are missing"
    return None


def usable(template: Path, owner: tuple[int, int]) -> str | None:
    try:
        return problem(template, owner)
    except (OSError, ValueError) as exc:
        return f"unreadable ({exc})"


def manifest(data: Path) -> str:
    lines = []
    for rel, st in sorted(walk(data)):
        if stat.S_ISDIR(st.st_mode):
            lines.append(f"d - {rel}")
        elif stat.S_ISREG(st.st_mode):
            lines.append(f"f {st.st_size} {rel}")
        else:
            raise Error(f"{data / rel} is neither a file nor a directory")
    return "\n".join(lines)
