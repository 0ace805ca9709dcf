"""One advisory file lock helper (flock) for everything that serialises on a path."""

from __future__ import annotations

import _thread
import fcntl
import os
from pathlib import Path

from db_tool import output
from db_tool.errors import Error


class exclusive:  # lower case: used as a function, `with fslock.exclusive(path):`
    """Hold flock(path) for the body. A directory is locked itself (no lock file left behind);
    any other path is created as a lock file. When the lock is taken: say `waiting` and wait,
    or raise Error(`busy`) at once.

    Re-entrant within one thread: a body holding the lock (e.g. deploy across init, hydrate
    and patch) may call code that takes it again; other threads and processes wait.
    (A class, not a contextlib.contextmanager: contextlib costs ~3 ms of every stop.)"""

    __slots__ = ("_busy", "_fd", "_key", "_path", "_waiting")

    def __init__(self, path: Path, *, waiting: str | None = None,
                 busy: str | None = None) -> None:
        self._path, self._waiting, self._busy = path, waiting, busy
        self._fd = -1
        self._key = (0, 0, 0)

    def __enter__(self) -> None:
        path = self._path
        if path.is_dir():
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        st = os.fstat(fd)
        key = self._key = (st.st_dev, st.st_ino, _thread.get_ident())
        if key in _held:
            os.close(fd)
            _held[key] += 1
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if self._busy is not None:
                    raise Error(self._busy) from None
                if self._waiting is not None:
                    output.info(self._waiting)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        _held[key] = 1
        self._fd = fd

    def __exit__(self, *exc: object) -> None:
        key = self._key
        if self._fd < 0:  # a nested hold
            _held[key] -= 1
            return
        del _held[key]
        fd, self._fd = self._fd, -1
        os.close(fd)


# (device, inode, thread) of the locks this process holds, with their nesting depth.
_held: dict[tuple[int, int, int], int] = {}


class shared:  # lower case: used as a function, as exclusive
    """Hold a shared flock(path) for the body: "someone uses this" (see `unused`)."""

    __slots__ = ("_fd", "_path")

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd = -1

    def __enter__(self) -> None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def __exit__(self, *exc: object) -> None:
        fd, self._fd = self._fd, -1
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
