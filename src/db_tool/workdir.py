"""Preparing a working dir for a cluster: create and check it, and the directories and
permissions the server needs (clusterdir.py holds the pure reads these rules build on).

Everything takes explicit values (working dir, data dir, socket dir, server account).
"""

from __future__ import annotations

import os
import time

from db_tool import clusterdir, output, proc, safefs
from db_tool.clusterdir import MARKER
from db_tool.errors import Error, MissingError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from db_tool import pgbin

SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes on Linux, NUL included


def check_socket_path(sockdir: Path, port: int) -> None:
    """PostgreSQL cannot listen on a longer unix socket path; it only says so in its log."""
    path = clusterdir.socket_path(sockdir, port)
    size = len(os.fsencode(path))
    if size > SOCKET_PATH_MAX:
        raise Error(
            f"the socket path {path} is {size} bytes, more than the {SOCKET_PATH_MAX} a "
            "unix socket allows: use a shorter PG_WORKING_DIR (or LOCAL_DIR) — nothing "
            "was changed"
        )


def ensure(wd: Path) -> None:
    """Create the working dir (with our marker) unless it exists."""
    if wd.is_symlink() and not wd.exists():
        raise Error(
            f"PG_WORKING_DIR={wd} is a symbolic link to {os.readlink(wd)}, which does not "
            "exist: create that directory or point PG_WORKING_DIR at a real one"
        )
    if wd.exists() and not wd.is_dir():
        raise Error(
            f"working dir {wd} exists and is not a directory: remove it or point "
            "PG_WORKING_DIR elsewhere"
        )
    if not wd.exists():
        try:
            wd.mkdir(parents=True)
        except FileExistsError:
            return  # a concurrent run created it (and marks it)
        except OSError as exc:
            raise Error(
                f"cannot create working dir {wd} ({exc.strerror}): create it yourself or "
                "point PG_WORKING_DIR at a writable place"
            ) from exc
        (wd / MARKER).write_text("created by db-tool; `database cleanup` may remove this dir\n")


def check(wd: Path, homes: tuple[Path, ...]) -> None:
    """Refuse, before anything changes, a working dir db-tool must not take over."""
    why = clusterdir.refused_working_dir(wd, homes)
    if why is not None:
        raise MissingError(
            f"PG_WORKING_DIR={wd} {why}; db-tool never puts a cluster there: point "
            "PG_WORKING_DIR (or LOCAL_DIR) at a project directory"
        )
    if not wd.is_dir():
        return
    if not os.access(wd, os.W_OK | os.X_OK):
        raise Error(
            f"the working dir {wd} is read-only: make it writable or point PG_WORKING_DIR "
            "at a writable directory — nothing was changed"
        )
    if (wd / MARKER).is_file():
        return
    extra = clusterdir.foreign_entries(wd)
    if extra:
        raise Error(
            f"PG_WORKING_DIR={wd} already holds files db-tool did not create "
            f"({clusterdir.shown(extra)}): point PG_WORKING_DIR at a new or empty "
            f"directory (e.g. {wd / 'postgresql'}) — nothing was changed"
        )


def refuse_foreign_cluster(wd: Path) -> None:
    """A cluster neither db-tool nor postgres-init made is never stopped, reused or
    discarded."""
    if clusterdir.cluster_maker(wd) is None:
        raise Error(
            f"{wd / 'data'} is a PostgreSQL cluster db-tool did not make (no "
            f"{MARKER}, not the postgres-init layout); it was left alone: point "
            f"PG_WORKING_DIR elsewhere, or `touch {wd / MARKER}` to hand it to db-tool"
        )


def move_aside(wd: Path, datadir: Path, reason: str) -> Path:
    """Broken data is kept as data.broken-<time>, never deleted."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = wd / f"data.broken-{stamp}"
    n = 1
    while aside.exists():
        n += 1
        aside = wd / f"data.broken-{stamp}-{n}"
    datadir.rename(aside)
    output.warn(
        f"the data in {datadir} is broken ({reason}); moved it to {aside} and "
        "initialised a fresh cluster"
    )
    return aside


def prepare_sockdir(sockdir: Path, account: proc.RunAs | None) -> None:
    """Only the server account may reach the socket (trust auth: whoever connects is
    superuser), whatever state a pre-existing sock/ was in; say what was changed."""
    for change in safefs.private_dir(sockdir, owner=account):
        output.warn(f"{change}, so that only the cluster's owner can connect")


def check_data_writable(datadir: Path, account: proc.RunAs | None) -> None:
    """A read-only data dir is said as such (the server would only say "lock file")."""
    try:
        read_only = bool(os.statvfs(datadir).f_flag & os.ST_RDONLY)
        st = datadir.stat()
    except OSError:
        return
    if account is not None:
        from db_tool import privs

        writable = privs.can_write(datadir, st, account)
    else:
        writable = os.access(datadir, os.W_OK | os.X_OK)
    if read_only or not writable:
        who = account.name if account is not None else "you"
        why = "read-only file system" if read_only else f"no write permission for {who}"
        raise Error(
            f"the data dir {datadir} is read-only ({why}): PostgreSQL needs to write there — "
            "make it writable; nothing was changed"
        )


def prepare_log_path(path: Path, account: proc.RunAs | None) -> None:
    """PG_LOG_PATH: created when missing, writable for the server account."""
    if not path.exists():
        path.mkdir(parents=True)
        if account is not None:
            os.chown(path, account.uid, account.gid)
    elif not path.is_dir():
        raise Error(f"PG_LOG_PATH={path} is not a directory: fix or unset PG_LOG_PATH")
    if account is not None:
        from db_tool import privs

        privs.grant_search(path, account)
        privs.grant_write(path, account)


def fresh_data_verdict(wd: Path, data: Path, sockdir: Path) -> bool:
    """Decide, before anything is stopped or moved, what a fresh init may do with data/:
    True when it holds a cluster of ours to discard; an Error when it must be left alone."""
    discard = False
    if data.exists() or data.is_symlink():
        if not data.is_dir() or data.is_symlink():
            raise Error(
                f"{data} is not a directory: move it away so postgres-init can create the "
                "cluster there"
            )
        if (data / "PG_VERSION").is_file():
            refuse_foreign_cluster(wd)
            discard = True
        elif any(data.iterdir()) and not clusterdir.unfinished_cluster(data):
            raise Error(
                f"{data} holds files that are not a PostgreSQL cluster (no PG_VERSION): "
                "move them away so postgres-init can create the cluster there — nothing "
                "was changed"
            )
    if (sockdir.exists() and not sockdir.is_dir()) or sockdir.is_symlink():
        raise Error(f"{sockdir} is not a directory: move it away")
    return discard


def remove_stale_socket(sockdir: Path, port: int) -> None:
    """Stale files of our port only: another server may keep its socket here too."""
    if sockdir.is_dir() and not sockdir.is_symlink():
        for name in (f".s.PGSQL.{port}", f".s.PGSQL.{port}.lock"):
            (sockdir / name).unlink(missing_ok=True)


def orphaned_trash(wd: Path, known: list[Path]) -> list[Path]:
    """Discarded data (.trash-*) nobody is removing any more: an old one (the machine stopped
    during a background removal) is removed here; one whose run was killed before it handed
    the removal on is returned, to be removed in the background like our own."""
    orphans = []
    # A listing, not wd.glob(): glob's fnmatch and re cost ~7 ms of a warm init's critical path.
    try:
        names = sorted(os.listdir(wd))
    except FileNotFoundError:
        names = []
    for name in names:
        leftover = wd / name
        if not name.startswith(".trash-") or not leftover.is_dir() or leftover in known:
            continue
        if time.time() - leftover.stat().st_mtime > 60:
            import shutil

            shutil.rmtree(leftover, ignore_errors=True)
        elif _dead_discarder(leftover):
            orphans.append(leftover)
    return orphans


def _dead_discarder(trash: Path) -> bool:
    """`.trash-<pid>-<ns>` whose run (pid) is gone."""
    pid = trash.name[len(".trash-"):].split("-", 1)[0]
    return pid.isdigit() and not proc.pid_alive(int(pid))


def check_data_version(datadir: Path, install: pgbin.PgInstall) -> None:
    """A cluster of another major version is never started (nor changed)."""
    data_major = (datadir / "PG_VERSION").read_text().strip()
    if data_major.isdigit() and int(data_major) != install.major:
        raise Error(
            f"the cluster in {datadir} was made by PostgreSQL {data_major}, but "
            f"{install.describe()} is in use: run `database upgrade` to move it to "
            f"PostgreSQL {install.major} (keeps the old data), or set PG_BIN_DIR to a "
            f"PostgreSQL {data_major} bin dir — nothing was changed"
        )


def grant_server_access(wd: Path, install: pgbin.PgInstall, account: proc.RunAs) -> None:
    """The server account must reach the working dir and the binaries (a venv under
    /root holding the embedded wheel, say)."""
    from db_tool import privs

    privs.grant_search(wd, account)
    privs.grant_search(install.bin_dir.parent, account)
