"""A pool of template copies made ahead of need by a background thread.

A test asks for a database and gets one that was copied while earlier tests ran: handing it
out is `ALTER DATABASE … RENAME` (under a millisecond), not the copy (tens of ms). Used ones
are dropped by the same threads when the pool is full (or too many wait), so neither the copy
nor the drop is on a test's path. Names carry the owning process id, so databases of a process
that died (a killed test run) are recognised and dropped by the next pool on the same cluster.

The copies can live in a tablespace on a RAM disk (scratch_tablespace): they are thrown away
after one test anyway, and a disk file system may make creating and removing their few hundred
files the whole cost — journal-less ext4, for one, skips every inode freed in the last minute
when it allocates one, so a test run that churns copies makes each new copy slower (measured:
a copy + drop 375 ms on ext4 against 28 ms on tmpfs after a few hundred copies).
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from db_tool import clone, output, pgwire, proc
from db_tool.cluster import Cluster
from db_tool.errors import Error

POOL_PREFIX = "dbt_p_"
TEST_PREFIX = "dbt_t_"
TABLESPACE_PREFIX = "dbt_ts_"
_OWNED = re.compile(r"^dbt_[pt]_(\d+)_")
_OWNED_TABLESPACE = re.compile(r"^dbt_ts_(\d+)$")
_LOCATION_PREFIX = "db-tool-copies-"
RAM_DIRS = ("/dev/shm",)


@dataclass(frozen=True)
class Handed:
    name: str
    waited: float  # seconds the caller waited for a copy to become ready (0 when one was)
    conn: Any = None  # a connection opened in the background (acquire(connected=True))


class Pool:
    def __init__(self, cluster: Cluster, template: str, size: int = 4, workers: int = 2,
                 tablespace: str | None = None) -> None:
        # FILE_COPY copies the files beside the buffer cache; WAL_LOG (15's default) would
        # leave every copy as dirty buffers that the checkpoint each DROP DATABASE requests
        # must write out — that made drops, not copies, the cost per test.
        self.strategy = "FILE_COPY" if cluster.install.major >= 15 else None
        self.cluster = cluster
        self.template = template
        self.tablespace = tablespace
        self.size = max(1, size)
        self._tag = f"{os.getpid()}"
        self._seq = 0
        self._made = 0
        self._creating = 0
        # Ready copies, each with the connection opened to it in the background (or None).
        self._ready: collections.deque[tuple[str, Any]] = collections.deque()
        self._connecting = 0
        # Set (connect_with) once a test asks for a connection: from then on the threads
        # open one to each ready copy, so such a test waits neither for a copy nor for a
        # server process to start (a connection costs 5-20 ms, most of what was left).
        self._connector: Callable[[str], Any] | None = None
        self._drops: collections.deque[str] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._run, args=(i == 0,), name=f"db-tool-pool-{i}",
                             daemon=True)
            for i in range(max(1, workers))
        ]
        self._conn: pgwire.Connection | None = None  # the caller's (renames)

    # ---- caller side ---------------------------------------------------------------------
    def start(self) -> Pool:
        for thread in self._threads:
            thread.start()
        return self

    def _connection(self) -> pgwire.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> pgwire.Connection:
        c = self.cluster
        return pgwire.connect(c.sockdir, c.port, c.superuser, "postgres")

    def next_name(self, label: str) -> str:
        """A fresh database name: owner pid, sequence number, then as much of label as fits."""
        self._seq += 1
        head = f"{TEST_PREFIX}{self._tag}_{self._seq}_"
        tail = re.sub(r"[^a-z0-9_]+", "_", label.lower()).strip("_")
        return (head + tail)[: clone.NAME_MAX]

    def connect_with(self, connector: Callable[[str], Any]) -> None:
        """Open connections to ready copies in the background: connector(database name)."""
        with self._cond:
            if self._connector is None:
                self._connector = connector
                self._cond.notify_all()

    def acquire(self, name: str, *, connected: bool = False) -> Handed:
        """A fresh copy of the template, renamed to `name` — unless it comes with a
        connection opened in the background (a database with a session cannot be renamed):
        then it keeps its pool name and Handed.conn is the connection. connected=True
        prefers such a copy, False one without (a connection it gets anyway is closed)."""
        started = time.monotonic()
        with self._cond:
            while not self._ready:
                if self._error is not None:
                    raise Error(f"preparing test databases failed: {self._error}")
                if not any(t.is_alive() for t in self._threads):
                    raise Error("the test database pool is closed")
                self._cond.wait(1.0)
            index = next((i for i, (_, c) in enumerate(self._ready) if (c is None) != connected),
                         0)
            ready, conn = self._ready[index]
            del self._ready[index]
            self._cond.notify_all()
        waited = time.monotonic() - started
        if conn is not None:
            if not connected:
                conn.close()
                conn = None
            return Handed(ready, waited, conn)
        clone.rename(self._connection(), ready, name)
        return Handed(name, waited)

    def release(self, name: str) -> None:
        """Drop `name` later, in the background."""
        with self._cond:
            self._drops.append(name)
            self._cond.notify_all()

    def close(self) -> None:
        """Stop preparing; drop what is ready and what was released (waits for it)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---- the background threads -----------------------------------------------------------
    # Copies come first: a released database is dropped while the pool is full, or when more
    # than `size` released ones wait (tests faster than the copies would otherwise leave every
    # drop for close: disk growing with the suite and minutes of drops at the end), or at
    # close. The oldest is dropped first: its test's sessions are long gone, so DROP DATABASE
    # does not wait for them.
    def _run(self, first: bool) -> None:
        try:
            with self._connect() as conn:
                if first:
                    self._drop_orphans(conn)
                self._loop(conn)
        except BaseException as exc:  # reported to the next acquire()
            with self._cond:
                self._error = exc
                self._cond.notify_all()
            return
        with self._cond:
            self._cond.notify_all()

    def _loop(self, conn: pgwire.Connection) -> None:
        while True:
            with self._cond:
                while (not self._stopping and not self._drops and not self._unconnected()
                       and len(self._ready) + self._creating + self._connecting >= self.size):
                    self._cond.wait()
                if self._stopping:
                    leftovers = self._take_all()
                    break
                task, name = self._next_task()
            if task == "connect":
                self._open_connection(name)
            elif task == "copy":
                made = False
                try:
                    # No warm-up session: a file copy carries the template's relcache init
                    # file (ensure_template makes sure there is one), so the test's first
                    # connection is as cheap as any, and with nobody connected to the copy
                    # the hand-out rename never waits for a leaving session.
                    self._copy(conn, name)
                    made = True
                finally:
                    with self._cond:
                        self._creating -= 1
                        if made:
                            self._ready.append((name, None))
                        self._cond.notify_all()
            else:
                clone.drop(conn, name)
        for name in leftovers:
            clone.drop(conn, name)

    def _copy(self, conn: pgwire.Connection, name: str) -> None:
        tablespace = self.tablespace
        try:
            clone.clone(conn, name, self.template, strategy=self.strategy,
                        tablespace=tablespace)
        except clone.DiskFull as exc:
            if tablespace is None:
                raise
            # The RAM disk is shared with the whole machine and may fill up mid-run: the
            # copies from now on go to the data dir instead of failing every test after it.
            if self.tablespace is not None:  # once, not once per thread
                self.tablespace = None
                output.warn(f"test databases go to the data dir from now on: {exc.message}")
            clone.clone(conn, name, self.template, strategy=self.strategy)

    def _next_task(self) -> tuple[str, str]:
        """("connect" | "copy" | "drop", database), taken under the lock."""
        # …but never both threads dropping while a test may be waiting for a copy.
        backlog = len(self._drops) > self.size and bool(self._creating or self._ready)
        if self._connector is not None and not backlog:
            # A ready copy without its connection: cheaper than a copy, and it is what the
            # next test waits for.
            i = next((i for i, (_, c) in enumerate(self._ready) if c is None), -1)
            if i >= 0:
                name = self._ready[i][0]
                del self._ready[i]
                self._connecting += 1
                return "connect", name
        if len(self._ready) + self._creating + self._connecting < self.size and not backlog:
            self._made += 1
            self._creating += 1
            return "copy", f"{POOL_PREFIX}{self._tag}_{self._made}"
        return "drop", self._drops.popleft()

    def _open_connection(self, name: str) -> None:
        opened: Any = None
        connector = self._connector
        try:
            if connector is not None:
                opened = connector(name)
        except Exception as exc:  # the test connects itself, as without a connector
            output.debug(f"no connection opened ahead to {name}: {exc}")
            self._connector = None
        finally:
            with self._cond:
                self._connecting -= 1
                self._ready.append((name, opened))
                self._cond.notify_all()

    def _take_all(self) -> list[str]:
        """At close: what is ready (its connections closed) and what was released."""
        for _, open_conn in self._ready:
            if open_conn is not None:
                with contextlib.suppress(Exception):
                    open_conn.close()
        leftovers = [n for n, _ in self._ready] + list(self._drops)
        self._ready.clear()
        self._drops.clear()
        return leftovers

    def _unconnected(self) -> bool:
        return self._connector is not None and any(c is None for _, c in self._ready)

    def _drop_orphans(self, conn: pgwire.Connection) -> None:
        rows = conn.query("SELECT datname FROM pg_database WHERE datname LIKE 'dbt\\_%'")
        for (name,) in rows:
            m = _OWNED.match(str(name))
            if m and int(m.group(1)) != os.getpid() and not proc.pid_alive(int(m.group(1))):
                with contextlib.suppress(Error):
                    clone.drop(conn, str(name))
        rows = conn.query("SELECT spcname, pg_tablespace_location(oid) FROM pg_tablespace "
                          "WHERE spcname LIKE 'dbt\\_ts\\_%'")
        for name, location in rows:
            m = _OWNED_TABLESPACE.match(str(name))
            if m and int(m.group(1)) != os.getpid() and not proc.pid_alive(int(m.group(1))):
                _drop_tablespace(conn, str(name), str(location or ""))


# ---- copies on a RAM disk ------------------------------------------------------------------
def _tmpfs_mounts() -> set[str]:
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return set()
    found = set()
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "tmpfs":
            found.add(fields[1].replace("\\040", " "))
    return found


def ram_dir(need_bytes: int, candidates: tuple[str, ...] = RAM_DIRS) -> str | None:
    """The first candidate that is a tmpfs mount with need_bytes free, or None."""
    mounts = _tmpfs_mounts()
    for candidate in candidates:
        real = os.path.realpath(candidate)
        if real not in mounts:
            continue
        try:
            st = os.statvfs(real)
        except OSError:
            continue
        if st.f_bavail * st.f_frsize >= need_bytes and os.access(real, os.W_OK | os.X_OK):
            return real
    return None


def ram_need(template_bytes: int, size: int, processes: int = 1) -> int:
    """Room to ask of a RAM disk for a pool of `size`: the ready copies, as many released ones
    waiting to be dropped, a few in use — for each of `processes` pools (xdist workers, at
    least two: another run may share the machine) — and 64 MiB to spare."""
    return max(2, processes) * template_bytes * (2 * size + 4) + (64 << 20)


@contextlib.contextmanager
def scratch_tablespace(cluster: Cluster, parent: str) -> Iterator[str | None]:
    """A tablespace of this process in a new directory under `parent`, dropped (with the
    directory) at the end; None when it cannot be made (the copies then stay in the data
    dir). One that cannot be dropped at the end (a kept database is in it) is left for the
    next pool on the cluster, which drops it once this process is gone."""
    name = f"{TABLESPACE_PREFIX}{os.getpid()}"
    location = None
    try:
        location = tempfile.mkdtemp(prefix=_LOCATION_PREFIX, dir=parent)
        account = cluster.run_as
        if account is not None:
            _give(location, account.uid, account.gid)
        with pgwire.connect(cluster.sockdir, cluster.port, cluster.superuser, "postgres") as c:
            c.query(f"CREATE TABLESPACE {pgwire.quote_ident(name)} "
                    f"LOCATION {pgwire.quote_literal(location)}")
    except (OSError, pgwire.PgError) as exc:
        output.debug(f"test databases stay in the data dir: no tablespace in {parent} ({exc})")
        if location is not None:
            shutil.rmtree(location, ignore_errors=True)
        yield None
        return
    try:
        yield name
    finally:
        with contextlib.suppress(pgwire.PgError, OSError), pgwire.connect(
            cluster.sockdir, cluster.port, cluster.superuser, "postgres"
        ) as c:
            _drop_tablespace(c, name, location)


def _give(location: str, uid: int, gid: int) -> None:
    """chown the directory mkdtemp just made, never through what replaced it: the parent
    (--db-tool-scratch=DIR) may be another account's, who can swap our directory for a link
    to something of root's before we chown it."""
    fd = os.open(location, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o7777 != 0o700:
            raise OSError(f"{location} is no longer the directory made for the copies")
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)


def _drop_tablespace(conn: pgwire.Connection, name: str, location: str) -> None:
    ours = os.path.basename(location).startswith(_LOCATION_PREFIX)
    for attempt in range(2):
        try:
            conn.query(f"DROP TABLESPACE IF EXISTS {pgwire.quote_ident(name)}")
            break
        except pgwire.PgError:
            if attempt or not ours or not _remove_stale_dirs(conn, location):
                return  # not empty: a kept database is in it
    if ours:
        shutil.rmtree(location, ignore_errors=True)


def _remove_stale_dirs(conn: pgwire.Connection, location: str) -> bool:
    """Remove the directories of databases that do not exist (a server that stopped in the
    middle of a CREATE DATABASE leaves the copied files without a catalog entry, and DROP
    TABLESPACE refuses a non-empty one); True when there were any."""
    oids = {str(r[0]) for r in conn.query("SELECT oid::text FROM pg_database")}
    removed = False
    try:
        versions = [os.path.join(location, v) for v in os.listdir(location)
                    if v.startswith("PG_")]
        for version in versions:
            for entry in os.listdir(version):
                if entry.isdigit() and entry not in oids:
                    shutil.rmtree(os.path.join(version, entry), ignore_errors=True)
                    removed = True
    except OSError:
        return removed
    return removed
