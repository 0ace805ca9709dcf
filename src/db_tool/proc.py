"""The one way this package starts a subprocess: argv lists, never a shell.

Every child gets close_fds and, unless the caller passes streams, stdin from /dev/null,
so a background server can never hold the caller's pipes open.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal builds an IntEnum: enum costs ms
import os

from db_tool.errors import Error, NotInstalledError, suppress
from db_tool.record import Frozen

TYPE_CHECKING = False  # no typing (nor dataclasses) at run time: this is on the hook path
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Mapping, Sequence
    from typing import IO, Any

# subprocess's values, so that the hook path (pid_alive, which) need not import subprocess.
PIPE = -1
STDOUT = -2
DEVNULL = -3


class Result(Frozen):
    """A finished child: its argv, exit code and output."""

    __slots__ = _fields = ("argv", "returncode", "out", "err")
    argv: tuple[str, ...]
    returncode: int
    out: str
    err: str

    def __init__(self, argv: tuple[str, ...], returncode: int, out: str, err: str) -> None:
        self._set(argv=argv, returncode=returncode, out=out, err=err)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class RunAs(Frozen):
    """Drop privileges to this account for the child (used when we are root)."""

    __slots__ = _fields = ("uid", "gid", "name", "home")
    uid: int
    gid: int
    name: str
    home: str

    def __init__(self, uid: int, gid: int, name: str, home: str) -> None:
        self._set(uid=uid, gid=gid, name=name, home=home)


def child_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """The environment of a child: env, else the one the command runs with (settings.runtime:
    what main(argv, env=...) was given), never os.environ behind its back."""
    if env is not None:
        return dict(env)
    from db_tool.settings import runtime

    return dict(runtime().child_env)


def which(program: str, env: Mapping[str, str] | None = None) -> str | None:
    """program on the PATH of env (default: the command's, as child_env), like shutil.which,
    without importing shutil (and its compression modules) on the hook path."""
    if "/" in program:
        return program if os.access(program, os.X_OK) and not os.path.isdir(program) else None
    for d in (child_env(env).get("PATH") or os.defpath).split(os.pathsep):
        candidate = os.path.join(d or ".", program)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def describe(argv: Sequence[str]) -> str:
    import shlex

    return shlex.join(str(a) for a in argv)


def _as_kwargs(user: RunAs | None, env: dict[str, str] | None) -> dict[str, Any]:
    if user is None:
        return {}
    as_user = child_env(env)
    as_user.update({"HOME": user.home, "USER": user.name, "LOGNAME": user.name})
    return {"user": user.uid, "group": user.gid, "extra_groups": [], "env": as_user}


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    input: str | None = None,
    stdout: int | IO[Any] | None = PIPE,
    stderr: int | IO[Any] | None = PIPE,
    timeout: float | None = None,
    user: RunAs | None = None,
    what: str | None = None,
    tied: bool = False,
) -> Result:
    """Run argv to completion; raise Error (command, rc, stderr) when check and rc != 0.
    `tied`: the child is killed when we die, even by kill -9 (die_with_parent)."""
    import subprocess

    argv = [os.fspath(a) for a in argv]
    full_env = child_env(env)
    kwargs: dict[str, Any] = {"env": full_env}
    kwargs.update(_as_kwargs(user, full_env))
    if tied:
        kwargs["preexec_fn"] = die_with_parent()
    try:
        completed = subprocess.run(
            argv,
            input=input,
            stdin=None if input is not None else DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            timeout=timeout,
            text=True,
            close_fds=True,
            check=False,
            **kwargs,
        )
    except FileNotFoundError as exc:
        raise NotInstalledError(
            f"{argv[0]} not found: install it or put it on PATH ({exc.strerror})"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise Error(f"{what or describe(argv)} timed out after {timeout}s") from exc
    result = Result(
        tuple(argv),
        completed.returncode,
        completed.stdout if isinstance(completed.stdout, str) else "",
        completed.stderr if isinstance(completed.stderr, str) else "",
    )
    if check and not result.ok:
        raise Error(
            f"{what or describe(argv)} failed with exit code {result.returncode}",
            detail=(result.err or result.out).strip(),
        )
    return result


def _lower_priority() -> None:
    os.nice(19)


def spawn_detached(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    low_priority: bool = False,
    pass_fds: Sequence[int] = (),
) -> None:
    """Start argv in its own session, all streams on /dev/null, and do not wait for it:
    background work that must outlive the caller (a shell hook, `$(...)`). pass_fds: our
    descriptors it gets under the same numbers; it gets no other.

    low_priority: nice 19 and, when `ionice` is installed, the idle I/O class, so that the
    work never slows down what the user runs next.

    A posix_spawn, as for the server (start_server): it runs on a warm fresh init while the
    server starts, and subprocess's import (threading, selectors, locale) is ~7 ms of that
    window. The child starts in our working dir, so give it absolute paths; a Python child
    changes to / itself (template_cache's __main__). Without /proc/self/fd to list our
    descriptors, or without `nice` (the niceness is then set by a preexec_fn), it is
    subprocess.Popen with cwd="/"."""
    argv = [os.fspath(a) for a in argv]
    preexec = None
    if low_priority:
        nice = which("nice", env)
        ionice = which("ionice", env)
        if nice is not None:
            argv = [nice, "-n", "19", *argv]
        else:
            preexec = _lower_priority
        if ionice is not None:
            argv = [ionice, "-c", "3", *argv]
    try:
        if preexec is None and os.path.isdir("/proc/self/fd"):
            program = which(argv[0], env)
            if program is None:
                raise FileNotFoundError(2, "No such file or directory")
            _reap_detached()
            _detached.append(_spawn_session([program, *argv[1:]], child_env(env), None,
                                            pass_fds))
            return
        import subprocess

        subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True, cwd="/",
            env=child_env(env), preexec_fn=preexec, pass_fds=tuple(pass_fds),
        )
    except FileNotFoundError as exc:
        raise NotInstalledError(
            f"{argv[0]} not found: install it or put it on PATH ({exc.strerror})"
        ) from exc


class Server:
    """A server we started: its pid, and poll() — its exit code once it has exited (reaped
    then), else None. The Popen of a child started through subprocess, if any."""

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self.popen = popen
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.popen is not None:
            return self.popen.poll()
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere (a SIGCHLD handler): gone
                self.returncode = -1
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def start_server(
    argv: Sequence[str],
    *,
    log_fd: int,
    env: Mapping[str, str],
    user: RunAs | None = None,
) -> Server:
    """Start a long-running server (postgres) in its own session: stdin on /dev/null,
    stdout and stderr appended to log_fd, no descriptor of ours beyond those, the signals
    Python ignores (SIGPIPE, SIGXFSZ) back to their default, run as `user` (no supplementary
    groups). Not tied to us: it outlives the caller (a shell hook); the caller owns the
    Server (poll/kill).

    Without an account to switch to, it is a posix_spawn (a vfork and an exec, without
    importing subprocess — threading, selectors, locale: milliseconds of a reuse before the
    server is even started). Its cwd is ours until the server enters its data dir, the first
    thing it does, so argv[0] and the data dir (-D) must be absolute. With an account, or
    without /proc/self/fd to list the descriptors to close, it is subprocess.Popen with
    cwd="/"."""
    argv = [os.fspath(a) for a in argv]
    try:
        if user is None and os.path.isabs(argv[0]) and os.path.isdir("/proc/self/fd") and \
                all(os.path.isabs(argv[i + 1]) for i in range(len(argv) - 1) if argv[i] == "-D"):
            return Server(_spawn_session(argv, env, log_fd))
        import subprocess

        return _popen_server(subprocess, argv, log_fd, env, user)
    except FileNotFoundError as exc:
        raise NotInstalledError(
            f"{argv[0]} not found: install it or put it on PATH ({exc.strerror})"
        ) from exc


_detached: list[int] = []  # children of spawn_detached not yet reaped


def _reap_detached() -> None:
    """Reap the detached children that have exited (as subprocess does for a Popen dropped
    unwaited): a long-lived caller (the pytest plugin, `database test`) keeps no zombies."""
    for pid in list(_detached):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _detached.remove(pid)


def _spawn_session(argv: list[str], env: Mapping[str, str], out_fd: int | None,
                   keep: Sequence[int] = ()) -> int:
    """posix_spawn argv (argv[0] a path) in a new session: stdin on /dev/null, stdout and
    stderr on out_fd (None: /dev/null), and of our descriptors only `keep`, under their own
    numbers. Its pid."""
    actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
    if out_fd is None:
        actions += [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_WRONLY, 0) for fd in (1, 2)]
    else:
        actions += [(os.POSIX_SPAWN_DUP2, out_fd, 1), (os.POSIX_SPAWN_DUP2, out_fd, 2)]
    # close_fds: what the caller's shell passed us without close-on-exec (a pipe on fd 3+
    # held open by the server would make `x=$(postgres-init ...)` hang); ours are all
    # close-on-exec.
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd != out_fd and fd not in keep:
            try:
                inheritable = os.get_inheritable(fd)
            except OSError:  # the listing's own descriptor, closed by now
                continue
            if inheritable:
                actions.append((os.POSIX_SPAWN_CLOSE, fd))
    made_inheritable = [fd for fd in keep if not os.get_inheritable(fd)]
    try:
        for fd in made_inheritable:
            os.set_inheritable(fd, True)
        return os.posix_spawn(argv[0], argv, dict(env), file_actions=actions, setsid=True,
                              setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ))
    finally:
        for fd in made_inheritable:
            os.set_inheritable(fd, False)


def _popen_server(subprocess: Any, argv: list[str], log_fd: int, env: Mapping[str, str],
                  user: RunAs | None) -> Server:
    child = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, close_fds=True,
        start_new_session=True, cwd="/", env=dict(env),
        user=user.uid if user else None, group=user.gid if user else None,
        extra_groups=[] if user else None,
    )
    return Server(child.pid, child)


def run_interactive(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> int:
    """Run argv on the caller's terminal (stdin/stdout/stderr inherited): $EDITOR, $PAGER.

    Returns the exit code; a missing program is NotInstalledError (127)."""
    import subprocess

    argv = [os.fspath(a) for a in argv]
    try:
        completed = subprocess.run(
            argv, env=child_env(env), cwd=cwd, close_fds=True,
            check=False,
        )
    except FileNotFoundError as exc:
        raise NotInstalledError(
            f"{argv[0]} not found: install it or point the variable naming it elsewhere "
            f"({exc.strerror})"
        ) from exc
    return completed.returncode


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn: the child gets SIGKILL when we die, even by kill -9 (Linux
    PR_SET_PDEATHSIG), so a long child (initdb, cp, pg_basebackup, tar) is never left writing
    after us. None where prctl is unavailable.

    prctl is looked up here, in the parent: importing in a forked child can deadlock. It runs
    after the child's setuid (CPython drops privileges before preexec_fn), which would
    otherwise clear the setting."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, int(_signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # we died before prctl took effect
            os._exit(1)

    return preexec


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: int | IO[Any] | None = PIPE,
    stdout: int | IO[Any] | None = PIPE,
    stderr: int | IO[Any] | None = PIPE,
    cwd: str | os.PathLike[str] | None = None,
    tied: bool = False,
) -> subprocess.Popen[bytes]:
    """Start argv without waiting, for a coprocess we talk to over pipes (binary streams).
    The caller owns the Popen and must close its pipes and wait(); a missing program → 127.
    `tied`: the child is killed when we die (die_with_parent)."""
    import subprocess

    argv = [os.fspath(a) for a in argv]
    try:
        return subprocess.Popen(
            argv, stdin=stdin, stdout=stdout, stderr=stderr, close_fds=True,
            env=child_env(env), cwd=cwd,
            preexec_fn=die_with_parent() if tied else None,
        )
    except FileNotFoundError as exc:
        raise NotInstalledError(
            f"{argv[0]} not found: install it or put it on PATH ({exc.strerror})"
        ) from exc


# The guard shell of run_group(): the command runs in the guard's own process group; the
# guard's stdin is a pipe only we write to, so when we are gone (exit, exception, kill -9)
# `cat` sees EOF and the whole group dies — also what the command forked (pg_basebackup's
# WAL streamer), which no PR_SET_PDEATHSIG reaches.
_GUARD = """\
exec 3<&0
"$@" 3<&- </dev/null &
child=$!
{ cat <&3 >/dev/null; kill -9 -$$; } >/dev/null 2>&1 &
watcher=$!
exec 3<&-
wait "$child"
rc=$?
kill "$watcher" 2>/dev/null
exit "$rc"
"""


def run_group(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stderr: int | None = PIPE,
    what: str | None = None,
) -> Result:
    """Run argv to completion in its own process group that dies with us, however we die
    (see _GUARD); raise Error (what, rc, stderr) when it fails. stdout is discarded."""
    import subprocess

    argv = [os.fspath(a) for a in argv]
    try:
        child = subprocess.Popen(
            ["sh", "-c", _GUARD, "db-tool-guard", *argv], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=stderr, close_fds=True, start_new_session=True,
            env=child_env(env),
        )
    except FileNotFoundError as exc:
        raise NotInstalledError(f"sh not found: install it or put it on PATH ({exc.strerror})"
                                ) from exc
    try:
        err = child.stderr.read().decode("utf-8", "replace") if child.stderr else ""
        rc = child.wait()
    except BaseException:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, _signal.SIGKILL)
        child.wait()
        raise
    finally:
        for pipe in (child.stdin, child.stderr):
            if pipe is not None:
                pipe.close()
    if rc == 127 and "not found" in err:
        raise NotInstalledError(f"{argv[0]} not found: install it or put it on PATH")
    if rc != 0:
        raise Error(f"{what or describe(argv)} failed with exit code {rc}", detail=err.strip())
    return Result(tuple(argv), rc, "", err)


def pid_alive(pid: int) -> bool:
    """Whether pid is a live process (ours or not); a zombie counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # A zombie (a killed server nobody reaped: pid 1 of many containers never does) still
    # "exists"; treat it as gone.
    # Bytes: a text open looks up its codec (encodings.ascii: ~1 ms on the first stop poll).
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b") ", 1)[-1][:1] != b"Z"
    except OSError:
        return True


def kill_servers_left_in(path: str) -> None:
    """SIGKILL the PostgreSQL processes whose working directory is inside `path`, and wait
    (≤ 2 s) until they are gone.

    For a build dir whose maker was killed: initdb dies with us (die_with_parent), but the
    bootstrap or single-user `postgres` it had started is its child, not ours. It runs on in
    the dir (it chdirs into its data dir) until it reads EOF and checkpoints, racing the
    removal of the dir. Only processes named postgres/initdb are touched; what we may not
    look at (another account's) is left alone."""
    # The dir itself as named, never what a link of that name points to: a link planted in a
    # directory another account controls must not make root kill a server elsewhere.
    head, tail = os.path.split(os.path.abspath(path))
    inside = os.path.join(os.path.realpath(head), tail)
    if not os.path.isdir(inside) or os.path.islink(inside):
        return
    pids = []
    with suppress(OSError):
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                cwd = os.readlink(f"/proc/{name}/cwd")
                with open(f"/proc/{name}/comm", encoding="ascii", errors="replace") as fh:
                    comm = fh.read().strip()
            except OSError:
                continue
            if comm in ("postgres", "initdb") and (
                    cwd == inside or cwd.startswith(inside + "/")):
                with suppress(OSError):
                    os.kill(int(name), _signal.SIGKILL)
                    pids.append(int(name))
    import time

    deadline = time.monotonic() + 2
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
