"""Running as root: the server runs as PG_OS_USER; the superuser keeps the login's name.

These tests need uid 0 and are skipped, with that reason shown, in the unprivileged CI pass
(which runs every other test as a normal user).
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import init, postmaster_pid, psql, run_cmd, script, stop_quietly

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the root-mode pass)")


def server_uid(wd: Path) -> int:
    pid = (wd / "data" / "postmaster.pid").read_text().split()[0]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def psql_user(url: str) -> str:
    out = subprocess.run(["psql", "-X", "-At", "-d", url, "-c", "select current_user"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def acl_users(path: Path) -> set[str]:
    out = subprocess.run(["getfacl", "-cp", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return {ln.split(":")[1] for ln in out.splitlines() if ln.startswith("user:")
            and ln.split(":")[1]}


@pytest.fixture
def under_root(cluster_env: dict[str, str]) -> Iterator[tuple[Path, dict[str, str]]]:
    """A working dir below /root (mode 0700) with a space in its path."""
    base = Path("/root") / f"db-tool test {uuid.uuid4().hex[:8]}"
    had_acl = "postgres" in acl_users(Path("/root"))
    wd = base / "my project" / "pg"
    env = {**cluster_env, "PG_WORKING_DIR": str(wd)}
    try:
        yield wd, env
    finally:
        stop_quietly(wd)
        shutil.rmtree(base, ignore_errors=True)
        if not had_acl:
            subprocess.run(["setfacl", "-x", "u:postgres", "/root"], check=False)


def test_root_runs_server_as_postgres_user_with_login_named_superuser(
    under_root: tuple[Path, dict[str, str]],
) -> None:
    wd, env = under_root
    root_mode = Path("/root").stat().st_mode
    granted_before = "postgres" in acl_users(Path("/root"))  # by a concurrent run
    r = run_cmd([script("postgres-init"), "--print-env"], env)
    assert r.returncode == 0, r.stderr
    account = pwd.getpwnam("postgres")
    assert server_uid(wd) == account.pw_uid
    assert (wd / "data").stat().st_uid == account.pw_uid
    assert (wd / "sock").stat().st_uid == account.pw_uid
    assert (wd).stat().st_uid == 0  # the working dir itself stays root's
    url = r.stdout.split("PGURL=", 1)[1].splitlines()[0].strip("'")
    assert psql_user(url) == "root"
    # The only permission change outside our dirs: search (x) for postgres on /root, by ACL.
    assert granted_before or "granted x on /root to user postgres (ACL)" in r.stderr
    assert Path("/root").stat().st_mode & 0o007 == root_mode & 0o007  # no chmod o+x


def test_root_reuse_under_root(under_root: tuple[Path, dict[str, str]]) -> None:
    wd, env = under_root
    assert run_cmd([script("postgres-init")], env).returncode == 0
    stop_quietly(wd)
    r = run_cmd([script("postgres-init")], {**env, "PG_REUSE": "1"})
    assert r.returncode == 0, r.stderr
    assert "reused" in r.stderr


def test_pg_os_user_selects_the_account(cluster_env: dict[str, str]) -> None:
    env = {**cluster_env, "PG_OS_USER": "nobody"}
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0, r.stderr
    assert server_uid(Path(env["PG_WORKING_DIR"])) == pwd.getpwnam("nobody").pw_uid


@pytest.mark.parametrize("user, fragment", [("root", "refuses to run as root"),
                                             ("no-such-user-xyz", "does not exist")])
def test_bad_pg_os_user(cluster_env: dict[str, str], user: str, fragment: str) -> None:
    r = run_cmd([script("postgres-init")], {**cluster_env, "PG_OS_USER": user})
    assert r.returncode == 3
    assert fragment in r.stderr


def test_root_never_writes_through_a_link_the_server_account_planted(
    tmp_path: Path, cluster_env: dict[str, str],
) -> None:
    """A superuser session (the server account) can plant links in data/; the next root run
    must neither overwrite their targets nor copy them into data/."""
    from db_tool.cluster import RUNTIME_CONF

    wd = Path(cluster_env["PG_WORKING_DIR"])
    env = {**cluster_env, "PG_REUSE": "1"}
    assert run_cmd([script("postgres-init")], cluster_env).returncode == 0
    stop_quietly(wd)
    account = pwd.getpwnam("postgres")
    target = tmp_path / "etc-something"
    target.write_text("precious\n")
    runtime = wd / "data" / RUNTIME_CONF
    runtime.unlink()
    runtime.symlink_to(target)
    os.lchown(runtime, account.pw_uid, account.pw_gid)
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0, r.stderr
    assert target.read_text() == "precious\n"
    st = os.lstat(runtime)
    assert stat.S_ISREG(st.st_mode) and st.st_uid == account.pw_uid
    assert stat.S_IMODE(st.st_mode) == 0o600
    stop_quietly(wd)
    for name in ("postgresql.conf", "postgresql.auto.conf"):
        conf = wd / "data" / name
        saved = conf.read_text()
        conf.unlink()
        conf.symlink_to(target)
        r = run_cmd([script("postgres-init")], env)
        assert r.returncode == 1
        assert "symbolic link" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert target.read_text() == "precious\n"
        conf.unlink()
        conf.write_text(saved)
        os.chown(conf, account.pw_uid, account.pw_gid)


@pytest.mark.parametrize("umask", [0o077, 0o027])
def test_root_umask_does_not_open_tcp(umask: int, cluster_env: dict[str, str]) -> None:
    wd = Path(cluster_env["PG_WORKING_DIR"])
    started = time.monotonic()
    r = run_cmd(["sh", "-c", f'umask {umask:03o} && exec "$0" --print-env',
                 script("postgres-init")], cluster_env)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - started < 30
    url = r.stdout.split("PGURL=", 1)[1].splitlines()[0].strip("'")
    out = subprocess.run(["psql", "-X", "-At", "-d", url, "-c",
                          "select current_setting('listen_addresses') || '|' || "
                          "current_setting('unix_socket_directories')"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == f"|{wd / 'sock'}"


@pytest.mark.parametrize("other, mask, after, report", [
    ("rwx", "r-x", "r-x", None),  # x is within the mask: nothing to widen
    ("rw-", "r--", "r-x", "nobody else gains anything"),
    ("rwx", "r--", "r-x", "this also widens: user nobody (r-- -> r-x)"),
])
def test_root_acl_grant_keeps_the_mask_and_reports_every_widening(
    other: str, mask: str, after: str, report: str | None, cluster_env: dict[str, str],
) -> None:
    base = Path(tempfile.mkdtemp(prefix="db-tool acl ", dir="/tmp"))
    try:
        subprocess.run(["setfacl", "-m", f"u:nobody:{other},m::{mask}", str(base)], check=True)
        env = {**cluster_env, "PG_WORKING_DIR": str(base / "pg"), "PG_OS_USER": "postgres"}
        r = run_cmd([script("postgres-init")], env)
        assert r.returncode == 0, r.stderr
        acl = subprocess.run(["getfacl", "-cp", str(base)], capture_output=True, text=True,
                             check=True).stdout.splitlines()
        assert f"mask::{after}" in acl
        assert any(ln.startswith(f"user:nobody:{other}") for ln in acl)
        assert "user:postgres:--x" in acl
        if report is None:
            assert "widened" not in r.stderr
        else:
            assert f"widened the ACL mask of {base} from {mask} to {after}" in r.stderr
            assert report in r.stderr
    finally:
        stop_quietly(base / "pg")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def under_tmp(cluster_env: dict[str, str]) -> Iterator[tuple[Path, dict[str, str]]]:
    """A root-only 0700 dir under /tmp with a space below it."""
    base = Path(tempfile.mkdtemp(prefix="db-tool audit ", dir="/tmp"))
    wd = base / "my project" / "pg"
    env = {**cluster_env, "PG_WORKING_DIR": str(wd)}
    try:
        yield wd, env
    finally:
        stop_quietly(wd)
        shutil.rmtree(base, ignore_errors=True)


def _acl(path: Path) -> str:
    return subprocess.run(["getfacl", "-cp", str(path)], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the root-mode pass)")
def test_root_under_tmp_changes_only_the_documented_permissions(
    under_tmp: tuple[Path, dict[str, str]],
) -> None:
    wd, env = under_tmp
    base = wd.parent.parent
    assert stat.S_IMODE(base.stat().st_mode) == 0o700
    ancestors = [Path("/"), Path("/tmp"), base]
    modes = {p: p.stat().st_mode for p in ancestors}
    acls = {p: _acl(p) for p in ancestors}
    r = init(env, "--print-env")
    assert r.returncode == 0, r.stderr
    account = pwd.getpwnam(os.environ.get("PG_OS_USER") or "postgres")
    # The server runs as the account; the superuser is still the login (root).
    pid = postmaster_pid(wd)
    uid_line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if ln.startswith("Uid:"))
    assert int(uid_line.split()[1]) == account.pw_uid
    assert psql(env, "select current_user") == "root"
    # No chmod on any ancestor: owner and other bits are untouched (the group bits of base now
    # show the ACL mask, which is what setfacl does); only base (0700) got an ACL entry, for
    # the account alone, and its owning group still has nothing.
    assert {p: p.stat().st_mode & ~0o070 for p in ancestors} == {
        p: m & ~0o070 for p, m in modes.items()}
    assert {p: p.stat().st_mode for p in ancestors[:2]} == {p: modes[p] for p in ancestors[:2]}
    assert "group::---" in _acl(base)
    assert _acl(Path("/")) == acls[Path("/")] and _acl(Path("/tmp")) == acls[Path("/tmp")]
    assert f"user:{account.pw_name}:--x" in _acl(base)
    assert f"granted x on {base} to user {account.pw_name} (ACL)" in r.stderr
    assert "chmod" not in r.stderr
    # data/ and sock/ belong to the account; the working dir and everything else stay root's.
    assert (wd / "data").stat().st_uid == account.pw_uid
    assert (wd / "sock").stat().st_uid == account.pw_uid
    for p in [wd.parent, wd, *wd.iterdir()]:
        if p.name not in ("data", "sock"):
            assert p.stat().st_uid == 0, p
