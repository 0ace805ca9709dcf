"""Progress of long work: on a terminal one line redrawn in place (bytes, percent where the
total is known, elapsed time); otherwise a plain line every DB_TOOL_PROGRESS_INTERVAL seconds
(default 5), so CI logs show the work is alive. Nothing for work that ends before the first
line is due; nothing at all with -q/--quiet.

    with progress.watch("unpacking base.tar.gz", measure=lambda: pos(), total=size):
        ...

`measure` is called from a background thread (it must only read); a caller counting itself
uses the yielded Meter's add() instead. Work with neither (elapsed time only: check, diff) draws
no terminal line when stdout is the same terminal, where psql output would run into it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from db_tool import output

_T = TypeVar("_T")

TTY_TICK = 0.25


class Meter:
    def __init__(self, total: int | None = None) -> None:
        self.done = 0
        self.total = total  # may be set once known

    def add(self, n: int) -> None:
        self.done += n

    def counted(self, member: _T) -> _T:
        """A tarfile filter: count each member's size as done."""
        self.add(getattr(member, "size", 0))
        return member


def _interval() -> float:
    from db_tool.settings import runtime

    return runtime().progress_interval()


def describe(what: str, done: int | None, total: int | None, elapsed: float) -> str:
    """`what: 12.0 MiB of 48.0 MiB (25%), 3.0s` (pure: the line both modes print)."""
    parts = []
    if done is not None:
        if total:
            pct = min(100, int(done * 100 / total))
            parts.append(f"{output.human_size(done)} of {output.human_size(total)} ({pct}%)")
        else:
            parts.append(output.human_size(done))
    parts.append(f"{elapsed:.0f}s" if elapsed >= 10 else f"{elapsed:.1f}s")
    return f"{what}: {', '.join(parts)}"


@contextmanager
def watch(what: str, measure: Callable[[], int] | None = None, total: int | None = None,
          *, on_tty: bool = True) -> Iterator[Meter]:
    """Show progress while the body runs. on_tty=False: only the non-terminal lines (the
    work draws its own progress on a terminal, as pg_basebackup -P)."""
    meter = Meter(total)
    tty = output.stderr_is_tty()
    if tty and measure is None and _stdout_is_tty():
        on_tty = False  # the work may print to the same terminal (psql output of a check)
    if output.is_quiet() or (tty and not on_tty):
        yield meter
        return
    every = TTY_TICK if tty else _interval()
    started = time.monotonic()
    stop = threading.Event()

    def current() -> int | None:
        if measure is not None:
            try:
                return measure()
            except OSError:
                return None
        return meter.done if meter.done else None

    def loop() -> None:
        while not stop.wait(every):
            line = describe(what, current(), meter.total, time.monotonic() - started)
            if tty:
                output.status(line)
            else:
                output.info(line)

    ticker = threading.Thread(target=loop, name="db-tool-progress", daemon=True)
    ticker.start()
    try:
        yield meter
    finally:
        stop.set()
        ticker.join()
        if tty:
            output.clear_status()


def _stdout_is_tty() -> bool:
    import sys

    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def tree_size(path: str | os.PathLike[str]) -> int:
    """Apparent size of the files under path (what a copy or unpack has written so far)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total
