"""Throw-away clusters (check, diff): a teardown that also catches a server whose start was
interrupted. (The signal helpers live in signals.py, light enough for the migrator.)"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from db_tool import output
from db_tool.cluster import Cluster
from db_tool.errors import Error
from db_tool.signals import Terminated, defer_signals, interrupt_on_signals

__all__ = ["Terminated", "defer_signals", "interrupt_on_signals", "quiet_after_failure",
           "stray_postmasters", "tear_down", "teardown"]


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


def tear_down(what: str, clusters: Sequence[Cluster],
              keep: Callable[[int, Cluster], None] | None = None) -> None:
    """The one teardown of throw-away clusters (check, diff, normalize-backup), for their
    `finally`: SIGINT/SIGTERM deferred until it is done (a second Ctrl-C cannot leave a server
    running), announced but not timed after a failure, and each cluster stopped — also one
    still starting — with its working dir removed. keep(index, cluster) runs first for each
    (diff copies the server logs out)."""
    with defer_signals(), quiet_after_failure(what):
        for index, cluster in enumerate(clusters):
            if keep is not None:
                keep(index, cluster)
            teardown(cluster)
