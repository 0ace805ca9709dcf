"""The backup directory: what `database backup` writes and restore, normalize-backup and diff
read. It holds what `pg_basebackup -Ft -z -X stream` writes (`base.tar.gz`, `pg_wal.tar.gz`,
`backup_manifest`) plus a `database_name` file naming the project database. A normalized
backup has no `pg_wal.tar.gz`: its WAL is inside `base.tar.gz` (clean shutdown).

Here: the layout and its checks, unpacking into a data dir (members checked), swapping a new
directory in for the old one, and the owned temporary dirs a killed run leaves (swept by the
next one). The verb is commands/backup.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from db_tool import fslock, output, privs, proc, progress
from db_tool.cluster import Cluster
from db_tool.errors import Error
from db_tool.project_settings import ProjectSettings

if TYPE_CHECKING:
    import tarfile

BACKUP_DIR = "postgresql-backup"
BASE = "base.tar.gz"
WAL = "pg_wal.tar.gz"
DATABASE_FILE = "database_name"

# Left behind by the server that took or served the backup; the local server must not see them.
# backup_label / tablespace_map stay: recovery from a base backup needs them.
LEFTOVERS = (
    "standby.signal", "recovery.signal", "recovery.conf", "postmaster.pid", "postmaster.opts",
    "current_logfiles", "backup_label.old", "tablespace_map.old",
)


def default_backup_dir(settings: ProjectSettings) -> Path:
    return settings.focus_dir / BACKUP_DIR


def require_backup(path: Path) -> Path:
    """The backup dir itself, or Error when `path` does not hold a backup (nothing touched)."""
    if not (path / BASE).is_file():
        what = "does not exist" if not path.exists() else f"holds no {BASE}"
        raise Error(
            f"{path} is not a backup: it {what}; take one with `database backup` or pass the "
            f"directory holding {BASE}"
        )
    return path


def recorded_database(backup_dir: Path, default: str) -> str:
    try:
        name = (backup_dir / DATABASE_FILE).read_text().strip()
    except OSError:
        return default
    return name or default


@contextlib.contextmanager
def opened(path: Path, *, archive: bool, scratch_parent: Path) -> Iterator[Path]:
    """Yield the backup dir for `path`; with `archive`, PATH is a .tar.gz of such a dir, unpacked
    into a scratch dir under `scratch_parent` that is removed afterwards."""
    if not archive:
        yield require_backup(path)
        return
    if not path.is_file():
        raise Error(f"{path} is not a file: --archive takes a .tar.gz of a backup directory")
    scratch_parent.mkdir(parents=True, exist_ok=True)
    sweep(scratch_parent, ARCHIVE_SCRATCH)
    with owned_dir(scratch_parent, ARCHIVE_SCRATCH) as scratch:
        extract(path, scratch)
        candidates = [scratch] + sorted(p for p in scratch.iterdir() if p.is_dir())
        found = next((c for c in candidates if (c / BASE).is_file()), None)
        if found is None:
            raise Error(f"{path} is not a backup archive: it holds no {BASE} (at its top or "
                        "in one directory)")
        yield found


# ---- temporary dirs a killed run leaves behind -------------------------------------------
# Each is named `<prefix><pid>-<random>` and flocked while its run lives, so the next run can
# tell a dead run's leftover (lock free, pid gone) from a live one's, and remove it.
ARCHIVE_SCRATCH = ".backup-archive-"
_OWNED = re.compile(r"-(\d+)-[^-/]+$")


@contextlib.contextmanager
def owned_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh empty dir `parent/<prefix><pid>-…`, locked while the body runs and removed after
    it (unless the body renamed it away)."""
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield path
    finally:
        os.close(fd)
        shutil.rmtree(path, ignore_errors=True)


def _dead_run(path: Path) -> bool:
    match = _OWNED.search(path.name)
    if match is not None and proc.pid_alive(int(match.group(1))):
        # pid reused, or a live run between mkdtemp and flock: only very old ones are stale
        with contextlib.suppress(OSError):
            old = time.time() - path.stat().st_mtime > 24 * 3600
            return old and fslock.held(path, directory=True) is False
        return False
    return fslock.held(path, directory=True) is False


def sweep(parent: Path, prefix: str,
          before_remove: Callable[[Path], None] | None = None) -> list[Path]:
    """Remove what killed runs left under `parent` as `<prefix>…` (after `before_remove`, e.g.
    stopping a server still running there); say so. Returns them."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in sorted(parent.iterdir()):
            if not entry.name.startswith(prefix) or entry.is_symlink() or not entry.is_dir():
                continue
            if not _dead_run(entry):
                continue
            size = dir_size(entry)
            if before_remove is not None:
                before_remove(entry)
            shutil.rmtree(entry, ignore_errors=True)
            output.info(f"removed {entry} ({output.human_size(size)}), left by a run that was "
                        "killed")
            removed.append(entry)
    return removed


def sweep_swap(final: Path) -> None:
    """Leftovers of a killed backup/normalize around `final`: its half-written tmp dirs, and the
    previous version swap_in moved aside (put back when `final` is missing, else removed)."""
    if not final.parent.is_dir():
        return
    sweep(final.parent, f".{final.name}.tmp-")
    for old in sorted(final.parent.glob(f".{final.name}.old-*")):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and proc.pid_alive(int(pid)):
            continue
        if not final.exists():
            old.rename(final)
            output.warn(f"put back {final}: a run that was killed had moved it aside to {old}")
        else:
            shutil.rmtree(old, ignore_errors=True)
            output.info(f"removed {old}, the previous version of {final} left by a killed run")


def extract(archive: Path, target: Path) -> None:
    import tarfile
    import zlib

    try:
        with tarfile.open(archive, "r:*") as tf, \
                progress.watch(f"unpacking {archive.name}") as meter:
            meter.total = sum(m.size for m in tf.getmembers())  # what the extraction writes
            if hasattr(tarfile, "data_filter"):
                # No absolute paths, no links that are absolute or leave target, no device
                # files, no setuid bits (a tablespace link of the source is refused too).
                tf.extractall(target, filter=lambda m, p: meter.counted(tarfile.data_filter(m, p)))
            else:  # Python < 3.11.4 (e.g. Debian 12's 3.11.2): the same checks by hand
                tf.extractall(target, members=map(meter.counted, _checked_members(tf, target)))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise Error(f"cannot extract {archive}: {exc}") from exc


def _checked_members(tf: tarfile.TarFile, target: Path) -> Iterator[tarfile.TarInfo]:
    import tarfile

    root = os.path.realpath(target)

    def inside(path: str) -> bool:
        return os.path.commonpath([root, os.path.realpath(path)]) == root

    for member in tf.getmembers():
        dest = os.path.join(root, member.name)
        if os.path.isabs(member.name) or not inside(dest):
            raise tarfile.TarError(f"{member.name!r} would be written outside {target}")
        if member.issym() or member.islnk():
            base = root if member.islnk() else os.path.dirname(dest)
            if os.path.isabs(member.linkname) or not inside(os.path.join(base, member.linkname)):
                raise tarfile.TarError(f"link {member.name!r} points outside {target}")
        elif member.isdev():
            raise tarfile.TarError(f"{member.name!r} is a device file")
        member.mode &= 0o1777 & ~0o022  # no setuid/setgid, no group/other write
        yield member


def unpack_data(backup_dir: Path, datadir: Path, cluster: Cluster) -> None:
    """Fill the (new, empty) `datadir` from the backup: base, WAL, leftovers removed, owned by
    the server account and mode 0700, and checked to match this PostgreSQL's major version."""
    datadir.mkdir(mode=0o700)
    extract(backup_dir / BASE, datadir)
    if (backup_dir / WAL).is_file():
        (datadir / "pg_wal").mkdir(mode=0o700, exist_ok=True)
        extract(backup_dir / WAL, datadir / "pg_wal")
    remove_leftovers(datadir)
    check_version(datadir, cluster)
    os.chmod(datadir, 0o700)
    account = cluster.run_as
    if account is not None:
        privs.chown_tree(datadir, account)


def remove_leftovers(datadir: Path) -> None:
    for name in LEFTOVERS:
        (datadir / name).unlink(missing_ok=True)


def check_version(datadir: Path, cluster: Cluster) -> None:
    try:
        version = (datadir / "PG_VERSION").read_text().strip()
    except OSError:
        raise Error(f"the backup holds no PG_VERSION: it is not a PostgreSQL data "
                    f"directory backup ({datadir})") from None
    if version != str(cluster.install.major):
        raise Error(
            f"the backup is from PostgreSQL {version}, but this is "
            f"{cluster.install.describe()}: use PostgreSQL {version} (PG_BIN_DIR) to restore it"
        )


def swap_in(new: Path, final: Path) -> None:
    """Replace `final` with the complete directory `new` (same parent), keeping the old one until
    the new one is in place."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    try:
        new.rename(final)
    except OSError:
        if old.exists():
            old.rename(final)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """A fresh temporary dir next to `final` (same file system, so swap_in is a rename), owned
    by this run (see owned_dir) and removed afterwards unless it was swapped in. Leftovers of
    killed runs are cleaned up first."""
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_swap(final)
    with owned_dir(final.parent, f".{final.name}.tmp-") as tmp:
        yield tmp


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
