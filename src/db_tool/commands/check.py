"""check: the whole deploy in a throw-away cluster under $LOCAL_DIR/focus/postgresql-check-tmp.

The development cluster is never touched: the check cluster has its own working dir (so its
own data dir and socket dir; the port does not matter for a unix socket in its own dir), its
own server log dir, and the URL hydrate/patch use is the check cluster's, never PGURL/DB_URL.
It is torn down on success, on failure, on Ctrl-C and on SIGTERM/SIGHUP.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

from db_tool import output
from db_tool.cluster import Cluster
from db_tool.commands.deploy import hydrate_and_patch, preflight
from db_tool.errors import Error
from db_tool.settings import ProjectSettings

CHECK_DIR = "postgresql-check-tmp"
_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM/SIGHUP during check: unwinds like Ctrl-C so the teardown runs."""


@dataclass(frozen=True)
class CheckResult:
    working_dir: Path
    hydrated: bool
    patched: bool
    seconds: float


def check_dir(settings: ProjectSettings) -> Path:
    return settings.focus_dir / CHECK_DIR


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
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
def _signals_deferred() -> Iterator[None]:
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


@contextlib.contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """One check per project at a time (a second one waits): a lock on $LOCAL_DIR/focus
    itself, so no lock file is left behind."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            output.info(f"waiting for another `database check` in {directory} ...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _stray_postmasters(datadir: Path) -> list[int]:
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
    """Stop the check cluster (also one still starting) and remove its working dir."""
    try:
        cluster.stop()
    except Error as exc:
        output.warn(f"stopping the check cluster: {exc.message}")
    for pid in _stray_postmasters(cluster.datadir):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown: nothing here is worth keeping
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.01)
    shutil.rmtree(cluster.working_dir, ignore_errors=True)
    if cluster.working_dir.exists():
        output.warn(f"could not remove {cluster.working_dir} completely")


def check(
    settings: ProjectSettings,
    *,
    hydrate_db: bool = True,
    patch_db: bool = True,
    mock: bool = False,
    out: TextIO | None = None,
) -> CheckResult:
    preflight(settings, hydrate=hydrate_db, patch=patch_db)
    wd = check_dir(settings)
    started = time.monotonic()
    config = settings.cluster_config(
        working_dir=wd, reuse=False, ephemeral=True,
        # The dev cluster's PG_LOG_PATH is not ours to write into.
        log_path=None,
    )
    cluster = Cluster(config)
    with _exclusive(wd.parent), _signals_interrupt():
        try:
            with output.step(f"init a throw-away cluster in {wd}"):
                init = cluster.init()
            hydrate_and_patch(settings, init.url, hydrate_db=hydrate_db, patch_db=patch_db,
                              mock=mock, out=out)
        finally:
            with _signals_deferred(), output.step("tear down the check cluster"):
                teardown(cluster)
    return CheckResult(wd, hydrate_db, patch_db, time.monotonic() - started)
