"""`database restore`: replace a cluster's data with a backup, never losing the old data on failure.

Order matters: the backup is unpacked next to the current data while the server keeps running;
only a complete, version-checked data dir is swapped in. The old data is kept aside until the
restored cluster has started, and put back (and restarted if it was running) when it does not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from db_tool import output
from db_tool.backupdir import (
    default_backup_dir,
    dir_size,
    opened,
    recorded_database,
    unpack_data,
)
from db_tool.cluster import Cluster
from db_tool.errors import Error, MissingError
from db_tool.project_settings import ProjectSettings
from db_tool.scratch import interrupt_on_signals

PRE_RESTORE = "data.pre-restore-"


@dataclass(frozen=True)
class RestoreResult:
    url: str
    database: str
    source: Path


def restore(*, settings: ProjectSettings, path: Path | None, archive: bool) -> RestoreResult:
    if path is None:
        if archive:
            raise MissingError("restore --archive needs a PATH: the .tar.gz of a backup directory")
        path = default_backup_dir(settings)
    path = path.absolute()
    config = settings.cluster_config()
    with opened(path, archive=archive, scratch_parent=config.working_dir.parent) as backup_dir:
        database = recorded_database(backup_dir, config.database)
        cluster = Cluster(settings.cluster_config(database=database))
        restore_into(cluster, backup_dir)
    return RestoreResult(cluster.url, database, path)


def restore_into(cluster: Cluster, backup_dir: Path) -> None:
    """Make `backup_dir` the data of `cluster` and start it (creating the working dir if needed)."""
    with cluster.locked(), interrupt_on_signals():
        staged = cluster.working_dir / "data.restoring"
        _recover_killed_restore(cluster, staged)
        try:
            unpack_data(backup_dir, staged, cluster)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        was_running = cluster.stop_locked()
        previous: Path | None = None
        if cluster.datadir.exists() or cluster.datadir.is_symlink():
            previous = cluster.working_dir / f"{PRE_RESTORE}{os.getpid()}"
            cluster.datadir.rename(previous)
        staged.rename(cluster.datadir)
        try:
            cluster.start_locked()
            cluster.ensure_database(cluster.database)
        except BaseException as exc:
            _roll_back(cluster, previous, was_running)
            if isinstance(exc, Exception) and not isinstance(exc, Error):
                # e.g. the cluster's "broken data" signal: the backup itself does not start.
                raise Error(f"the restored data does not start ({exc}); "
                            f"{_kept(previous)}") from exc
            raise
        if previous is not None:
            shutil.rmtree(previous)
        for stale in _pre_restore_dirs(cluster):
            size = dir_size(stale)
            shutil.rmtree(stale, ignore_errors=True)
            output.info(f"removed {stale} ({output.human_size(size)}): the data a killed "
                        "restore had replaced")


def _pre_restore_dirs(cluster: Cluster) -> list[Path]:
    return sorted(p for p in cluster.working_dir.glob(f"{PRE_RESTORE}*")
                  if p.is_dir() and not p.is_symlink())


def _recover_killed_restore(cluster: Cluster, staged: Path) -> None:
    """What a restore killed half-way left (we hold the cluster lock, so its run is over):
    its half-unpacked copy is removed; when it had moved the data aside and died before the
    restored data took its place, the data is put back. A pre-restore dir next to complete
    data is removed once this restore has succeeded (it is what the user asked to replace)."""
    if staged.exists():
        size = dir_size(staged)
        shutil.rmtree(staged)
        output.info(f"removed {staged} ({output.human_size(size)}), left by a restore that "
                    "was killed")
    previous = _pre_restore_dirs(cluster)
    if previous and not (cluster.datadir.exists() or cluster.datadir.is_symlink()):
        newest = max(previous, key=lambda p: p.stat().st_mtime)
        newest.rename(cluster.datadir)
        output.warn(f"put back {cluster.datadir} from {newest}: a restore was killed after "
                    "moving it aside")


def _kept(previous: Path | None) -> str:
    return "the previous data was put back" if previous is not None else "nothing was kept"


def _roll_back(cluster: Cluster, previous: Path | None, was_running: bool) -> None:
    try:
        cluster.stop_locked()
    finally:
        shutil.rmtree(cluster.datadir, ignore_errors=True)
        if previous is not None:
            previous.rename(cluster.datadir)
            output.warn(f"restore failed; the previous data is back in {cluster.datadir}")
    if previous is not None and was_running:
        try:
            cluster.start_locked()
        except Exception as exc:  # the restore's own error matters more; say this one
            output.warn(f"could not restart the previous cluster: {exc}")


def restore_previous(*, settings: ProjectSettings) -> RestoreResult:
    """Swap in <wd>/data.previous (what the last fresh init kept) and start it; the data it
    replaces becomes data.previous, so this is undone by running it again."""
    from db_tool.previous import PREVIOUS

    cluster = Cluster(settings.cluster_config())
    kept = cluster.working_dir / PREVIOUS
    if not (kept / "PG_VERSION").is_file():
        raise MissingError(
            f"no previous cluster in {kept}: a fresh postgres-init keeps one there when it "
            "replaces a cluster holding data — nothing was changed"
        )
    with cluster.locked():
        was_running = cluster.stop_locked()
        swap = cluster.working_dir / f"data.swap-{os.getpid()}"
        current = cluster.datadir.exists() or cluster.datadir.is_symlink()
        if current:
            cluster.datadir.rename(swap)
        kept.rename(cluster.datadir)
        if current:
            swap.rename(kept)
        try:
            cluster.start_locked()
            cluster.ensure_database(cluster.database)
        except BaseException:
            with contextlib.suppress(Exception):
                cluster.stop_locked()
            cluster.datadir.rename(swap)
            if current:
                kept.rename(cluster.datadir)
            swap.rename(kept)
            output.warn(f"the previous cluster does not start; it stays in {kept}")
            if current and was_running:
                with contextlib.suppress(Exception):
                    cluster.start_locked()
            raise
    return RestoreResult(cluster.url, cluster.database, kept)
