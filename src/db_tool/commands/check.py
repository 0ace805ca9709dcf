"""check: the whole deploy in a throw-away cluster under $LOCAL_DIR/focus/postgresql-check-tmp.

The development cluster is never touched: the check cluster has its own working dir (so its
own data dir and socket dir; the port does not matter for a unix socket in its own dir), its
own server log dir, and the URL hydrate/patch use is the check cluster's, never PGURL/DB_URL.
It is torn down on success, on failure, on Ctrl-C and on SIGTERM/SIGHUP.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from db_tool import fslock, output, progress
from db_tool.cluster import Cluster
from db_tool.commands.deploy import hydrate_and_patch, preflight
from db_tool.project_settings import ProjectSettings
from db_tool.scratch import interrupt_on_signals, tear_down

CHECK_DIR = "postgresql-check-tmp"


@dataclass(frozen=True)
class CheckResult:
    working_dir: Path
    hydrated: bool
    patched: bool
    seconds: float


def check_dir(settings: ProjectSettings) -> Path:
    return settings.focus_dir / CHECK_DIR


@contextlib.contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """One check per project at a time (a second one waits): a lock on $LOCAL_DIR/focus
    itself, so no lock file is left behind."""
    directory.mkdir(parents=True, exist_ok=True)
    waiting = f"waiting for another `database check` in {directory} ..."
    with fslock.exclusive(directory, waiting=waiting):
        yield


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
    with _exclusive(wd.parent), interrupt_on_signals(), progress.watch("check"):
        try:
            with output.step(f"init a throw-away cluster in {wd}"):
                init = cluster.init()
            hydrate_and_patch(settings, init.url, hydrate_db=hydrate_db, patch_db=patch_db,
                              mock=mock, out=out)
        finally:
            tear_down("tear down the check cluster", [cluster])
    return CheckResult(wd, hydrate_db, patch_db, time.monotonic() - started)
