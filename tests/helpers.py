"""Helpers for tests that start their own clusters (beyond the shared session cluster)."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

BIN = Path(sys.executable).parent
_ports = itertools.count(5600)


def next_port() -> int:
    return next(_ports)


def script(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is not installed next to {sys.executable}"
    return str(path)


def run_cmd(
    argv: list[str], env: Mapping[str, str], timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=dict(env), capture_output=True, text=True, timeout=timeout, input=input,
        stdin=None if input is not None else subprocess.DEVNULL, check=False,
    )


def init(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed postgres-init with env."""
    return run_cmd([script("postgres-init"), *args], env)


def wd_of(env: Mapping[str, str]) -> Path:
    return Path(env["PG_WORKING_DIR"])


def psql(env: Mapping[str, str], sql: str, db: str | None = None) -> str:
    """Run sql in the cluster postgres-init made for env (its PGURL, or database db there)."""
    from db_tool.cluster import build_url
    from db_tool.settings import login_name

    url = build_url(login_name(), db or env.get("PG_DATABASE", "testdb"), wd_of(env) / "sock",
                    int(env.get("PG_PORT", "5432")))
    out = subprocess.run(
        ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
        capture_output=True, text=True, check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()}
    env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(extra)
    return env


def stop_quietly(wd: Path) -> None:
    subprocess.run(
        [script("postgres-cleanup")], env=base_env(PG_WORKING_DIR=str(wd)),
        capture_output=True, check=False, timeout=120,
    )


def tree_snapshot(path: Path) -> dict[str, tuple[int, int, int]]:
    """name -> (size, mtime_ns, mode) for every file below path: proves 'left untouched'."""
    snap = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            snap[os.path.relpath(p, path)] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return snap


def postmaster_pid(wd: Path) -> int:
    return int((wd / "data" / "postmaster.pid").read_text().split()[0])


def alive(pid: int) -> bool:
    """Running (a zombie that nobody reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1] != "Z"


ORIGINAL = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "original"


def original_script(name: str) -> Path:
    """A script of the original tool (../shared/reference/original): CI has it; elsewhere the
    test fails saying what is missing instead of skipping."""
    path = ORIGINAL / "package" / "db-tool" / name
    assert path.is_file(), f"the original tool's source is missing: {path} (../shared/reference)"
    return path


def server_account() -> tuple[int, int] | None:
    """(uid, gid) the server runs as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    import pwd

    entry = pwd.getpwnam(os.environ.get("PG_OS_USER") or "postgres")
    return entry.pw_uid, entry.pw_gid


def as_server_account(argv: list[str]) -> list[str]:
    """argv run as the server account when we are root (initdb/pg_ctl refuse root)."""
    account = server_account()
    if account is None:
        return argv
    import pwd
    import shutil

    runuser = shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin:/bin")
    assert runuser is not None, "runuser (util-linux) is needed to run this as the server account"
    return [runuser, "-u", pwd.getpwuid(account[0]).pw_name, "--", *argv]


def reachable_by_server(path: Path) -> None:
    """As root: let the server account enter every ancestor of path (as postgres-init does)."""
    account = server_account()
    if account is not None:
        import pwd

        from db_tool import privs, proc

        entry = pwd.getpwuid(account[0])
        privs.grant_search(path, proc.RunAs(entry.pw_uid, entry.pw_gid, entry.pw_name, "/"))


def original_postgres_init(wd: Path, port: int = 5432) -> None:
    """A cluster made by the original postgres-init (its layout; sock/ mode 755), stopped.

    Port 5432: the original's createdb ignores PG_PORT. Sockets live in wd/sock, so this never
    meets another server on that port."""
    from db_tool import pgbin

    bindir = pgbin.find().bin_dir
    wd.mkdir(parents=True)
    account = server_account()
    if account is not None:
        os.chown(wd, *account)
        reachable_by_server(wd)
    shim = 'with_closed_fds() { "$@"; }\n. "$1"\n'
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "PG_WORKING_DIR": str(wd), "PG_PORT": str(port),
           "NO_TTY": "1", "PG_SHARED_PRELOAD_LIBRARIES": "", "HOME": "/tmp", "LC_ALL": "C"}
    r = run_cmd(as_server_account(["dash", "-c", shim, "sh",
                                   str(original_script("postgres-init.sh"))]), env)
    assert r.returncode == 0, r.stderr
    if account is not None:
        # As root the original cannot run at all; as the server account its superuser is that
        # account. Give our login a role, as a cluster the login made itself would have.
        import getpass

        r = run_cmd(as_server_account([
            str(bindir / "psql"), "-X", "-h", str(wd / "sock"), "-p", str(port), "-d", "testdb",
            "-c", f'create role "{getpass.getuser()}" superuser login']), env)
        assert r.returncode == 0, r.stderr
    r = run_cmd(as_server_account([str(bindir / "pg_ctl"), "-D", str(wd / "data"), "-m", "fast",
                                   "-w", "stop"]), env)
    assert r.returncode == 0, r.stderr


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """path read-only: a read-only bind mount as root (root ignores modes), else chmod a-w."""
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
            yield
        finally:
            subprocess.run(["umount", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(mode & ~0o222)
        try:
            yield
        finally:
            path.chmod(mode)


_REPO = Path(__file__).resolve().parent.parent


def _python() -> str:
    """An interpreter every account can run (the venv's may sit in root's home)."""
    for cand in ("/usr/bin/python3", sys.executable):
        r = subprocess.run([cand, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                           capture_output=True, text=True, check=False)
        if r.stdout.strip() == "True":
            return cand
    raise AssertionError("no Python >= 3.11 readable by every account")


@contextlib.contextmanager
def portable_install() -> Iterator[Path]:
    """db-tool installed where every account can run it: a world-readable dir under /var/tmp
    with the sh launchers of scripts/ and a db-tool-run console script, as pip installs them,
    on /usr/bin/python3 (the test venv's python may live in root's home, which a sandbox
    account cannot enter). Yields the root; commands are in <root>/bin."""
    root = Path(tempfile.mkdtemp(prefix="db-tool-sandbox-", dir="/var/tmp"))
    try:
        root.chmod(0o755)
        shutil.copytree(_REPO / "src" / "db_tool", root / "lib" / "db_tool",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(_REPO / "examples", root / "examples",
                        ignore=shutil.ignore_patterns("focus"))
        subprocess.run([_python(), "-m", "compileall", "-q", str(root / "lib")], check=True)
        bindir = root / "bin"
        bindir.mkdir()
        # What pip installs: the sh launchers, and db-tool-run, the console script they call.
        (bindir / "db-tool-run").write_text(
            f"#!{_python()}\nimport sys\nsys.path.insert(0, {str(root / 'lib')!r})\n"
            "from db_tool.cli.launch import entry\nentry()\n"
        )
        for launcher in (_REPO / "scripts").iterdir():
            shutil.copy(launcher, bindir / launcher.name)
        for f in bindir.iterdir():
            f.chmod(0o755)
        subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_fresh_interpreter(code: str, heavy: list[str], env: Mapping[str, str],
                          ) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run `code` in a fresh interpreter with env (the import-set tests of the hook paths):
    the result, and its last line of output, "loaded: [...]": which of the `heavy` modules
    were loaded by the end."""
    code = ("import sys\n" + code
            + f"print('loaded:', sorted(m for m in {heavy!r} if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], env=dict(env), capture_output=True,
                       text=True, timeout=120, check=False)
    return r, (r.stdout.strip().splitlines() or [""])[-1]
