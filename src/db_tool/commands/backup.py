"""`database backup`: pg_basebackup of the project's (or the URL's) server into the backup
directory (its format and the helpers restore, normalize-backup and diff share: backupdir.py).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from db_tool import output, pgwire, proc, safefs
from db_tool import progress as progress_of  # backup() has a `progress` argument
from db_tool.backupdir import (
    BASE,
    DATABASE_FILE,
    default_backup_dir,
    dir_size,
    staging_dir,
    swap_in,
)
from db_tool.cluster import Cluster
from db_tool.conninfo import without_password
from db_tool.errors import Error
from db_tool.project_settings import ProjectSettings
from db_tool.scratch import interrupt_on_signals


@dataclass(frozen=True)
class BackupResult:
    path: Path
    database: str
    size: int  # bytes on disk


def database_of(settings: ProjectSettings, default: str) -> str:
    """The project database: the one in the URL when one is set, else the cluster's."""
    if settings.url:
        name = unquote(urlsplit(settings.url).path.lstrip("/"))
        if name:
            return name
    return default


def ensure_replication_access(cluster: Cluster) -> None:
    """pg_basebackup needs a `replication` line in pg_hba.conf (`all` does not match it).
    Clusters made by older db-tool versions lack it: add it to our own pg_hba.conf and reload."""
    hba = cluster.datadir / "pg_hba.conf"
    try:  # safefs: as root, never through a link the server account planted in data/
        text = safefs.read_text(hba, cluster.run_as)
    except Error:
        return
    if text is None or not text.startswith("# Written by db-tool") or "replication" in text:
        return
    safefs.replace_file(hba, text.rstrip("\n") + "\nlocal replication all trust\n",
                        owner=cluster.run_as)
    with pgwire.connect(cluster.sockdir, cluster.port, cluster.superuser, "postgres") as conn:
        conn.query("SELECT pg_reload_conf()")


def names_cluster(url: str | None, cluster: Cluster) -> bool:
    """Does `url` point at this project cluster's socket (or is there no URL at all)?"""
    if not url:
        return True
    if not url.startswith(("postgresql://", "postgres://")):
        return False
    parts = urlsplit(url)
    hosts = [v for k, v in parse_qsl(parts.query) if k == "host"]
    host = hosts[0] if hosts else unquote(parts.hostname or "")
    if not host.startswith("/"):
        return False
    try:
        return Path(host).resolve() == cluster.sockdir.resolve()
    except OSError:
        return False


def backup(
    *, settings: ProjectSettings, progress: bool, branch: str | None = None
) -> BackupResult:
    """pg_basebackup of the server the URL names (--url, PGURL, DB_URL; without one: the
    project's cluster) into $LOCAL_DIR/focus/postgresql-backup; `branch` is recorded as the
    database to restore (else the URL's, else PG_DATABASE). The previous backup is replaced
    only once the new one is complete. pg_basebackup dies with us (also on kill -9), and what a
    killed run left is cleaned up by the next one."""
    final = default_backup_dir(settings)
    cluster = Cluster(settings.cluster_config())
    local = names_cluster(settings.url, cluster)
    env = cluster.client_env()
    if local:
        if not cluster.is_running():
            raise Error(
                f"the cluster in {cluster.working_dir} is not running: start it with "
                "`database init --reuse` (or `database deploy`) and run the backup again"
            )
        ensure_replication_access(cluster)
        source = ["-h", str(cluster.sockdir), "-p", str(cluster.port), "-U", cluster.superuser]
        database = branch or database_of(settings, cluster.database)
    else:
        assert settings.url is not None
        url, password = without_password(settings.url)
        source = ["-d", url]
        if password is not None:
            env["PGPASSWORD"] = password
        database = branch or database_of(settings, cluster.database)
    with interrupt_on_signals(), staging_dir(final) as tmp:
        try:
            argv = [
                cluster.install.tool("pg_basebackup"), "-D", str(tmp), *source,
                "-Ft", "-z", "-X", "stream", "--checkpoint=fast", "--no-password",
            ]
            if progress:
                argv.append("-P")
            with progress_of.watch("pg_basebackup", lambda: progress_of.tree_size(tmp),
                                   on_tty=not progress):
                proc.run_group(
                    argv, env=env, what="pg_basebackup",
                    # On a terminal the user sees pg_basebackup's own progress line.
                    stderr=None if progress else subprocess.PIPE,
                )
            (tmp / DATABASE_FILE).write_text(database + "\n")
            if not (tmp / BASE).is_file():
                raise Error(f"pg_basebackup wrote no {BASE} into {tmp}")
            swap_in(tmp, final)
        except BaseException:
            output.info(f"the previous backup in {final} (if any) was left as it was")
            raise
    return BackupResult(final, database, dir_size(final))
