"""Cluster: one PostgreSQL data directory under a working dir, mapped to server verbs.

Layout (compatible with the original postgres-init):
    <wd>/data                 the data directory
    <wd>/sock                 the unix socket directory (no TCP: listen_addresses = '')
    <wd>/postgres-init.log    the server's own stderr before the logging collector takes over
    <wd>/.db-tool-created     marker: the tool created <wd> (so `database cleanup` may remove it)
    <wd>/.db-tool.lock        serialises concurrent init/stop calls on this working dir

Fresh clusters are copies of a per-installation template (initdb runs once per cache key).
The server is spawned directly (not through pg_ctl) in its own session with stdin/stdout/stderr
pointing at /dev/null and a log file, so `x=$(postgres-init --print-env)` never hangs; readiness
is a real connection, polled every few milliseconds.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from db_tool import cachedir, clusterdir, fslock, output, pgbin, pgwire, privs, proc, safefs
from db_tool.clusterdir import LOCKFILE, MARKER, RUNTIME_CONF, SERVER_LOG
from db_tool.conninfo import build_url
from db_tool.errors import Error, ExitCode, MissingError, NotInstalledError
from db_tool.settings import ClusterConfig

if TYPE_CHECKING:
    from db_tool import template_cache

__all__ = ["DEV_CONF", "HBA_CONF", "LOCKFILE", "MARKER", "Cluster", "ClusterConfig",
           "InitResult", "build_url"]

INCLUDE_LINE = f"include_if_exists = '{RUNTIME_CONF}'"
START_TIMEOUT = 60.0
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes on Linux, NUL included
STOP_TIMEOUT = 60.0
# Settings of the runtime conf that nothing may override: postgresql.auto.conf lines setting
# them (ALTER SYSTEM, or the original postgres-init's own) are dropped before every start.
MANAGED_KEYS = frozenset({
    "port", "unix_socket_directories", "unix_socket_permissions", "unix_socket_group",
    "listen_addresses", "hba_file", "ident_file",
})

# Start failures that say the *data* is broken (self-heal moves it aside) ...
_BROKEN_DATA = (
    "could not locate a valid checkpoint record",
    "invalid checkpoint record",
    "invalid primary checkpoint",
    "invalid secondary checkpoint",
    "incorrect checksum in control file",
    "could not find the database system",
    "invalid magic number",
    "could not read from log segment",
    "invalid resource manager id",
    "could not open file \"global/",
    "could not open file \"base/",
    "could not open file \"pg_",
    "could not open directory \"pg_",
    "could not access status of transaction",
    "is not a valid data directory",
    "invalid data in file",
    "PANIC:",
)
# ... unless one of these says the cause lies elsewhere (never touch the data then).
_NOT_DATA = (
    "lock file",
    "Address already in use",
    "could not bind",
    "could not create any Unix-domain sockets",
    "configuration file",
    "invalid value for parameter",
    "unrecognized configuration parameter",
    "could not access file",
    "could not load library",
    "database files are incompatible",
    "Permission denied",
    "permission denied",
    "is another postmaster",
    "could not create shared memory",
    "could not map anonymous shared memory",
)

# `all` does not match replication connections; pg_basebackup (`database backup`) needs its
# own line.
HBA_CONF = (
    "# Written by db-tool: unix socket only, trust.\n"
    "local all all trust\n"
    "local replication all trust\n"
)

DEV_CONF = """
# --- db-tool development settings ---
# synchronous_commit = off may lose the commits of the last few hundred ms when the server
# process crashes (or is killed -9) or the OS crashes, but never corrupts data; fsync stays on
# so a reused development database survives crashes.
synchronous_commit = off
# Throw-away clusters additionally get fsync = off / full_page_writes = off (see runtime conf).
"""


def _conf_key(line: str) -> str:
    """The parameter a postgresql.conf line sets ("name = value" or "name value"), or ""."""
    text = line.strip()
    if not text or text.startswith("#"):
        return ""
    return text.replace("=", " ", 1).split()[0].lower()


def _conf_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@dataclass(frozen=True)
class InitResult:
    url: str
    action: str  # "created", "reused", "already running", "healed"
    moved_aside: Path | None = None


def _dead_discarder(trash: Path) -> bool:
    """`.trash-<pid>-<ns>` whose run (pid) is gone."""
    pid = trash.name[len(".trash-"):].split("-", 1)[0]
    return pid.isdigit() and not proc.pid_alive(int(pid))


def _pid_serves(pid: int, datadir: Path) -> bool:
    """Is pid a live postmaster of *this* data dir? A stale postmaster.pid may name a pid that
    now belongs to another cluster (or anything else); that one must never be signalled. The
    postmaster's cwd is its data dir; where we may not look at it, its command line says."""
    if not proc.pid_alive(pid):
        return False
    if not os.path.isdir("/proc/self"):
        return True  # no /proc to ask: trust the pid file
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return False
    if not (b"postgres" in argv[0] or b"postmaster" in argv[0]):
        return False
    try:
        cwd, data = os.stat(f"/proc/{pid}/cwd"), os.stat(datadir)
        return (cwd.st_dev, cwd.st_ino) == (data.st_dev, data.st_ino)
    except PermissionError:
        pass  # another account's process
    except OSError:
        return False
    for flag, value in itertools.pairwise(argv):
        if flag == b"-D":
            try:
                return os.path.samefile(os.fsdecode(value), datadir)
            except OSError:
                return False
    return False


class Cluster:
    def __init__(self, config: ClusterConfig, install: pgbin.PgInstall | None = None) -> None:
        self.config = config
        self._install = install
        self._provided: template_cache.Provided | None = None  # how the fresh data was made
        self._trash: list[Path] = []  # discarded data, deleted by the background worker

    # ---- paths and identity -------------------------------------------------------------
    @property
    def working_dir(self) -> Path:
        return self.config.working_dir

    @property
    def datadir(self) -> Path:
        return self.working_dir / "data"

    @property
    def sockdir(self) -> Path:
        return self.working_dir / "sock"

    @property
    def port(self) -> int:
        return self.config.port

    @property
    def database(self) -> str:
        return self.config.database

    @property
    def superuser(self) -> str:
        return self.config.superuser

    @property
    def server_log(self) -> Path:
        return self.working_dir / SERVER_LOG

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return build_url(self.superuser, database, self.sockdir, self.port)

    @property
    def install(self) -> pgbin.PgInstall:
        if self._install is None:
            bin_dir = self.config.pg_bin_dir
            self._install = pgbin.find(
                None if bin_dir is None else {**os.environ, "PG_BIN_DIR": bin_dir}
            )
        return self._install

    @cached_property
    def run_as(self) -> proc.RunAs | None:
        return privs.server_account(self.config.os_user)

    @property
    def log_dir(self) -> Path:
        if self.config.log_path is not None:
            return self.config.log_path
        return self.datadir / "log"

    # ---- state ----------------------------------------------------------------------------
    def _pidfile_lines(self) -> list[str]:
        try:
            return (self.datadir / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
            return []

    def running_pid(self) -> int | None:
        """PID of this cluster's live postmaster, or None (no or stale postmaster.pid)."""
        lines = self._pidfile_lines()
        if not lines or not lines[0].strip().isdigit():
            return None
        pid = int(lines[0])
        if _pid_serves(pid, self.datadir):
            return pid
        return None

    def is_running(self) -> bool:
        return self.running_pid() is not None

    def is_initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").is_file()

    def socket_holder(self) -> int | None:
        """PID of a live process holding our socket's lock file (maybe another cluster)."""
        lock = Path(pgwire.socket_path(self.sockdir, self.port) + ".lock")
        try:
            first = lock.read_text().splitlines()[0].strip()
        except (OSError, IndexError, UnicodeDecodeError):
            return None
        if first.isdigit() and proc.pid_alive(int(first)):
            return int(first)
        return None

    # ---- locking --------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise init/start/stop on this working dir; `*_locked` methods expect it held."""
        self._ensure_working_dir()
        lock = self.working_dir / LOCKFILE
        try:
            held = fslock.exclusive(
                lock, waiting=f"waiting for another db-tool run on {self.working_dir} ..."
            )
            held.__enter__()
        except OSError as exc:
            raise _NoLock(
                f"cannot create the lock file {lock} ({exc.strerror}): the working dir must be "
                "writable — fix its permissions or point PG_WORKING_DIR at a writable directory"
            ) from exc
        try:
            yield
        finally:
            held.__exit__(None, None, None)

    def _ensure_working_dir(self) -> None:
        wd = self.working_dir
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

    def check_working_dir(self) -> None:
        """Refuse, before anything changes, a working dir db-tool must not take over."""
        wd = self.working_dir
        why = clusterdir.refused_working_dir(wd, self.config.homes)
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

    def _refuse_foreign_cluster(self) -> None:
        """A cluster neither db-tool nor postgres-init made is never stopped, reused or
        discarded."""
        if clusterdir.cluster_maker(self.working_dir) is None:
            raise Error(
                f"{self.datadir} is a PostgreSQL cluster db-tool did not make (no "
                f"{MARKER}, not the postgres-init layout); it was left alone: point "
                f"PG_WORKING_DIR elsewhere, or `touch {self.working_dir / MARKER}` to hand it "
                "to db-tool"
            )

    # ---- init -----------------------------------------------------------------------------
    def init(self) -> InitResult:
        """Create (fresh) or reuse the cluster, start it and ensure the database."""
        self.check_socket_path()
        self.check_working_dir()
        with self.locked():
            before = self.running_pid()
            try:
                return self._init_locked()
            except BaseException:
                # Never leave a server we started running after a failed init.
                pid = self.running_pid()
                if pid is not None and pid != before:
                    with contextlib.suppress(Error):
                        self.stop_locked()
                raise

    def _init_locked(self) -> InitResult:
        if self.config.reuse and self.is_initialised():
            return self._reuse()
        try:
            self._fresh()
            try:
                self.start_locked()
                self.ensure_database(self.database)
            except (_BrokenData, Error) as exc:
                self._heal_template(exc)
        finally:
            self._refill_spare()  # also deletes discarded data when the start failed
        return InitResult(self.url, "created")

    def _heal_template(self, exc: _BrokenData | Error) -> None:
        """A fresh copy of a trusted template did not come up: unless the cause lies
        elsewhere (socket in use, missing library, bad PG_CONF_FILE), the template is at
        fault — rebuild it, naming the cache, and try once more with a fresh initdb."""
        why = exc.reason if isinstance(exc, _BrokenData) else exc.message
        provided = self._provided
        elsewhere = isinstance(exc, NotInstalledError) or any(
            s in why for s in ("held by another process", "in use by another server",
                               "PG_CONF_FILE", "PG_SHARED_PRELOAD_LIBRARIES")
        )
        if provided is None or provided.template is None or provided.how == "initdb" \
                or elsewhere:
            if isinstance(exc, _BrokenData):
                raise Error(f"the fresh cluster in {self.datadir} does not start ({why})") \
                    from None
            raise exc
        output.warn(
            f"a fresh cluster from the template cache {provided.template} did not start "
            f"({why.splitlines()[0] if why else 'no reason given'}); rebuilding that template"
        )
        self._drop_template()
        self._fresh(failed_copy=True)
        self.start_locked()
        self.ensure_database(self.database)

    def _reuse(self) -> InitResult:
        self._refuse_foreign_cluster()
        self._check_data_version()
        pid = self.running_pid()
        if pid is not None:
            if self._running_matches():
                self.ensure_database(self.database)
                return InitResult(self.url, "already running")
            self.stop_locked()
        try:
            self.start_locked()
        except _BrokenData as broken:
            aside = self._move_aside(broken.reason)
            self._fresh()
            self.start_locked()
            self.ensure_database(self.database)
            return InitResult(self.url, "healed", aside)
        self.ensure_database(self.database)
        return InitResult(self.url, "reused")

    def _check_data_version(self) -> None:
        data_major = (self.datadir / "PG_VERSION").read_text().strip()
        if data_major.isdigit() and int(data_major) != self.install.major:
            raise Error(
                f"the cluster in {self.datadir} was made by PostgreSQL {data_major}, but "
                f"{self.install.describe()} is in use: run `database upgrade` to move it to "
                f"PostgreSQL {self.install.major} (keeps the old data), or set PG_BIN_DIR to a "
                f"PostgreSQL {data_major} bin dir — nothing was changed"
            )

    def _running_matches(self) -> bool:
        lines = self._pidfile_lines()
        return (
            len(lines) >= 5
            and lines[3].strip() == str(self.port)
            and lines[4].strip() == str(self.sockdir)
        )

    def _move_aside(self, reason: str) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.working_dir / f"data.broken-{stamp}"
        n = 1
        while aside.exists():
            n += 1
            aside = self.working_dir / f"data.broken-{stamp}-{n}"
        self.datadir.rename(aside)
        output.warn(
            f"the data in {self.datadir} is broken ({reason}); moved it to {aside} and "
            "initialised a fresh cluster"
        )
        return aside

    def _fresh(self, failed_copy: bool = False) -> None:
        conf_text = self._read_conf_file()  # before anything changes (a running server too)
        data = self.datadir
        # Decide what may happen to data/ before anything is stopped or moved.
        discard = False
        if data.exists() or data.is_symlink():
            if not data.is_dir() or data.is_symlink():
                raise Error(
                    f"{data} is not a directory: move it away so postgres-init can create the "
                    "cluster there"
                )
            if (data / "PG_VERSION").is_file():
                self._refuse_foreign_cluster()
                discard = True
            elif any(data.iterdir()) and not clusterdir.unfinished_cluster(data):
                raise Error(
                    f"{data} holds files that are not a PostgreSQL cluster (no PG_VERSION): "
                    "move them away so postgres-init can create the cluster there — nothing "
                    "was changed"
                )
        if (self.sockdir.exists() and not self.sockdir.is_dir()) or self.sockdir.is_symlink():
            raise Error(f"{self.sockdir} is not a directory: move it away")
        if self.is_running():
            self.stop_locked()
        holder = self.socket_holder()
        if holder is not None:
            raise Error(
                f"socket {pgwire.socket_path(self.sockdir, self.port)} is held by another "
                f"process (pid {holder}); stop it or choose another PG_PORT — nothing was changed"
            )
        if discard and self.config.keep_previous and not self.config.ephemeral \
                and not failed_copy:
            from db_tool import previous

            if previous.holds_data(data):
                previous.keep(data, self.working_dir)
            else:
                self._discard(data)
        elif discard or (data.is_dir() and any(data.iterdir())):
            self._discard(data)  # ours, or what an interrupted init left
        elif data.is_dir():
            data.rmdir()
        if self.sockdir.is_dir() and not self.sockdir.is_symlink():
            # Stale files of our port only: another server may keep its socket here too.
            for name in (f".s.PGSQL.{self.port}", f".s.PGSQL.{self.port}.lock"):
                (self.sockdir / name).unlink(missing_ok=True)
        self._prepare_dirs()
        self._copy_template()
        self._write_base_conf(conf_text)

    def _read_conf_file(self) -> str | None:
        path = self.config.conf_file
        if path is None:
            return None
        try:
            return path.read_text()
        except OSError as exc:
            raise Error(
                f"PG_CONF_FILE={path} is not readable ({exc.strerror}): fix the path or unset "
                "PG_CONF_FILE"
            ) from exc

    def _discard(self, path: Path) -> None:
        from db_tool import template_cache

        template_cache.discard(path, self.working_dir, later=self._trash)

    def _grant_server_access(self, account: proc.RunAs) -> None:
        """The server account must reach the working dir and the binaries (a venv under
        /root holding the embedded wheel, say)."""
        privs.grant_search(self.working_dir, account)
        privs.grant_search(self.install.bin_dir.parent, account)

    def _prepare_dirs(self) -> None:
        for leftover in self.working_dir.glob(".trash-*"):
            if not leftover.is_dir() or leftover in self._trash:
                continue
            # A background removal that never finished (machine stopped): finish it.
            if time.time() - leftover.stat().st_mtime > 60:
                shutil.rmtree(leftover, ignore_errors=True)
            elif _dead_discarder(leftover):
                # Discarded by a run killed before it handed the removal on: ours to remove,
                # in the background like our own discarded data.
                self._trash.append(leftover)
        account = self.run_as
        if account is not None:
            self._grant_server_access(account)
        self._prepare_sockdir()

    def _prepare_sockdir(self) -> None:
        """Only the server account may reach the socket (trust auth: whoever connects is
        superuser), whatever state a pre-existing sock/ was in; say what was changed."""
        for change in safefs.private_dir(self.sockdir, owner=self.run_as):
            output.warn(f"{change}, so that only the cluster's owner can connect")

    # ---- template cache (template_cache.py) ------------------------------------------------
    @cached_property
    def _cache_dir(self) -> Path | None:
        locations = self.config.cache_locations
        if locations is None:
            return None

        return cachedir.choose(locations, self.working_dir.parent, "template cache")

    def template_spec(self) -> template_cache.Template:
        from db_tool import template_cache

        return template_cache.Template(
            install=self.install, account=self.run_as, superuser=self.superuser,
            database=self.database, cache_dir=self._cache_dir,
            use_spare=self.config.use_spare,
        )

    def _copy_template(self) -> None:
        from db_tool import template_cache

        self._provided = template_cache.provide(
            self.template_spec(), self.datadir, server_process_env(self.run_as)
        )

    def _refill_spare(self) -> None:
        if self._provided is not None or self._trash:
            from db_tool import template_cache

            template_cache.refill(self.template_spec(), self._provided,
                                  server_process_env(self.run_as), remove=self._trash)
            self._trash = []

    def _drop_template(self) -> None:
        from db_tool import template_cache

        template_cache.drop(self.template_spec())

    def _write_base_conf(self, conf_text: str | None) -> None:
        conf = self.datadir / "postgresql.conf"
        if conf_text is not None:
            body = conf_text
        else:
            body = (safefs.read_text(conf, self.run_as) or "") + DEV_CONF
        if not body.endswith("\n"):
            body += "\n"
        safefs.replace_file(conf, body + INCLUDE_LINE + "\n", owner=self.run_as)
        safefs.replace_file(self.datadir / "pg_hba.conf", HBA_CONF, owner=self.run_as)

    # ---- runtime configuration (rewritten on every launch) ---------------------------------
    def _runtime_conf(self) -> str:
        cfg = self.config
        lines = [
            "# Written by db-tool on every start; edit postgresql.conf instead.",
            f"port = {self.port}",
            f"unix_socket_directories = {_conf_quote(str(self.sockdir))}",
            "unix_socket_permissions = 0700",
            "listen_addresses = ''",
            f"hba_file = {_conf_quote(str(self.datadir / 'pg_hba.conf'))}",
            f"ident_file = {_conf_quote(str(self.datadir / 'pg_ident.conf'))}",
        ]
        if cfg.ephemeral:
            lines += ["fsync = off", "full_page_writes = off"]
        if cfg.conf_file is None:
            libs = self._preload_libraries()
            lines.append(f"shared_preload_libraries = {_conf_quote(','.join(libs))}")
            if "pg_cron" in libs:
                lines.append(f"cron.database_name = {_conf_quote(self.database)}")
                lines.append(f"cron.host = {_conf_quote(str(self.sockdir))}")
            if cfg.disable_logging:
                lines.append("logging_collector = off")
            else:
                lines.append("logging_collector = on")
                lines.append(f"log_directory = {_conf_quote(str(cfg.log_path or 'log'))}")
        return "\n".join(lines) + "\n"

    def _preload_libraries(self) -> list[str]:
        libs = self.config.preload_list()
        missing = [lib for lib in libs if not self.install.has_library(lib)]
        if not missing:
            return libs
        if self.config.preload_explicit:
            raise NotInstalledError(
                f"PG_SHARED_PRELOAD_LIBRARIES names {', '.join(missing)}, which "
                f"{self.install.describe()} does not have: "
                f"{pgbin.library_hint(self.install, missing)} or change "
                "PG_SHARED_PRELOAD_LIBRARIES"
            )
        # The default pg_cron is only wanted where it exists: its absence is no news.
        output.debug(f"{', '.join(missing)} not installed for PostgreSQL "
                     f"{self.install.major}; starting without it")
        return [lib for lib in libs if lib not in missing]

    def write_runtime_conf(self) -> None:
        """Every file the server reads gets an explicit owner and mode (whatever the umask),
        and is replaced, never written through: data/ belongs to the server account."""
        owner = self.run_as
        runtime = self._runtime_conf()
        managed = MANAGED_KEYS | {k for ln in runtime.splitlines() if (k := _conf_key(ln))}
        safefs.replace_file(self.datadir / RUNTIME_CONF, runtime, owner=owner)
        conf = self.datadir / "postgresql.conf"
        text = safefs.read_text(conf, owner) or ""
        # The include must come last so nothing in postgresql.conf overrides it.
        stripped = [ln for ln in text.rstrip("\n").splitlines() if ln.strip()]
        if not stripped or stripped[-1].strip() != INCLUDE_LINE:
            text += ("" if text.endswith("\n") or not text else "\n") + INCLUDE_LINE + "\n"
            safefs.replace_file(conf, text, owner=owner)
        elif owner is not None:
            self._own(conf, owner)
        # postgresql.auto.conf is read after postgresql.conf: drop what would override ours.
        auto = self.datadir / "postgresql.auto.conf"
        auto_text = safefs.read_text(auto, owner)
        if auto_text is not None:
            kept = [ln for ln in auto_text.splitlines(keepends=True)
                    if _conf_key(ln) not in managed]
            if len(kept) != len(auto_text.splitlines(keepends=True)):
                safefs.replace_file(auto, "".join(kept), owner=owner)
            elif owner is not None:
                self._own(auto, owner)

    @staticmethod
    def _own(path: Path, owner: proc.RunAs) -> None:
        """A file the server reads must be readable by it (a root umask of 077 made it not)."""
        st = os.lstat(path)
        if st.st_uid != owner.uid and not os.path.islink(path):
            os.lchown(path, owner.uid, owner.gid)

    # ---- start / stop ---------------------------------------------------------------------
    def check_socket_path(self) -> None:
        """PostgreSQL cannot listen on a longer unix socket path; it only says so in its log."""
        path = pgwire.socket_path(self.sockdir, self.port)
        size = len(os.fsencode(path))
        if size > SOCKET_PATH_MAX:
            raise Error(
                f"the socket path {path} is {size} bytes, more than the {SOCKET_PATH_MAX} a "
                "unix socket allows: use a shorter PG_WORKING_DIR (or LOCAL_DIR) — nothing "
                "was changed"
            )

    def start(self) -> None:
        self.check_socket_path()
        with self.locked():
            if self.is_running():
                return
            try:
                self.start_locked()
            except _BrokenData as broken:
                raise Error(
                    f"the data in {self.datadir} is broken ({broken.reason}); "
                    "restore a backup or run postgres-init with PG_REUSE to start over"
                ) from None

    def start_locked(self) -> None:
        account = self.run_as
        if account is not None:
            self._grant_server_access(account)
        self._prepare_sockdir()
        holder = self.socket_holder()
        if holder is not None:
            raise Error(
                f"socket {pgwire.socket_path(self.sockdir, self.port)} is held by another "
                f"process (pid {holder}); stop it or choose another PG_PORT — the data in "
                f"{self.datadir} was left as it was"
            )
        self._check_data_writable()
        self._clear_dead_pidfile()
        if self.config.log_path is not None and self.config.conf_file is None:
            self._prepare_log_path(self.config.log_path)
        self.write_runtime_conf()
        log_fd = os.open(self.server_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW,
                         0o644)
        log_start = os.fstat(log_fd).st_size
        started_at = time.time()
        try:
            child = subprocess.Popen(
                [self.install.tool("postgres"), "-D", str(self.datadir)],
                stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                close_fds=True, start_new_session=True, cwd="/", env=server_process_env(account),
                user=account.uid if account else None,
                group=account.gid if account else None,
                extra_groups=[] if account else None,
            )
        finally:
            os.close(log_fd)
        if self.config.no_tty:
            output.info(f"server output goes to {self.server_log}")
        try:
            self._await_ready(child, log_start, started_at)
        except BaseException:
            self._kill(child)
            raise

    def _await_ready(self, child: subprocess.Popen[bytes], log_start: int,
                     started_at: float) -> None:
        """Wait for the server *we spawned*: a postmaster.pid left by a killed server says
        "ready" too, so only a pid file naming our child counts, and a child that exits is
        diagnosed at once."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if child.poll() is not None:
                self._start_failed(log_start, started_at)
            lines = self._pidfile_lines()
            if (len(lines) >= 8 and lines[0].strip() == str(child.pid)
                    and lines[7].strip() == "ready"):
                break
            if time.monotonic() > deadline:
                raise Error(
                    f"PostgreSQL did not become ready within {START_TIMEOUT:.0f}s; it was "
                    "stopped again",
                    detail=self._log_tail(log_start, started_at),
                )
            time.sleep(0.003)
        self._verify_listening(lines)
        while True:
            try:
                pgwire.connect(self.sockdir, self.port, self.superuser, "postgres",
                               timeout=2.0).close()
                return
            except pgwire.PgError as exc:
                if exc.code == "3D000":
                    return  # up and answering; only that database is missing
                if exc.code in ("57P03", "08006") and time.monotonic() < deadline:
                    if child.poll() is not None:
                        self._start_failed(log_start, started_at)
                    time.sleep(0.005)
                    continue
                self._connect_failed(exc, log_start, started_at)

    def _verify_listening(self, lines: list[str]) -> None:
        """The running server must listen where we said and nowhere else: a conf file it
        could not read (a root umask of 077) or an override would open TCP or another socket."""
        port, sockdir, listen = (ln.strip() for ln in lines[3:6])
        problems = []
        if port != str(self.port):
            problems.append(f"port {port} instead of {self.port}")
        if sockdir != str(self.sockdir):
            problems.append(f"its socket in {sockdir or '(none)'} instead of {self.sockdir}")
        if listen:
            problems.append(f"listen_addresses = '{listen}' (TCP) instead of ''")
        sock = pgwire.socket_path(self.sockdir, self.port)
        with contextlib.suppress(OSError):
            mode = os.stat(sock).st_mode & 0o777
            if mode & 0o077:
                problems.append(f"socket {sock} with mode {mode:o} instead of 700")
        if problems:
            raise Error(
                f"PostgreSQL started with {', '.join(problems)}, so db-tool stopped it again: "
                f"check that {self.datadir / RUNTIME_CONF} is readable by the server and that "
                "no other configuration overrides it"
            )

    def _connect_failed(self, exc: pgwire.PgError, log_start: int, started_at: float) -> None:
        # Up, but its catalogs are unreadable (e.g. a missing global/1262): broken data.
        if exc.code.startswith(("58", "XX")) and any(m in exc.message for m in _BROKEN_DATA):
            raise _BrokenData(exc.message) from exc
        if exc.code == "28000" and "role" in exc.message:
            raise Error(
                f"the cluster in {self.datadir} has no role {self.superuser!r} (it was "
                "made by another login): unset PG_REUSE for a fresh cluster, or turn a "
                "copy into a local one with `database normalize-backup` — its data was "
                "left as it was",
            ) from exc
        raise Error(
            f"PostgreSQL started but refuses connections: {exc.message}",
            detail=self._log_tail(log_start, started_at),
        ) from exc

    def _clear_dead_pidfile(self) -> None:
        """A postmaster.pid (or our socket's lock file) naming a dead or zombie process is
        stale for sure; PostgreSQL itself cannot tell a zombie from a live server and would
        refuse to start."""
        lines = self._pidfile_lines()
        if lines and lines[0].strip().isdigit() and not proc.pid_alive(int(lines[0])):
            with contextlib.suppress(FileNotFoundError):
                (self.datadir / "postmaster.pid").unlink()
        sock = Path(pgwire.socket_path(self.sockdir, self.port))
        lock = sock.with_name(sock.name + ".lock")
        try:
            first = lock.read_text().split("\n", 1)[0].strip()
        except (OSError, UnicodeDecodeError):
            return
        if first.isdigit() and not proc.pid_alive(int(first)):
            for stale in (lock, sock):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()

    def _check_data_writable(self) -> None:
        """A read-only data dir is said as such (the server would only say "lock file")."""
        data = self.datadir
        try:
            read_only = bool(os.statvfs(data).f_flag & os.ST_RDONLY)
            st = data.stat()
        except OSError:
            return
        account = self.run_as
        if account is not None:
            writable = privs.can_write(data, st, account)
        else:
            writable = os.access(data, os.W_OK | os.X_OK)
        if read_only or not writable:
            who = account.name if account is not None else "you"
            why = "read-only file system" if read_only else f"no write permission for {who}"
            raise Error(
                f"the data dir {data} is read-only ({why}): PostgreSQL needs to write there — "
                "make it writable; nothing was changed"
            )

    def _prepare_log_path(self, path: Path) -> None:
        account = self.run_as
        if not path.exists():
            path.mkdir(parents=True)
            if account is not None:
                os.chown(path, account.uid, account.gid)
        elif not path.is_dir():
            raise Error(f"PG_LOG_PATH={path} is not a directory: fix or unset PG_LOG_PATH")
        if account is not None:
            privs.grant_search(path, account)
            privs.grant_write(path, account)

    def _log_tail(self, log_start: int, started_at: float, lines: int = 20) -> str:
        text = ""
        try:
            with open(self.server_log, "rb") as fh:
                fh.seek(log_start)
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            pass
        # Errors after the logging collector took over land in the newest server log file.
        try:
            newest = max(
                (p for p in self.log_dir.iterdir() if p.stat().st_mtime >= started_at - 1),
                key=lambda p: p.stat().st_mtime,
                default=None,
            )
            if newest is not None:
                text += safefs.read_text(newest, self.run_as) or ""
        except (OSError, Error):
            pass
        return "\n".join(text.strip().splitlines()[-lines:])

    def _start_failed(self, log_start: int, started_at: float) -> None:
        tail = self._log_tail(log_start, started_at, lines=60)
        if not any(s in tail for s in _NOT_DATA):
            for marker in _BROKEN_DATA:
                if marker in tail:
                    raise _BrokenData(marker.rstrip(":").strip('"'))
        if 'lock file "postmaster.pid" already exists' in tail:
            raise Error(
                f"{self.datadir}/postmaster.pid names a process that is not this cluster's "
                "server, so PostgreSQL will not start: if no server runs on this data dir, "
                "remove that file — the data was left as it was",
                detail=tail,
            )
        sock_lock = f".s.PGSQL.{self.port}.lock"
        if sock_lock in tail and ("already exists" in tail or "another postmaster" in tail):
            raise Error(
                f"the socket in {self.sockdir} (port {self.port}) is in use by another server; "
                "stop it or choose another PG_PORT — the data was left as it was",
                detail=tail,
            )
        if "could not create lock file" in tail and (
            "Read-only file system" in tail or "Permission denied" in tail
        ):
            where = self.sockdir if sock_lock in tail else self.datadir
            why = "read-only file system" if "Read-only" in tail else "permission denied"
            raise Error(
                f"{where} is not writable for the server ({why}): make it writable — the data "
                "was left as it was",
                detail=tail,
            )
        raise Error(
            f"PostgreSQL failed to start (data in {self.datadir} left as it was); the server "
            f"said (full log: {self.server_log}):",
            detail="\n".join(tail.splitlines()[-15:]),
        )

    def _kill(self, child: subprocess.Popen[bytes]) -> None:
        """Stop a server we just started and must not keep: fast shutdown, then immediate."""
        for sig, wait in ((signal.SIGINT, 20.0), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)):
            if child.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(wait)

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Fast shutdown, waited. Returns False when nothing was running."""
        if not self.working_dir.is_dir():
            return False
        if self.running_pid() is not None and clusterdir.cluster_maker(self.working_dir) is None:
            raise Error(
                f"{self.datadir} is a running PostgreSQL cluster db-tool did not make; it was "
                "left running (stop it yourself, e.g. with pg_ctl stop)"
            )
        try:
            with self.locked():
                return self.stop_locked(timeout)
        except _NoLock:
            # A read-only working dir: no init can run there to race with; stop unlocked.
            return self.stop_locked(timeout)

    def stop_locked(self, timeout: float = STOP_TIMEOUT) -> bool:
        pid = self.running_pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)  # "fast" shutdown: roll back sessions, checkpoint
        deadline = time.monotonic() + timeout
        while proc.pid_alive(pid):
            if time.monotonic() > deadline:
                raise Error(
                    f"PostgreSQL (pid {pid}) did not stop within {timeout:.0f}s; see "
                    f"{self.log_dir}",
                    ExitCode.BUG,
                )
            time.sleep(0.003)
        return True

    # ---- databases ------------------------------------------------------------------------
    def ensure_database(self, name: str) -> bool:
        """Create the database if missing; True when it was created."""
        try:
            pgwire.connect(self.sockdir, self.port, self.superuser, name).close()
            return False
        except pgwire.PgError as exc:
            if exc.code != "3D000":  # invalid_catalog_name: does not exist
                raise Error(f"cannot connect to database {name}: {exc.message}") from exc
        try:
            conn = pgwire.connect(self.sockdir, self.port, self.superuser, "postgres")
        except pgwire.PgError as exc:
            if exc.code != "3D000":
                raise Error(f"cannot connect to create database {name}: {exc.message}") from exc
            conn = pgwire.connect(self.sockdir, self.port, self.superuser, "template1")
        with conn:
            try:
                conn.query(f"CREATE DATABASE {pgwire.quote_ident(name)}")
            except pgwire.PgError as exc:
                if exc.code != "42P04":  # created concurrently
                    raise Error(f"cannot create database {name}: {exc.message}") from exc
        return True

    # ---- removal --------------------------------------------------------------------------
    def removable(self) -> tuple[bool, str]:
        why = clusterdir.removal_refused(self.working_dir)
        if why is not None:
            return False, why
        if (self.working_dir / MARKER).is_file():
            return True, "created by db-tool"
        return True, "holds only the postgres-init layout"

    def destroy(self) -> None:
        """Stop and remove the working dir — only one the tool created or a bare layout."""
        ok, why = self.removable()
        if not ok:
            raise Error(
                f"refusing to remove {self.working_dir}: {why}; remove it by hand if you "
                "are sure"
            )
        self.stop()
        if self.is_running():
            raise Error(f"{self.working_dir} still has a running server; not removing it")
        # Removed before we return, as the original's `rm -rf`: a script that runs
        # `database cleanup && rmdir focus` (or checks the parent is empty) must see it gone.
        # Renamed away first, so an interrupted removal leaves no half cluster at the old path.
        from db_tool import template_cache

        template_cache.remove_tree(self.working_dir, wait=True)


class _NoLock(Error):
    """The working dir's lock file cannot be created (a read-only working dir)."""


class _BrokenData(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def server_env() -> dict[str, str]:
    """Environment for client tools (pg_dump, pg_basebackup) run as the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


# What a server process (postgres, initdb) may see of the caller's environment: nothing
# secret (HECTIC_DOTENV_CONTENT, DB_URL, tokens ...), since the server account can read it.
_SERVER_ENV_KEEP = ("PATH", "TZ", "TMPDIR", "LD_LIBRARY_PATH")


def server_process_env(account: proc.RunAs | None) -> dict[str, str]:
    env = {k: os.environ[k] for k in _SERVER_ENV_KEEP if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["LC_ALL"] = "C"
    if account is not None:
        env.update(HOME=account.home, USER=account.name, LOGNAME=account.name)
    else:
        import pwd

        with contextlib.suppress(KeyError):
            entry = pwd.getpwuid(os.getuid())
            env.update(HOME=entry.pw_dir or "/", USER=entry.pw_name, LOGNAME=entry.pw_name)
    return env
