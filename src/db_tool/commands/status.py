"""status: is the cluster running, which PostgreSQL, its URL, data size, pending migrations."""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from db_tool.cluster import Cluster
from db_tool.errors import Error, NotInstalledError
from db_tool.project_settings import ProjectSettings


@dataclass(frozen=True)
class Status:
    working_dir: str
    initialised: bool
    running: bool
    pid: int | None
    postgresql: str | None  # "PostgreSQL 15.4 from /usr/lib/postgresql/15/bin (...)"
    version: str | None
    url: str
    database: str
    data_dir: str
    data_size_bytes: int | None
    migration_dir: str | None
    migrations_pending: int | None
    migrations_note: str | None  # why migrations_pending is None
    branch: str = ""  # the current branch (`database branch switch`); the main database else
    branches: list[str] | None = None  # main + branches, None when the cluster is not running

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path, onerror=lambda e: None):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def status(settings: ProjectSettings, url: str | None = None) -> Status:
    """`url` (from --url) overrides the cluster's URL for counting pending migrations."""
    cluster = Cluster(settings.cluster_config())
    pid = cluster.running_pid()
    try:
        install = cluster.install
        postgresql: str | None = install.describe()
        version: str | None = install.version
    except NotInstalledError:
        postgresql = version = None
    initialised = cluster.is_initialised()
    size = dir_size(cluster.datadir) if initialised else None
    target = url or cluster.url
    pending: int | None = None
    note: str | None = None
    mdir = settings.migration_dir
    if mdir is None:
        note = "no MIGRATION_DIR (LOCAL_DIR unset)"
    elif not mdir.is_dir():
        note = f"{mdir} does not exist"
    elif pid is None and url is None:
        note = "the cluster is not running"
    else:
        from db_tool import history
        try:
            pending = history.pending_count(target, mdir, settings.migrator)
        except Error as exc:
            note = exc.message
    from db_tool.commands import branch

    where = branch.Where(cluster.config)
    current = branch.current(where)
    names: list[str] | None = None
    if pid is not None:
        try:
            names = [b.name for b in branch.list_branches(where)]
        except Error:
            names = None
    return Status(
        working_dir=str(cluster.working_dir),
        initialised=initialised,
        running=pid is not None,
        pid=pid,
        postgresql=postgresql,
        version=version,
        url=cluster.url_for(current),
        database=cluster.database,
        data_dir=str(cluster.datadir),
        data_size_bytes=size,
        migration_dir=str(mdir) if mdir else None,
        migrations_pending=pending,
        migrations_note=note,
        branch=current,
        branches=names,
    )
