"""proc, the one way db-tool starts processes: results and errors, the child's environment,
children that die with us (tied, run_group) and ones that must not (spawn_detached)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from db_tool import proc, settings
from db_tool.errors import Error, NotInstalledError


def _wait_for(path: Path, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().endswith("\n")):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.02)
    return path.read_text()


def _wait_gone(pid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while proc.pid_alive(pid):
        assert time.monotonic() < deadline, f"process {pid} outlived its parent"
        time.sleep(0.02)


def _python(code: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    """A separate Python process running code with db_tool importable (our victim parent)."""
    return subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path,
                            stdin=subprocess.DEVNULL)


def test_run_returns_output_and_exit_code() -> None:
    r = proc.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (r.returncode, r.out, r.err, r.ok) == (3, "out\n", "err\n", False)
    assert r.argv == ("sh", "-c", "echo out; echo err >&2; exit 3")
    assert proc.run(["true"]).ok


def test_run_failure_is_one_error_naming_the_step_with_stderr_as_detail() -> None:
    with pytest.raises(Error) as failed:
        proc.run(["sh", "-c", "echo why >&2; exit 4"], what="the step")
    assert failed.value.message == "the step failed with exit code 4"
    assert failed.value.detail == "why"
    with pytest.raises(Error) as failed:
        proc.run(["sh", "-c", "exit 5"])
    assert failed.value.message == "sh -c 'exit 5' failed with exit code 5"


def test_run_missing_program_is_127() -> None:
    with pytest.raises(NotInstalledError) as missing:
        proc.run(["no-such-program-xyz"])
    assert int(missing.value.exit_code) == 127 and "no-such-program-xyz" in missing.value.message


def test_run_timeout_is_an_error() -> None:
    with pytest.raises(Error, match=r"sleeping timed out after 0\.2s"):
        proc.run(["sleep", "10"], timeout=0.2, what="sleeping")


def test_run_stdin_is_the_input_or_nothing() -> None:
    assert proc.run(["cat"], input="fed\n").out == "fed\n"
    assert proc.run(["cat"], timeout=10).out == ""  # /dev/null: cat ends at once


def test_child_env_is_the_given_env_else_the_commands(tmp_path: Path) -> None:
    script = ["sh", "-c", 'echo "${DB_TOOL_TEST_MARK-unset}"']
    assert proc.run(script, env={"DB_TOOL_TEST_MARK": "given"}).out == "given\n"
    settings.use({**os.environ, "DB_TOOL_TEST_MARK": "installed"})
    try:
        assert proc.run(script).out == "installed\n"
        assert proc.child_env(None)["DB_TOOL_TEST_MARK"] == "installed"
        assert proc.child_env({"A": "1"}) == {"A": "1"}
    finally:
        settings.forget()
    assert proc.run(script).out == "unset\n"


def test_which_searches_the_path_of_env(tmp_path: Path) -> None:
    tool = tmp_path / "my-tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert proc.which("my-tool", {"PATH": f"/nonexistent:{tmp_path}"}) == str(tool)
    assert proc.which("my-tool", {"PATH": "/nonexistent"}) is None


def test_describe_quotes_for_a_shell() -> None:
    assert proc.describe(["psql", "-c", "select 'a b'"]) == "psql -c 'select '\"'\"'a b'\"'\"''"


def test_spawn_talks_over_pipes() -> None:
    child = proc.spawn(["cat"])
    out, _ = child.communicate(b"over the pipe", timeout=10)
    assert (child.returncode, out) == (0, b"over the pipe")
    with pytest.raises(NotInstalledError):
        proc.spawn(["no-such-program-xyz"])


def test_run_interactive_returns_the_exit_code_and_missing_is_127() -> None:
    assert proc.run_interactive(["sh", "-c", "exit 6"]) == 6
    with pytest.raises(NotInstalledError):
        proc.run_interactive(["no-such-program-xyz"])


def test_tied_child_dies_with_its_parent_even_by_kill_9(tmp_path: Path) -> None:
    parent = _python(
        "from db_tool import proc\n"
        "proc.run(['sh', '-c', 'echo $$ > child.pid; exec sleep 60'], tied=True)\n", tmp_path)
    child = int(_wait_for(tmp_path / "child.pid"))
    assert proc.pid_alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    _wait_gone(child)


def test_run_group_kills_grandchildren_when_the_caller_dies(tmp_path: Path) -> None:
    """What the command forked (pg_basebackup's WAL streamer) goes too: no PDEATHSIG."""
    parent = _python(
        "from db_tool import proc\n"
        "proc.run_group(['sh', '-c', 'sleep 60 & echo $! > grandchild.pid; wait'])\n", tmp_path)
    grandchild = int(_wait_for(tmp_path / "grandchild.pid"))
    assert proc.pid_alive(grandchild)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    _wait_gone(grandchild)


def test_run_group_failure_and_missing_program() -> None:
    with pytest.raises(Error) as failed:
        proc.run_group(["sh", "-c", "echo broken >&2; exit 2"], what="grouped")
    assert (failed.value.message, failed.value.detail) == (
        "grouped failed with exit code 2", "broken")
    with pytest.raises(NotInstalledError):
        proc.run_group(["no-such-program-xyz"])
    assert proc.run_group(["true"]).returncode == 0


def test_spawn_detached_outlives_us_in_its_own_session(tmp_path: Path) -> None:
    marker = tmp_path / "detached.pid"
    proc.spawn_detached(["sh", "-c", f'echo $$ > "{marker}"; exec sleep 60'], low_priority=True)
    pid = int(_wait_for(marker))
    try:
        assert os.getsid(pid) == pid  # a session leader: no terminal's signals reach it
        fds = {os.readlink(f"/proc/{pid}/fd/{n}") for n in ("0", "1", "2")}
        assert fds == {"/dev/null"}
        assert os.getpriority(os.PRIO_PROCESS, pid) == 19
    finally:
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid)


def test_spawn_detached_gets_the_passed_descriptors_and_no_other_of_ours(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "detached.pid"
    passed = os.open(tmp_path / "passed", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    leaked_r, leaked_w = os.pipe()
    os.set_inheritable(leaked_w, True)  # as a caller's shell may leave one: never passed on
    pid = None
    try:
        proc.spawn_detached(["sh", "-c", f'echo $$ > "{marker}"; exec sleep 60'],
                            pass_fds=[passed])
        pid = int(_wait_for(marker))
        fds = {n: os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")}
        assert fds == {"0": "/dev/null", "1": "/dev/null", "2": "/dev/null",
                       str(passed): str(tmp_path / "passed")}, fds
        assert os.getsid(pid) == pid
        assert not os.get_inheritable(passed)  # ours stays close-on-exec
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        for fd in (passed, leaked_r, leaked_w):
            os.close(fd)


def test_spawn_detached_of_a_missing_program_is_not_installed_and_leaves_no_zombies(
) -> None:
    with pytest.raises(NotInstalledError):
        proc.spawn_detached(["no-such-program-xyz"])
    for _ in range(3):
        proc.spawn_detached(["true"])
    deadline = time.monotonic() + 10
    while len(proc._detached) > 1:  # each spawn reaps the ones before it that have exited
        assert time.monotonic() < deadline, proc._detached
        time.sleep(0.05)
        proc.spawn_detached(["true"])


def test_pid_alive_counts_a_zombie_as_gone() -> None:
    assert proc.pid_alive(os.getpid())
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(") ", 1)[1][:1] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not proc.pid_alive(child.pid)  # exited, not yet reaped
    child.wait()
    assert not proc.pid_alive(child.pid)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the root-mode pass)")
def test_run_as_another_account_gets_its_home_and_no_groups() -> None:
    import pwd

    account = pwd.getpwnam(os.environ.get("PG_OS_USER") or "postgres")
    user = proc.RunAs(account.pw_uid, account.pw_gid, account.pw_name, account.pw_dir)
    r = proc.run(["sh", "-c", 'id -u; id -G; echo "$HOME $USER $LOGNAME"'], user=user)
    uid, groups, names = r.out.splitlines()
    assert int(uid) == account.pw_uid
    assert groups.split() == [str(account.pw_gid)]
    assert names == f"{account.pw_dir} {account.pw_name} {account.pw_name}"


@pytest.mark.parametrize("by_popen", [False, True])
def test_start_server_detaches_with_only_the_log_and_default_signals(
    tmp_path: Path, by_popen: bool
) -> None:
    """What the server gets, started by posix_spawn (no account to switch to) or by
    subprocess (a relative data dir here stands in for the cases posix_spawn does not take):
    its own session, stdin /dev/null, stdout and stderr on the log, none of the caller's
    inheritable descriptors, SIGPIPE not ignored; poll() says when it exited and how."""
    probe = tmp_path / "probe"
    probe.write_text("#!/bin/sh\n"
                     "echo \"sid=$(cut -d' ' -f6 /proc/$$/stat) pid=$$\"\n"
                     "ls /proc/$$/fd | tr '\\n' ' '; echo\n"
                     "grep SigIgn /proc/$$/status\n"
                     "read line && echo \"read: $line\"\n"
                     "echo to-stderr >&2\n"
                     "exec sleep 0.3\n")
    probe.chmod(0o755)
    log = tmp_path / "log"
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    r, w = os.pipe()
    os.dup2(w, 47)  # inheritable, as a shell's extra descriptor would be
    old_pipe = signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python starts
    try:
        argv = [str(probe), "-D", "relative/data" if by_popen else str(tmp_path)]
        server = proc.start_server(argv, log_fd=log_fd, env={"PATH": "/usr/bin:/bin"})
        assert (server.popen is None) != by_popen
        assert server.poll() is None
        deadline = time.monotonic() + 20
        while server.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert server.poll() == 0
    finally:
        signal.signal(signal.SIGPIPE, old_pipe)
        os.close(47)
        for fd in (r, w, log_fd):
            os.close(fd)
    lines = log.read_text().splitlines()
    sid, pid = (int(x.split("=")[1]) for x in lines[0].split())
    assert sid == pid == server.pid
    fds = {int(fd) for fd in lines[1].split()}  # and the shell's own, for the script
    assert {0, 1, 2} <= fds and 47 not in fds
    assert int(lines[2].split()[1], 16) & (1 << (signal.SIGPIPE - 1)) == 0
    assert lines[3:] == ["to-stderr"]  # stdin at EOF: nothing read


def test_start_server_poll_gives_the_exit_code() -> None:
    server = proc.start_server(["/bin/sh", "-c", "exit 3"], log_fd=2, env={})
    deadline = time.monotonic() + 20
    while server.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert server.poll() == 3
