"""One advisory file lock helper (flock) for everything that serialises on a path."""

from __future__ import annotations

import _thread
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
    or raise Error(`busy`) at once.

    Re-entrant within one thread: a body holding the lock (e.g. deploy across init, hydrate
    and patch) may call code that takes it again; other threads and processes wait."""
    if path.is_dir():
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino, _thread.get_ident())
    if key in _held:
        os.close(fd)
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if busy is not None:
                raise Error(busy) from None
            if waiting is not None:
                output.info(waiting)
            fcntl.flock(fd, fcntl.LOCK_EX)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
    finally:
        os.close(fd)


# (device, inode, thread) of the locks this process holds, with their nesting depth.
_held: dict[tuple[int, int, int], int] = {}


@contextlib.contextmanager
def shared(path: Path) -> Iterator[None]:
    """Hold a shared flock(path) for the body: "someone uses this" (see `unused`)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def held(path: Path, *, directory: bool = False) -> bool | None:
    """Whether someone holds a lock on the existing file (or, `directory`, dir) `path`, probed
    by taking it exclusively for a moment, never through a link; None when it cannot be
    opened as that."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | (os.O_DIRECTORY if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


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
