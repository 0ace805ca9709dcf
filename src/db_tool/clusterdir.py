"""What a working dir holds, and what db-tool may therefore do with it.

Pure reads of the filesystem, no changes. The rules (README "Security model"):
- a working dir that is `/` or a home directory is never used;
- an existing, non-empty working dir is used only when it holds db-tool's marker or nothing but
  the postgres-init layout (data/, sock/, log/, our log and lock files, data.*, trash and
  build dirs);
- a cluster in data/ may be discarded or restarted only when db-tool made it (our marker, our
  runtime conf or our pg_hba.conf) or it has the original postgres-init's layout (its
  `local all all trust` first hba line and the socket/hba settings it writes into
  postgresql.auto.conf); anything else is somebody else's cluster and is left alone;
- a directory without PG_VERSION is not a cluster, so it is never "broken": either it holds only
  the entries of an unfinished PostgreSQL data dir, or it is refused untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

MARKER = ".db-tool-created"
LOCKFILE = ".db-tool.lock"
SERVER_LOG = "postgres-init.log"
RUNTIME_CONF = "db-tool.runtime.conf"
BRANCH_FILE = "db-tool.branch"  # the current `database branch` (commands/branch.py)
HBA_HEADER = "# Written by db-tool"
LAYOUT_ENTRIES = frozenset({"data", "sock", "log", SERVER_LOG, MARKER, LOCKFILE, BRANCH_FILE})
# data.broken-*, data.previous, data.restoring, data.pre-restore-*; trash and build dirs.
# Literal, not template_cache.BUILD_PREFIX: that module loads only on a fresh init (hook
# start-up time); test_template_cache checks the two agree.
LAYOUT_PREFIXES = ("data.", ".trash-", ".db-tool-build-")

# What initdb (and a server) put into a data dir: an unfinished cluster holds only these.
PGDATA_ENTRIES = frozenset({
    "PG_VERSION", "base", "global", "pg_commit_ts", "pg_dynshmem", "pg_hba.conf",
    "pg_ident.conf", "pg_logical", "pg_multixact", "pg_notify", "pg_replslot", "pg_serial",
    "pg_snapshots", "pg_stat", "pg_stat_tmp", "pg_subtrans", "pg_tblspc", "pg_twophase",
    "pg_wal", "pg_xact", "postgresql.auto.conf", "postgresql.conf", "postmaster.opts",
    "postmaster.pid", "log", "current_logfiles", RUNTIME_CONF, "pg_xlog", "pg_clog",
    "backup_label", "tablespace_map", "backup_manifest", "standby.signal", "recovery.signal",
})


def socket_path(sockdir: str | os.PathLike[str], port: int) -> str:
    """The server's unix socket in sockdir (as pgwire.socket_path, which connects to it; this
    one is for the checks that run before the server starts, without importing socket)."""
    return os.path.join(os.fspath(sockdir), f".s.PGSQL.{port}")


def _read_head(path: Path, limit: int = 1 << 16) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as fh:
        return fh.read(limit).decode("utf-8", "replace")


def refused_working_dir(wd: Path, homes: tuple[Path, ...]) -> str | None:
    """Why wd may never be a working dir (`/`, a home dir), or None."""
    try:
        real = wd.resolve()
    except OSError:
        real = wd
    if real == Path("/"):
        return "is the root directory"
    for home in homes:
        try:
            if real == home.resolve():
                return f"is the home directory {home}"
        except OSError:
            continue
    return None


def foreign_entries(wd: Path) -> list[str]:
    """Entries of wd that are not part of the postgres-init layout (sorted)."""
    try:
        names = os.listdir(wd)
    except OSError:
        return []
    return sorted(
        n for n in names if n not in LAYOUT_ENTRIES and not n.startswith(LAYOUT_PREFIXES)
    )


def shown(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")


def cluster_maker(wd: Path) -> str | None:
    """Who made the cluster in wd/data: "db-tool", "postgres-init" (the original) or None."""
    data = wd / "data"
    if (wd / MARKER).is_file() or (data / RUNTIME_CONF).exists():
        return "db-tool"
    hba = _read_head(data / "pg_hba.conf")
    if hba.startswith(HBA_HEADER):
        return "db-tool"
    first = next((ln.split() for ln in hba.splitlines() if ln.strip()), [])
    auto = _read_head(data / "postgresql.auto.conf")
    auto_keys = {ln.split("=", 1)[0].strip() for ln in auto.splitlines() if "=" in ln}
    if first == ["local", "all", "all", "trust"] and {
        "unix_socket_directories", "hba_file"
    } <= auto_keys:
        return "postgres-init"
    return None


def unfinished_cluster(data: Path) -> bool:
    """data has no PG_VERSION but holds only what an interrupted initdb/copy leaves."""
    try:
        names = os.listdir(data)
    except OSError:
        return False
    return all(n in PGDATA_ENTRIES or (n.startswith(".") and n.endswith(".tmp")) for n in names)


def sock_strays(sock: Path) -> list[str]:
    """Entries of sock/ that are not PostgreSQL sockets or their lock files."""
    try:
        names = os.listdir(sock)
    except OSError:
        return []
    return sorted(n for n in names if not n.startswith(".s.PGSQL."))


def removal_refused(wd: Path) -> str | None:
    """Why `database cleanup` may not remove wd, or None: only our marker or exactly the
    postgres-init layout (with a cluster db-tool or the original made) allows it."""
    if wd.is_symlink():
        return f"{wd} is a symbolic link (to {os.readlink(wd)}); remove what it points to yourself"
    if not wd.is_dir():
        return f"{wd} is not a directory"
    if (wd / MARKER).is_file():
        return None
    extra = foreign_entries(wd)
    if extra:
        return f"it holds files db-tool did not create ({shown(extra)})"
    data = wd / "data"
    if data.is_symlink() or (data.exists() and not data.is_dir()):
        return "its data is not a directory"
    if data.is_dir():
        if not (data / "PG_VERSION").is_file():
            return "its data/ is not a PostgreSQL data directory"
        if cluster_maker(wd) is None:
            return "its data/ is a PostgreSQL cluster neither db-tool nor postgres-init made"
    sock = wd / "sock"
    if sock.is_symlink() or (sock.exists() and not sock.is_dir()):
        return "its sock is not a directory"
    strays = sock_strays(sock)
    if strays:
        return f"its sock/ holds files that are not sockets ({shown(strays)})"
    log = wd / "log"
    if log.is_symlink() or (log.exists() and not log.is_dir()):
        return "its log is not a directory"
    strays = log_strays(log)
    if strays:
        return f"its log/ holds files that are not server logs ({shown(strays)})"
    return None


def log_strays(log: Path) -> list[str]:
    """Entries of a log dir that are not PostgreSQL server log files."""
    try:
        names = os.listdir(log)
    except OSError:
        return []
    return sorted(
        n for n in names
        if not (n.startswith("postgresql-") and n.endswith((".log", ".csv", ".json")))
    )
