"""One advisory file lock helper (flock) for everything that serialises on a path."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from db_tool import output
from db_tool.errors import Error


@contextlib.contextmanager
def exclusive(path: Path, *, waiting: str | None = None, busy: str | None = None) -> Iterator[None]:
    """Hold flock(path) for the body. A directory is locked itself (no lock file left behind);
    any other path is created as a lock file. When the lock is taken: say `waiting` and wait,
    or raise Error(`busy`) at once."""
    if path.is_dir():
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if busy is not None:
                raise Error(busy) from None
            if waiting is not None:
                output.info(waiting)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def shared(path: Path) -> Iterator[None]:
    """Hold a shared flock(path) for the body: "someone uses this" (see `unused`)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def unused(path: Path) -> bool:
    """True when nobody holds a lock on path (checked by taking it exclusively for a moment)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
