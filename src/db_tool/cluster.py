"""Cluster: one PostgreSQL data directory under a working dir, mapped to server verbs.

Layout (compatible with the original postgres-init):
    <wd>/data                 the data directory
    <wd>/sock                 the unix socket directory (no TCP: listen_addresses = '')
    <wd>/postgres-init.log    the server's own stderr before the logging collector takes over
    <wd>/.db-tool-created     marker: the tool created <wd> (so `database cleanup` may remove it)
    <wd>/.db-tool.lock        serialises concurrent init/stop calls on this working dir

This module decides *what* happens (fresh, reuse, heal, stop, remove); the pieces live in
rooms of their own that take explicit values: workdir.py (the working dir's layout and
checks), serverconf.py (the configuration texts), postmaster.py (the server process: start,
wait, stop), startfail.py (why a start failed), template_cache.py (fresh data dirs).
"""

from __future__ import annotations

from db_tool import clusterdir, fslock, output, postmaster, workdir
from db_tool.clusterdir import LOCKFILE, MARKER, RUNTIME_CONF, SERVER_LOG
from db_tool.conninfo import build_url
from db_tool.errors import Error, NotInstalledError, suppress
from db_tool.record import Record
from db_tool.settings import ClusterConfig
from db_tool.startfail import BrokenData

TYPE_CHECKING = False  # no typing, dataclasses or pgwire (socket) before the server is spawned
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

    from db_tool import pgbin, proc, template_cache

# pgbin, privs, serverconf and cachedir load where a server is started: postgres-cleanup
# (a shell trap, the hook path) needs none of them.

__all__ = ["LOCKFILE", "MARKER", "RUNTIME_CONF", "Cluster",
           "ClusterConfig", "InitResult", "build_url"]

START_TIMEOUT = postmaster.START_TIMEOUT
STOP_TIMEOUT = postmaster.STOP_TIMEOUT


_UNSET: Any = object()  # a lazily worked-out attribute not worked out yet


class InitResult(Record):
    """What init did: the URL, the action ("created", "reused", "already running" or
    "healed") and where a broken data dir was moved aside."""

    __slots__ = _fields = ("url", "action", "moved_aside")

    def __init__(self, url: str, action: str, moved_aside: Path | None = None) -> None:
        self.url = url
        self.action = action
        self.moved_aside = moved_aside


class Cluster:
    def __init__(self, config: ClusterConfig, install: pgbin.PgInstall | None = None) -> None:
        self.config = config
        self._install = install
        self._provided: template_cache.Provided | None = None  # how the fresh data was made
        self._refill_due = False  # a fresh data dir was made: the background refill is due
        self._trash: list[Path] = []  # discarded data, deleted by the background worker
        self._seen_database: str | None = None  # connected to it at the last start
        # Worked out on first use (not functools.cached_property: no functools on the hook
        # paths); _UNSET until then.
        self._run_as: proc.RunAs | None = _UNSET
        self._cache: Path | None = _UNSET
        # Called once right after the next postmaster is spawned, before its readiness is
        # awaited: work that needs no server (the rest of the imports) overlaps the
        # ~60 ms the server takes to come up.
        self._while_starting: Callable[[], None] | None = None

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
            from db_tool import pgbin

            bin_dir = self.config.pg_bin_dir
            cache = self._cache_dir
            self._install = pgbin.find(None if bin_dir is None else {"PG_BIN_DIR": bin_dir},
                                       memo=None if cache is None else cache / "pgbin.memo")
        return self._install

    @property
    def run_as(self) -> proc.RunAs | None:
        if self._run_as is _UNSET:
            from db_tool import privs

            self._run_as = privs.server_account(self.config.os_user)
        return self._run_as

    @property
    def log_dir(self) -> Path:
        if self.config.log_path is not None:
            return self.config.log_path
        return self.datadir / "log"

    # ---- state ----------------------------------------------------------------------------
    def running_pid(self) -> int | None:
        """PID of this cluster's live postmaster, or None (no or stale postmaster.pid)."""
        return postmaster.running_pid(self.datadir)

    def is_running(self) -> bool:
        return self.running_pid() is not None

    def is_initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").is_file()

    def socket_holder(self) -> int | None:
        """PID of a live process holding our socket's lock file (maybe another cluster)."""
        return postmaster.socket_holder(self.sockdir, self.port)

    def check_working_dir(self) -> None:
        """Refuse, before anything changes, a working dir db-tool must not take over."""
        workdir.check(self.working_dir, self.config.homes)

    def check_socket_path(self) -> None:
        workdir.check_socket_path(self.sockdir, self.port)

    # ---- locking --------------------------------------------------------------------------
    def locked(self) -> fslock.exclusive:
        """Serialise init/start/stop on this working dir (`with cluster.locked():`);
        `*_locked` methods expect it held."""
        workdir.ensure(self.working_dir)
        return _WorkdirLock(
            self.working_dir / LOCKFILE,
            waiting=f"waiting for another db-tool run on {self.working_dir} ...",
        )

    # ---- init -----------------------------------------------------------------------------
    def init(self, while_starting: Callable[[], None] | None = None) -> InitResult:
        """Create (fresh) or reuse the cluster, start it and ensure the database.
        `while_starting`: called once while a server we spawned starts up (or not at all),
        with the lock held; it must not need the server."""
        self._while_starting = while_starting
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
                    with suppress(Error):
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
            except (BrokenData, Error) as exc:
                self._heal_template(exc)
        finally:
            self._refill_spare()  # also deletes discarded data when the start failed
        return InitResult(self.url, "created")

    def _heal_template(self, exc: BrokenData | Error) -> None:
        """A fresh copy of a trusted template did not come up: unless the cause lies
        elsewhere (socket in use, missing library, bad PG_CONF_FILE), the template is at
        fault — rebuild it, naming the cache, and try once more with a fresh initdb."""
        why = exc.reason if isinstance(exc, BrokenData) else exc.message
        provided = self._provided
        elsewhere = isinstance(exc, NotInstalledError) or any(
            s in why for s in ("held by another process", "in use by another server",
                               "PG_CONF_FILE", "PG_SHARED_PRELOAD_LIBRARIES")
        )
        if provided is None or provided.template is None or provided.how == "initdb" \
                or elsewhere:
            if isinstance(exc, BrokenData):
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
        workdir.refuse_foreign_cluster(self.working_dir)
        workdir.check_data_version(self.datadir, self.install)
        pid = self.running_pid()
        if pid is not None:
            if postmaster.serves_at(self.datadir, self.sockdir, self.port):
                self.ensure_database(self.database)
                return InitResult(self.url, "already running")
            self.stop_locked()
        try:
            self.start_locked()
        except BrokenData as broken:
            aside = workdir.move_aside(self.working_dir, self.datadir, broken.reason)
            self._fresh()
            self.start_locked()
            self.ensure_database(self.database)
            return InitResult(self.url, "healed", aside)
        self.ensure_database(self.database)
        return InitResult(self.url, "reused")

    def _fresh(self, failed_copy: bool = False) -> None:
        from db_tool import serverconf

        # Read before anything changes (a running server too).
        conf_text = serverconf.read_conf_file(self.config.conf_file)
        data = self.datadir
        discard = workdir.fresh_data_verdict(self.working_dir, data, self.sockdir)
        if self.is_running():
            self.stop_locked()
        holder = self.socket_holder()
        if holder is not None:
            raise Error(
                f"socket {clusterdir.socket_path(self.sockdir, self.port)} is held by another "
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
        workdir.remove_stale_socket(self.sockdir, self.port)
        self._prepare_dirs()
        self._copy_template()
        serverconf.write_base_conf(self.datadir, conf_text, self.run_as)

    def _discard(self, path: Path) -> None:
        from db_tool import template_cache

        template_cache.discard(path, self.working_dir, later=self._trash)

    def _prepare_dirs(self) -> None:
        self._trash += workdir.orphaned_trash(self.working_dir, self._trash)
        account = self.run_as
        if account is not None:
            workdir.grant_server_access(self.working_dir, self.install, account)
        workdir.prepare_sockdir(self.sockdir, account)

    # ---- template cache (template_cache.py) ------------------------------------------------
    @property
    def _cache_dir(self) -> Path | None:
        if self._cache is _UNSET:
            locations = self.config.cache_locations
            if locations is None:
                self._cache = None
            else:
                from db_tool import cachedir

                self._cache = cachedir.choose(locations, self.working_dir.parent,
                                              "template cache")
        return self._cache

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
            self.template_spec(), self.datadir, self.server_process_env(),
            recyclable=self._trash,
        )
        self._refill_due = True

    def _refill_spare(self) -> None:
        if self._refill_due or self._trash:
            from db_tool import template_cache

            template_cache.refill(self.template_spec(), self._provided,
                                  self.server_process_env(), remove=self._trash)
            self._trash = []
            self._refill_due = False  # handed on: one worker per fresh data dir

    def _drop_template(self) -> None:
        from db_tool import template_cache

        template_cache.drop(self.template_spec())

    # ---- start / stop ---------------------------------------------------------------------
    def write_runtime_conf(self) -> None:
        from db_tool import serverconf

        libs = serverconf.preload_libraries(self.config, self.install)
        runtime = serverconf.runtime_conf(self.config, self.datadir, self.sockdir, libs)
        serverconf.write_runtime_conf(self.datadir, runtime, self.run_as)

    def start(self) -> None:
        self.check_socket_path()
        with self.locked():
            if self.is_running():
                return
            try:
                self.start_locked()
            except BrokenData as broken:
                raise Error(
                    f"the data in {self.datadir} is broken ({broken.reason}); "
                    "restore a backup or run postgres-init with PG_REUSE to start over"
                ) from None

    def start_locked(self) -> None:
        account = self.run_as
        if account is not None:
            workdir.grant_server_access(self.working_dir, self.install, account)
        workdir.prepare_sockdir(self.sockdir, account)
        holder = self.socket_holder()
        if holder is not None:
            raise Error(
                f"socket {clusterdir.socket_path(self.sockdir, self.port)} is held by another "
                f"process (pid {holder}); stop it or choose another PG_PORT — the data in "
                f"{self.datadir} was left as it was"
            )
        workdir.check_data_writable(self.datadir, account)
        postmaster.clear_dead_pidfile(self.datadir, self.sockdir, self.port)
        if self.config.log_path is not None and self.config.conf_file is None:
            workdir.prepare_log_path(self.config.log_path, account)
        self.write_runtime_conf()
        child, log = postmaster.spawn(self.install.tool("postgres"), self.datadir,
                                      self.server_log, self.log_dir, account,
                                      self.server_process_env())
        if self.config.no_tty:
            output.info(f"server output goes to {self.server_log}")
        try:
            self._starting()
            if postmaster.await_ready(child, log, self.datadir, self.sockdir, self.port,
                                      self.superuser, self.database):
                self._seen_database = self.database
        except BaseException:
            postmaster.kill(child)
            raise

    def _starting(self) -> None:
        """The server is spawned: do what needs no server while it comes up. (Not the
        background refill: its worker's start and copy, niced as they are, took cores from
        the server's start on a 2-core machine; it is handed on once the server is ready, by
        _init_locked's finally, a posix_spawn of ~1 ms.)"""
        hook, self._while_starting = self._while_starting, None
        if hook is not None:
            hook()

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
        postmaster.stop(pid, timeout, self.log_dir)
        return True

    # ---- environments of the processes we start --------------------------------------------
    def client_env(self) -> dict[str, str]:
        """Environment for client tools (pg_dump, pg_basebackup) run as the caller."""
        return postmaster.client_env(self.config.caller_env)

    def server_process_env(self) -> dict[str, str]:
        """Environment for the server's processes (postgres, initdb) run as run_as; nothing
        secret in it."""
        return postmaster.server_process_env(self.config.caller_env, self.run_as)

    # ---- databases ------------------------------------------------------------------------
    def ensure_database(self, name: str) -> bool:
        """Create the database if missing; True when it was created."""
        if name == self._seen_database:
            self._seen_database = None  # once: right after the start that connected to it
            return False
        return postmaster.ensure_database(self.sockdir, self.port, self.superuser, name)

    # ---- removal --------------------------------------------------------------------------
    def destroy(self) -> None:
        """Stop and remove the working dir — only one the tool created or a bare layout."""
        why = clusterdir.removal_refused(self.working_dir)
        if why is not None:
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


class _WorkdirLock(fslock.exclusive):
    """The working dir's lock; one that cannot be created is a _NoLock with the fix."""

    __slots__ = ()

    def __enter__(self) -> None:
        try:
            super().__enter__()
        except OSError as exc:
            raise _NoLock(
                f"cannot create the lock file {self._path} ({exc.strerror}): the working dir "
                "must be writable — fix its permissions or point PG_WORKING_DIR at a writable "
                "directory"
            ) from exc
