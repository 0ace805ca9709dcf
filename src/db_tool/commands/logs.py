"""log: the server log files of the project's cluster (PG_LOG_PATH, else <wd>/data/log)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from db_tool.cluster import Cluster
from db_tool.errors import Error
from db_tool.project_settings import ProjectSettings


def log_dir(settings: ProjectSettings) -> Path:
    return Cluster(settings.cluster_config()).log_dir


def log_files(settings: ProjectSettings) -> tuple[Path, list[Path]]:
    """(the log dir, its files oldest first). No dir → Error (exit 1)."""
    directory = log_dir(settings)
    if not directory.is_dir():
        raise Error(
            f"no server log dir {directory}: the cluster has not run yet (database deploy / "
            "database init), or its logging is off (PG_DISABLE_LOGGING=1)"
        )
    try:
        entries = [p for p in directory.iterdir() if p.is_file()]
    except PermissionError as exc:
        raise Error(f"cannot read {directory}: {exc.strerror}") from exc
    # By name, as the original's glob lists them (postgresql-YYYY-MM-DD_HHMMSS.log names sort
    # chronologically); `log list` numbers them in this order.
    return directory, sorted(entries, key=lambda p: p.name)


def select(files: list[Path], selector: str) -> Path:
    """As the original resolves it: an exact file name; else a number → that entry of
    `log list` (1 = first); else the one file whose name contains it."""
    exact = [p for p in files if p.name == selector]
    if exact:
        return exact[0]
    hint = "use `database log list` to inspect available files"
    if selector.isdigit():
        index = int(selector)
        if not 1 <= index <= len(files):
            raise Error(f"log file not found or ambiguous: {selector} (there are "
                        f"{len(files)}); {hint}")
        return files[index - 1]
    matches = [p for p in files if selector in p.name]
    if len(matches) != 1:
        shown = ""
        if matches:
            shown = " (matches " + ", ".join(p.name for p in matches[:5]) + \
                (" ..." if len(matches) > 5 else "") + ")"
        raise Error(f"log file not found or ambiguous: {selector}{shown}; {hint}")
    return matches[0]


def _last_lines(path: Path, count: int) -> tuple[str, int]:
    """The last `count` lines of path and the offset of its end."""
    with open(path, "rb") as fh:
        end = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, end - 65536))
        tail = fh.read(end - fh.tell())
    lines = tail.decode("utf-8", "replace").splitlines(keepends=True)
    return "".join(lines[-count:]) if count else "", end


def follow(settings: ProjectSettings, out: TextIO, *, poll: float = 0.2, lines: int = 10,
           until: Callable[[], bool] = lambda: False) -> None:
    """`tail -F` of the newest server log: its last lines, then what is written to it, and
    on to the next file when the server rotates (a new file sorts after the old one)."""
    current: Path | None = None
    offset = 0
    while not until():
        _, files = log_files(settings)
        newest = files[-1] if files else None
        if newest is not None and newest != current:
            if current is not None:
                offset = _copy_from(current, offset, out)  # what came before the switch
                offset = 0
            else:
                text, offset = _last_lines(newest, lines)
                out.write(text)
                out.flush()
            current = newest
        if current is not None:
            moved = _copy_from(current, offset, out)
            if moved != offset:
                offset = moved
                continue
        time.sleep(poll)


def _copy_from(path: Path, offset: int, out: TextIO) -> int:
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size < offset:
                offset = 0  # truncated
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return offset
    if data:
        out.write(data.decode("utf-8", "replace"))
        out.flush()
    return offset + len(data)
