"""Throw-away clusters (check, diff): signals that unwind like Ctrl-C, and a teardown that
also catches a server whose start was interrupted."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from db_tool import output
from db_tool.cluster import Cluster
from db_tool.errors import Error

_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM/SIGHUP while a throw-away cluster lives: unwinds like Ctrl-C so teardown runs."""


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into Terminated while the body runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def defer_signals() -> Iterator[None]:
    """Let the teardown finish: hold SIGINT/SIGTERM/SIGHUP, re-raise the first afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    sigs = (signal.SIGINT, *_SIGNALS)
    previous = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if caught:
        if caught[0] == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signal.Signals(caught[0]).name)


def quiet_after_failure(what: str) -> contextlib.AbstractContextManager[object]:
    """A teardown step inside `finally`: timed as usual after success, but after a failure
    only announced — no "done" line may follow a failure, whose error line comes last."""
    if sys.exc_info()[1] is not None:
        output.info(f"{what} ...")
        return contextlib.nullcontext()
    return output.step(what)


def stray_postmasters(datadir: Path) -> list[int]:
    """Servers started on `datadir` that have no postmaster.pid yet (interrupted start)."""
    wanted = str(datadir).encode()
    pids = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if len(argv) >= 3 and argv[0].endswith(b"postgres") and argv[1] == b"-D" \
                and argv[2] == wanted:
            pids.append(int(entry))
    return pids


def teardown(cluster: Cluster) -> None:
    """Stop a throw-away cluster (also one still starting) and remove its working dir."""
    try:
        cluster.stop()
    except Error as exc:
        output.warn(f"stopping {cluster.working_dir}: {exc.message}")
    for pid in stray_postmasters(cluster.datadir):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown: nothing here is worth keeping
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.01)
    shutil.rmtree(cluster.working_dir, ignore_errors=True)
    if cluster.working_dir.exists():
        output.warn(f"could not remove {cluster.working_dir} completely")
