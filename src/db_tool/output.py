"""Human-facing log lines on stderr. Results go to stdout through plain print() in cli/."""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False  # typing is not imported at run time
if TYPE_CHECKING:
    from types import TracebackType

TYPE_CHECKING = False  # typing costs a few ms at start-up, and re with it
if TYPE_CHECKING:
    from typing import TextIO

_quiet = False
# Info and ok lines are named after the command the user typed (`database: ...`); library use
# (no command) keeps "db-tool".
_prog: str | None = None
_status_shown = False  # a progress line is on the terminal (stderr), to be cleared first

_COLORS = {"info": "\033[36m", "warn": "\033[33m", "error": "\033[31m", "ok": "\033[32m"}
_RESET = "\033[0m"


def _use_color(stream: TextIO) -> bool:
    from db_tool.settings import runtime

    chosen = runtime().color
    if chosen is not None:
        return chosen
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def set_quiet(quiet: bool = True) -> None:
    """-q/--quiet: only warnings and errors (and results on stdout) are shown."""
    global _quiet
    _quiet = quiet


def set_prog(prog: str | None) -> str | None:
    """Name info lines after `prog` unless a command is named already (the launcher, or the
    outer command: `database migrator ...` speaks as database); returns what was there, for
    reset_prog()."""
    global _prog
    was = _prog
    if _prog is None:
        _prog = prog
    return was


def reset_prog(was: str | None) -> None:
    global _prog
    _prog = was


def prog() -> str:
    return _prog or "db-tool"


def invoked() -> str | None:
    """The command the launcher was started as, when it was."""
    return _prog


def is_quiet() -> bool:
    return _quiet


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def status(text: str) -> None:
    """Draw (or redraw) the one progress line at the bottom of a terminal's stderr."""
    global _status_shown
    if _quiet:
        return
    sys.stderr.write(f"\r\033[K{text}")
    sys.stderr.flush()
    _status_shown = True


def clear_status() -> None:
    global _status_shown
    if _status_shown:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()
        _status_shown = False


# Our levels on HECTIC_LOG's scale (settings.LOG_LEVELS): ok lines are "notice", as the
# original's step results; errors always show.
_OURS = {"debug": 1, "info": 2, "ok": 3, "warn": 4, "error": 5}


def _shown(level: str) -> bool:
    """HECTIC_LOG (the lowest level shown) of the env the command runs with."""
    from db_tool.settings import runtime

    return level == "error" or _OURS[level] >= runtime().log_level


def _emit(level: str, message: str, stream: TextIO | None = None) -> None:
    if not _shown(level) or (_quiet and level in ("info", "ok", "debug")):
        return
    stream = stream if stream is not None else sys.stderr
    if stream is None:
        return  # stderr was closed when we started (a trap, a supervisor): nowhere to say it
    if stream is sys.stderr:
        clear_status()
    label = {"info": prog(), "warn": "warning", "error": "error", "ok": prog(),
             "debug": "debug"}[level]
    if _use_color(stream):
        label = f"{_COLORS[level]}{label}{_RESET}"
    stream.write(f"{label}: {message}\n")
    stream.flush()


def debug(message: str) -> None:
    """Only with HECTIC_LOG=debug (or trace)."""
    _emit("debug", message)


def info(message: str) -> None:
    _emit("info", message)


def warn(message: str) -> None:
    _emit("warn", message)


def error(message: str) -> None:
    _emit("error", message)


def ok(message: str) -> None:
    _emit("ok", message)


class Step:
    """The running step of `step()`: `fail(why)` ends it as failed instead of done."""

    def __init__(self) -> None:
        self.failed: str | None = None

    def fail(self, why: str) -> None:
        self.failed = why


class _Running:
    """The context manager step() returns (a class, not @contextmanager: contextlib is not
    imported by the commands that print no step, e.g. a no-op `migrate`)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.handle = Step()
        self.started = 0.0

    def __enter__(self) -> Step:
        info(f"{self.what} ...")
        self.started = time.monotonic()
        return self.handle

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        elapsed = time.monotonic() - self.started
        if kind is not None:
            info(f"{self.what}: stopped after {elapsed:.2f}s")
            return
        if self.handle.failed is not None:
            warn(f"{self.what}: failed ({self.handle.failed}) after {elapsed:.2f}s")
            return
        ok(f"{self.what}: done in {elapsed:.2f}s")


def step(what: str) -> _Running:
    """Say what a step does, then how long it took. A step that raises or is marked failed
    says "failed" and never "done"; that line is not an error line: the one error line is the
    command's own (`<command>: error: ...`)."""
    return _Running(what)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
