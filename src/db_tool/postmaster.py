"""The server process of one data dir: start it, wait until it serves, stop it.

The server is spawned directly (not through pg_ctl), in its own session with stdin on
/dev/null and stdout/stderr on a log file, so `x=$(postgres-init --print-env)` never hangs.
Readiness is our child's pid in postmaster.pid with status "ready", then a real connection;
both are polled every few milliseconds. Stopping is SIGINT ("fast" shutdown) and waiting for
the postmaster to exit.

Everything takes explicit values (data dir, socket dir, port, installation, account).
"""

from __future__ import annotations

# _signal, not signal: postgres-cleanup needs three numbers, not the IntEnum of every signal
# (signal imports enum, milliseconds of its start-up).
import _signal  # type: ignore[import-not-found]
import itertools
import os
import time

from db_tool import proc
from db_tool.clusterdir import RUNTIME_CONF, socket_path
from db_tool.errors import Error, ExitCode, suppress
from db_tool.startfail import StartLog, connect_failed, start_failed

# pgwire (and with it socket) loads once the server is spawned, while it starts up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0


def pidfile_lines(datadir: Path) -> list[str]:
    try:
        with open(datadir / "postmaster.pid", encoding="utf-8") as fh:
            return fh.read().splitlines()
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return []


def pid_serves(pid: int, datadir: Path) -> bool:
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


def running_pid(datadir: Path) -> int | None:
    """PID of the live postmaster of datadir, or None (no or stale postmaster.pid)."""
    lines = pidfile_lines(datadir)
    if not lines or not lines[0].strip().isdigit():
        return None
    pid = int(lines[0])
    return pid if pid_serves(pid, datadir) else None


def serves_at(datadir: Path, sockdir: Path, port: int) -> bool:
    """Does the running server of datadir listen on this port and socket dir?"""
    lines = pidfile_lines(datadir)
    return len(lines) >= 5 and lines[3].strip() == str(port) and lines[4].strip() == str(sockdir)


def _socket_lock(sockdir: Path, port: int) -> str:
    return socket_path(sockdir, port) + ".lock"


def _first_line(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.readline().strip()
    except (OSError, UnicodeDecodeError):
        return None


def socket_holder(sockdir: Path, port: int) -> int | None:
    """PID of a live process holding the socket's lock file (maybe another cluster)."""
    first = _first_line(_socket_lock(sockdir, port))
    if first is None:
        return None
    if first.isdigit() and proc.pid_alive(int(first)):
        return int(first)
    return None


def clear_dead_pidfile(datadir: Path, sockdir: Path, port: int) -> None:
    """A postmaster.pid (or the socket's lock file) naming a dead or zombie process is
    stale for sure; PostgreSQL itself cannot tell a zombie from a live server and would
    refuse to start."""
    lines = pidfile_lines(datadir)
    if lines and lines[0].strip().isdigit() and not proc.pid_alive(int(lines[0])):
        with suppress(FileNotFoundError):
            os.unlink(os.path.join(datadir, "postmaster.pid"))
    lock = _socket_lock(sockdir, port)
    first = _first_line(lock)
    if first is not None and first.isdigit() and not proc.pid_alive(int(first)):
        for stale in (lock, socket_path(sockdir, port)):
            with suppress(FileNotFoundError):
                os.unlink(stale)


def spawn(postgres: str, datadir: Path, server_log: Path, log_dir: Path,
          account: proc.RunAs | None, env: dict[str, str]
          ) -> tuple[proc.Server, StartLog]:
    """Start `postgres -D datadir` detached, its output appended to server_log."""
    log_fd = os.open(server_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    try:
        log = StartLog(server_log, log_dir, os.fstat(log_fd).st_size, time.time(), account)
        child = proc.start_server([postgres, "-D", str(datadir)], log_fd=log_fd, env=env,
                                  user=account)
    finally:
        os.close(log_fd)
    return child, log


def await_ready(child: proc.Server, log: StartLog, datadir: Path, sockdir: Path,
                port: int, superuser: str, database: str = "postgres") -> bool:
    """Wait for the server *we spawned*: a postmaster.pid left by a killed server says
    "ready" too, so only a pid file naming our child counts, and a child that exits is
    diagnosed at once. The first connection goes to `database` (the one the caller wants
    next, saving a second backend start); True when it exists."""
    deadline = time.monotonic() + START_TIMEOUT
    pause = 0.001
    from db_tool import pgwire  # now, while the server starts, not once it is ready

    while True:
        if child.poll() is not None:
            start_failed(log, datadir, sockdir, port)
        lines = pidfile_lines(datadir)
        if (len(lines) >= 8 and lines[0].strip() == str(child.pid)
                and lines[7].strip() == "ready"):
            break
        if time.monotonic() > deadline:
            raise Error(
                f"PostgreSQL did not become ready within {START_TIMEOUT:.0f}s; it was "
                "stopped again",
                detail=log.tail(),
            )
        time.sleep(pause)
        pause = min(pause * 1.5, 0.002)  # a read of postmaster.pid costs ~20 µs
    verify_listening(lines, datadir, sockdir, port)
    while True:
        try:
            pgwire.connect(sockdir, port, superuser, database, timeout=2.0).close()
            return True
        except pgwire.PgError as exc:
            if exc.code == "3D000":
                return False  # up and answering; only that database is missing
            if exc.code in ("57P03", "08006") and time.monotonic() < deadline:
                if child.poll() is not None:
                    start_failed(log, datadir, sockdir, port)
                time.sleep(0.002)
                continue
            if database != "postgres" and exc.code != "28000":
                # That database refuses us (datallowconn off, say): readiness is decided on
                # `postgres`, and the database's problem reported where it is used.
                database = "postgres"
                continue
            connect_failed(exc, log, datadir, superuser)


def verify_listening(lines: list[str], datadir: Path, sockdir: Path, port: int) -> None:
    """The running server must listen where we said and nowhere else: a conf file it
    could not read (a root umask of 077) or an override would open TCP or another socket."""
    got_port, got_sockdir, listen = (ln.strip() for ln in lines[3:6])
    problems = []
    if got_port != str(port):
        problems.append(f"port {got_port} instead of {port}")
    if got_sockdir != str(sockdir):
        problems.append(f"its socket in {got_sockdir or '(none)'} instead of {sockdir}")
    if listen:
        problems.append(f"listen_addresses = '{listen}' (TCP) instead of ''")
    sock = socket_path(sockdir, port)
    with suppress(OSError):
        mode = os.stat(sock).st_mode & 0o777
        if mode & 0o077:
            problems.append(f"socket {sock} with mode {mode:o} instead of 700")
    if problems:
        raise Error(
            f"PostgreSQL started with {', '.join(problems)}, so db-tool stopped it again: "
            f"check that {datadir / RUNTIME_CONF} is readable by the server and that "
            "no other configuration overrides it"
        )


def kill(child: proc.Server) -> None:
    """Stop a server we just started and must not keep: fast shutdown, then immediate."""
    for sig, wait in ((_signal.SIGINT, 20.0), (_signal.SIGQUIT, 10.0), (_signal.SIGKILL, 10.0)):
        if child.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.kill(child.pid, sig)
        deadline = time.monotonic() + wait
        while child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)


def stop(pid: int, timeout: float, log_dir: Path) -> None:
    """Fast shutdown of the postmaster `pid` (sessions rolled back, a checkpoint written),
    waited for with fine polling."""
    with suppress(ProcessLookupError):
        os.kill(pid, _signal.SIGINT)
    deadline = time.monotonic() + timeout
    pause = 0.0005
    while proc.pid_alive(pid):
        if time.monotonic() > deadline:
            raise Error(
                f"PostgreSQL (pid {pid}) did not stop within {timeout:.0f}s; see {log_dir}",
                ExitCode.BUG,
            )
        time.sleep(pause)
        pause = min(pause * 1.5, 0.001)  # kill(pid, 0) and a /proc read: a few µs


def ensure_database(sockdir: Path, port: int, superuser: str, name: str) -> bool:
    """Create the database if missing; True when it was created."""
    from db_tool import pgwire

    try:
        pgwire.connect(sockdir, port, superuser, name).close()
        return False
    except pgwire.PgError as exc:
        if exc.code != "3D000":  # invalid_catalog_name: does not exist
            raise Error(f"cannot connect to database {name}: {exc.message}") from exc
    try:
        conn = pgwire.connect(sockdir, port, superuser, "postgres")
    except pgwire.PgError as exc:
        if exc.code != "3D000":
            raise Error(f"cannot connect to create database {name}: {exc.message}") from exc
        conn = pgwire.connect(sockdir, port, superuser, "template1")
    with conn:
        try:
            conn.query(f"CREATE DATABASE {pgwire.quote_ident(name)}")
        except pgwire.PgError as exc:
            if exc.code != "42P04":  # created concurrently
                raise Error(f"cannot create database {name}: {exc.message}") from exc
    return True


def client_env(caller: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Environment for client tools (pg_dump, pg_basebackup) run as the caller: the caller's
    without libpq's PG* variables, in the C locale."""
    env = {k: v for k, v in caller if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


# What a server process (postgres, initdb) may see of the caller's environment: nothing
# secret (HECTIC_DOTENV_CONTENT, DB_URL, tokens ...), since the server account can read it.
_SERVER_ENV_KEEP = ("PATH", "TZ", "TMPDIR", "LD_LIBRARY_PATH")


def server_process_env(caller: Iterable[tuple[str, str]],
                       account: proc.RunAs | None) -> dict[str, str]:
    """Environment for the server's processes: PATH, TZ, TMPDIR, LD_LIBRARY_PATH of the
    caller's, the C locale, and the account's HOME/USER/LOGNAME."""
    env = {k: v for k, v in caller if k in _SERVER_ENV_KEEP}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["LC_ALL"] = "C"
    if account is not None:
        env.update(HOME=account.home, USER=account.name, LOGNAME=account.name)
    else:
        import pwd

        with suppress(KeyError):
            entry = pwd.getpwuid(os.getuid())
            env.update(HOME=entry.pw_dir or "/", USER=entry.pw_name, LOGNAME=entry.pw_name)
    return env
