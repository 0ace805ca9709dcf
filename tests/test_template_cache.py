"""The template cache (template_cache.py) and where caches live (cachedir.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from db_tool import cachedir
from db_tool.cachedir import CacheLocations
from tests.helpers import run_cmd, script

SANDBOX_RUN = Path("/work/shared/tools/sandbox-run")


def _no_home_env(env: dict[str, str], home: str | None) -> dict[str, str]:
    out = {k: v for k, v in env.items() if k not in ("XDG_CACHE_HOME", "HOME")}
    if home is not None:
        out["HOME"] = home
    out["HECTIC_LOG"] = "debug"
    return out


# ---- where the cache lives ------------------------------------------------------------------
def test_cache_dir_prefers_xdg_then_home(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    loc = CacheLocations(str(tmp_path / "xdg"), str(tmp_path / "home"), str(tmp_path))
    assert cachedir.choose(loc, None) == tmp_path / "xdg" / "db-tool"
    loc = CacheLocations(None, str(tmp_path / "home"), str(tmp_path))
    assert cachedir.choose(loc, None) == tmp_path / "home" / ".cache" / "db-tool"


def test_cache_dir_never_creates_a_missing_home(tmp_path: Path) -> None:
    loc = CacheLocations(None, str(tmp_path / "homeless-shelter"), str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    near = tmp_path / "project"
    near.mkdir()
    chosen = cachedir.choose(loc, near)
    assert chosen == near / f".db-tool-cache-{os.geteuid()}"
    assert not (tmp_path / "homeless-shelter").exists()
    assert chosen.stat().st_mode & 0o777 == 0o700


def test_cache_dir_falls_back_to_tmpdir_then_to_none(tmp_path: Path) -> None:
    home_file = tmp_path / "home-is-a-file"
    home_file.write_text("")
    near = tmp_path / "project"
    near.mkdir()
    (near / f".db-tool-cache-{os.geteuid()}").write_text("not a dir")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    loc = CacheLocations(None, str(home_file), str(tmp))
    assert cachedir.choose(loc, near) == tmp / f"db-tool-cache-{os.geteuid()}"
    shutil.rmtree(tmp / f"db-tool-cache-{os.geteuid()}")
    (tmp / f"db-tool-cache-{os.geteuid()}").write_text("not a dir either")
    assert cachedir.choose(loc, near) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a dir owned by another user")
def test_cache_dir_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    planted = tmp / f"db-tool-cache-{os.geteuid()}"
    planted.mkdir(parents=True)
    os.chown(planted, 65534, 65534)
    loc = CacheLocations(None, None, str(tmp))
    assert cachedir.choose(loc, None) is None


def test_fresh_init_without_a_home_uses_a_cache_next_to_the_working_dir(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    env = _no_home_env(cluster_env, str(tmp_path / "homeless-shelter"))
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0, r.stderr
    cache = tmp_path / f".db-tool-cache-{os.geteuid()}"
    assert f"template cache: using {cache}" in r.stderr
    deadline = time.monotonic() + 120
    while not list(cache.glob("templates/*/ready")) and time.monotonic() < deadline:
        time.sleep(0.05)  # the template is built in the background
    assert list(cache.glob("templates/*/ready"))
    assert not (tmp_path / "homeless-shelter").exists()


def test_fresh_init_with_no_usable_cache_runs_plain_initdb(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    for blocked in (tmp_path / f".db-tool-cache-{os.geteuid()}",
                    tmp / f"db-tool-cache-{os.geteuid()}"):
        blocked.write_text("in the way")
    env = {**_no_home_env(cluster_env, None), "TMPDIR": str(tmp)}
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0, r.stderr
    assert "working without a cache" in r.stderr
    assert "started a fresh cluster" in r.stderr


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not SANDBOX_RUN.exists(),
                    reason=f"needs root and {SANDBOX_RUN} (the build-sandbox pass)")
@pytest.mark.parametrize("who", ["--user=sandbox", "--root"])
def test_fresh_init_in_a_build_sandbox_with_homeless_shelter(who: str) -> None:
    from tests.helpers import portable_install

    with portable_install() as root:
        argv = [str(SANDBOX_RUN), *who.split("="), "--bin", str(root / "bin"), "--", "sh", "-c",
                'export PG_WORKING_DIR="$PWD/pg" PG_PORT=5471 PG_SHARED_PRELOAD_LIBRARIES=; '
                "postgres-init && postgres-init && database bundle path >/dev/null; rc=$?; "
                "postgres-cleanup; "
                # the detached template build must end before sandbox-run removes the work dir
                "while pgrep -f 'db_tool[.]template_cache' >/dev/null; do sleep 0.2; done; "
                "exit $rc"]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr


# ---- a damaged cache heals -------------------------------------------------------------------
def _wait_ready(cache: Path, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list((cache / "db-tool" / "templates").glob("*/ready"))
        if found:
            return found[0].parent
        time.sleep(0.05)
    raise AssertionError(f"no template was built in {cache}")


@pytest.fixture(scope="module")
def pristine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding one finished template (no spares), built once for the module."""
    from tests.helpers import base_env, next_port, stop_quietly

    root = tmp_path_factory.mktemp("pristine")
    env = base_env(PG_WORKING_DIR=str(root / "wd"), PG_PORT=str(next_port()),
                   XDG_CACHE_HOME=str(root / "cache"), DB_TOOL_NO_SPARE="1")
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0, r.stderr
    stop_quietly(root / "wd")
    _wait_ready(root / "cache")
    return root / "cache"


def _zero_pg_control(t: Path) -> None:
    ctl = t / "data" / "global" / "pg_control"
    ctl.write_bytes(b"\0" * ctl.stat().st_size)


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)


def _project_db_dir(t: Path) -> Path:
    return max((t / "data" / "base").iterdir(), key=lambda p: int(p.name))


def _replace_with_file(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    path.write_text("not a directory\n")


CORRUPTIONS = {
    "marker missing": lambda t: (t / "ready").unlink(),
    "marker truncated": lambda t: _truncate(t / "ready", (t / "ready").stat().st_size // 2),
    "marker garbage": lambda t: (t / "ready").write_text("hello\n"),
    "pg_control missing": lambda t: (t / "data" / "global" / "pg_control").unlink(),
    "pg_control truncated": lambda t: _truncate(t / "data" / "global" / "pg_control", 100),
    "pg_control zeroed, same size": _zero_pg_control,
    "catalog file truncated": lambda t: _truncate(t / "data" / "base" / "1" / "1259", 0),
    "database dir missing": lambda t: shutil.rmtree(_project_db_dir(t)),
    "PG_VERSION missing": lambda t: (t / "data" / "PG_VERSION").unlink(),
    "data is a file": lambda t: _replace_with_file(t / "data"),
    "template dir is a file": _replace_with_file,
    "templates dir is a file": lambda t: _replace_with_file(t.parent),
    "wal dir missing": lambda t: shutil.rmtree(t / "data" / "pg_wal"),
}


def _fresh_env(tmp_path: Path, cache: Path, cluster_env: dict[str, str]) -> dict[str, str]:
    return {**cluster_env, "XDG_CACHE_HOME": str(cache), "DB_TOOL_NO_SPARE": "1"}


def _select_one(env: dict[str, str]) -> None:
    wd = Path(env["PG_WORKING_DIR"])
    out = subprocess.run(["psql", "-X", "-At", "-h", str(wd / "sock"), "-p", env["PG_PORT"],
                          "-d", "testdb", "-c", "select 41 + 1"],
                         capture_output=True, text=True, check=False, env=env)
    assert out.stdout.strip() == "42", out.stderr


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_damaged_template_is_rebuilt_naming_the_cache(
    kind: str, tmp_path: Path, pristine_cache: Path, cluster_env: dict[str, str]
) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(pristine_cache, cache, symlinks=True)
    (template,) = (cache / "db-tool" / "templates").iterdir()
    CORRUPTIONS[kind](template)
    env = _fresh_env(tmp_path, cache, cluster_env)
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert f"template cache {cache / 'db-tool' / 'templates'}" in r.stderr, r.stderr
    _select_one(env)
    # healed for good: the template is rebuilt and the next run copies it without a word
    _wait_ready(cache)
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0 and "template cache" not in r.stderr, r.stderr
    _select_one(env)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file another owner")
def test_template_file_with_the_wrong_owner_is_rebuilt(
    tmp_path: Path, pristine_cache: Path, cluster_env: dict[str, str]
) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(pristine_cache, cache, symlinks=True)
    (template,) = (cache / "db-tool" / "templates").iterdir()
    os.chown(template / "data" / "global" / "pg_control", 0, 0)
    env = _fresh_env(tmp_path, cache, cluster_env)
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0, r.stderr
    assert "is owned by uid 0" in r.stderr and str(template) in r.stderr
    _select_one(env)


def _one_spare(tmp_path: Path, pristine_cache: Path) -> tuple[Path, Path]:
    cache = tmp_path / "cache"
    shutil.copytree(pristine_cache, cache, symlinks=True)
    (template,) = (cache / "db-tool" / "templates").iterdir()
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:16]
    spare = template / "spares" / f"ready-{boot}-1-1"
    spare.parent.mkdir()
    subprocess.run(["cp", "-a", str(template / "data"), str(spare)], check=True)
    return cache, spare


def test_spare_without_pg_version_is_not_started(
    tmp_path: Path, pristine_cache: Path, cluster_env: dict[str, str]
) -> None:
    cache, spare = _one_spare(tmp_path, pristine_cache)
    (spare / "PG_VERSION").unlink()
    env = {**cluster_env, "XDG_CACHE_HOME": str(cache)}
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0, r.stderr
    _select_one(env)


def test_spare_with_a_zeroed_pg_control_heals(
    tmp_path: Path, pristine_cache: Path, cluster_env: dict[str, str]
) -> None:
    cache, spare = _one_spare(tmp_path, pristine_cache)
    ctl = spare / "global" / "pg_control"
    ctl.write_bytes(b"\0" * ctl.stat().st_size)
    env = {**cluster_env, "XDG_CACHE_HOME": str(cache)}
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0, r.stderr
    assert "template cache" in r.stderr
    _select_one(env)


def test_spare_from_another_boot_is_not_trusted(
    tmp_path: Path, pristine_cache: Path, cluster_env: dict[str, str]
) -> None:
    cache, spare = _one_spare(tmp_path, pristine_cache)
    stale = spare.with_name("ready-0000000000000000-1-1")
    spare.rename(stale)
    env = {**cluster_env, "XDG_CACHE_HOME": str(cache)}
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0, r.stderr
    data = Path(env["PG_WORKING_DIR"]) / "data"
    assert not stale.exists() or data.stat().st_ino != stale.stat().st_ino
    _select_one(env)


# ---- kill -9 during a cold-cache init ------------------------------------------------------------
def _processes_touching(path: Path) -> list[str]:
    wanted = str(path).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(") ", 1)[1][:1]
        except OSError:
            continue
        if wanted in argv and state != "Z":
            found.append(argv.replace(b"\0", b" ").decode(errors="replace"))
    return found


def _assert_no_build_writer_within_5_s(wd: Path) -> None:
    """After a kill -9 of an init: what it ran in a build dir (tied to it) is gone within 5 s."""
    deadline = time.monotonic() + 5
    while _processes_touching(wd / ".db-tool-build-") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _processes_touching(wd / ".db-tool-build-")


@pytest.mark.parametrize("delay", [0.3, 0.9, 1.6])
def test_kill_9_during_cold_init_leaves_no_writer_and_the_rerun_succeeds(
    delay: float, tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    env = {**cluster_env, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    wd = Path(env["PG_WORKING_DIR"])
    child = subprocess.Popen([script("postgres-init")], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    child.kill()
    child.wait()
    _assert_no_build_writer_within_5_s(wd)
    # A killed init may have got as far as starting the server: that postmaster (and its
    # children, "postgres: ...") is the cluster, not a stray writer.
    writers = [p for p in _processes_touching(wd / "data")
               if p.split()[1:3] != ["-D", str(wd / "data")]]
    assert not writers, writers
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0, r.stderr
    _select_one(env)
    _wait_ready(tmp_path / "cache")  # as root the background build runs in wd: let it end
    deadline = time.monotonic() + 10
    while list(wd.glob(".db-tool-build-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(wd.glob(".db-tool-build-*")), list(wd.iterdir())
    assert not list(wd.glob("data.broken-*")), list(wd.iterdir())


@contextlib.contextmanager
def _single_user_server(parent: Path, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """A cluster initdb'd in parent/name with a single-user postgres at work in it, as initdb
    leaves one behind when it is killed (its stdin is held open here)."""
    from db_tool import pgbin
    from tests.helpers import as_server_account, reachable_by_server, server_account

    account = server_account()
    if account is not None:
        os.chown(parent, *account)
    reachable_by_server(parent)
    data = parent / name
    install = pgbin.find()
    subprocess.run(as_server_account([install.tool("initdb"), "-D", str(data), "--no-sync",
                                      "-A", "trust", "-U", "postgres"]),
                   check=True, stdout=subprocess.DEVNULL, cwd="/")
    single = subprocess.Popen(
        as_server_account([install.tool("postgres"), "--single", "-D", str(data), "template1"]),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd="/")
    try:
        assert single.stdin is not None and single.stdout is not None
        single.stdin.write(b"select 4711\n")
        single.stdin.flush()
        seen = b""
        while b'"4711"' not in seen:  # up and answering: a server at work, not one starting
            chunk = os.read(single.stdout.fileno(), 4096)
            assert chunk, f"the single-user server ended: {seen!r}"
            seen += chunk
        yield single
    finally:
        single.kill()
        single.wait()


def _dead_pid() -> int:
    dead = subprocess.Popen(["true"])
    dead.wait()
    return dead.pid


@pytest.mark.slow
def test_removing_a_dead_build_stops_the_server_initdb_left_running_in_it(
        tmp_path: Path) -> None:
    """kill -9 of an init in initdb kills initdb (it dies with us) but not the bootstrap or
    single-user postgres initdb started: that one runs on in the build dir. Removing the dead
    build stops it first, so nothing writes into the dir while it goes (a rerun right after
    the kill used to leave the dir behind)."""
    from db_tool import template_cache

    parent = tmp_path / "wd"
    parent.mkdir()
    build = parent / f"{template_cache.BUILD_PREFIX}{_dead_pid()}-1"
    with _single_user_server(parent, build.name) as single:
        template_cache.remove_dead_builds(parent)
        assert single.wait(timeout=5) != 0  # killed, not ended by an EOF we never sent
        assert not build.exists(), list(build.iterdir())


@pytest.mark.slow
def test_a_link_named_like_a_dead_build_never_gets_the_server_it_points_to_killed(
        tmp_path: Path) -> None:
    """Whoever can write in the working dir (another account, when root runs the tool there)
    may plant `.db-tool-build-<dead pid>-…` as a link to some cluster's data dir: that server
    is not ours to stop, and the dir it points to is not ours to remove."""
    from db_tool import template_cache

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    parent = tmp_path / "wd"
    parent.mkdir()
    with _single_user_server(elsewhere, "data") as single:
        link = parent / f"{template_cache.BUILD_PREFIX}{_dead_pid()}-1"
        link.symlink_to(elsewhere / "data")
        template_cache.remove_dead_builds(parent)
        time.sleep(0.3)
        assert single.poll() is None, "a server the link pointed to was stopped"
        assert (elsewhere / "data" / "PG_VERSION").is_file()


def test_cluster_layout_names_match_the_modules_that_make_them() -> None:
    from db_tool import clusterdir, previous, template_cache

    def in_layout(name: str) -> bool:
        return name in clusterdir.LAYOUT_ENTRIES or name.startswith(clusterdir.LAYOUT_PREFIXES)

    assert in_layout(previous.PREVIOUS)
    assert in_layout(template_cache.BUILD_PREFIX + "1234")


@pytest.mark.parametrize("removed", ["template dir", "lock file"])
def test_worker_stops_at_once_when_its_template_dir_is_removed(tmp_path: Path,
                                                               removed: str) -> None:
    """A test or sandbox removing the tree the background worker works in: the worker exits
    (quietly, status 0) instead of racing the removal with its writes."""
    import subprocess
    import sys

    template = tmp_path / "templates" / "key"
    template.mkdir(parents=True)
    lock = template / "lock"
    code = ("import os, sys, time\n"
            "from pathlib import Path\n"
            "from db_tool import template_worker\n"
            f"t = Path({str(template)!r})\n"
            "fd = os.open(t / 'lock', os.O_RDWR | os.O_CREAT, 0o600)\n"
            "template_worker._Vanishing(fd).add(t)\n"
            "print('watching', flush=True)\n"
            "time.sleep(30)\n"
            "sys.exit(3)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "watching"
        time.sleep(0.2)
        assert p.poll() is None  # nothing removed: it keeps working
        if removed == "lock file":
            lock.unlink()
        else:
            shutil.rmtree(template)
        assert p.wait(timeout=5) == 0
    finally:
        p.kill()
        p.wait()


# ---- the no-spare copy: a build dir spread away from churned block groups -----------------------
def _fs_type(path: Path) -> str:
    """The type of the file system holding path (the longest mount point above it)."""
    best, kind = "", ""
    real = os.path.realpath(path)
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        point = fields[1].replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def test_spread_dir_carries_the_topdir_hint_on_ext4_and_passes_it_to_no_child(
        tmp_path: Path) -> None:
    from db_tool import spreaddir

    took = spreaddir.make(tmp_path / "build")
    flags = spreaddir.flags(tmp_path / "build")
    assert took == (flags is not None and bool(flags & spreaddir.TOPDIR))
    if _fs_type(tmp_path) in ("ext2", "ext3", "ext4"):
        assert took  # the file systems whose inode allocation the hint is for
    assert os.stat(tmp_path / "build").st_mode & 0o777 == 0o700
    (tmp_path / "build" / "data").mkdir()
    child = spreaddir.flags(tmp_path / "build" / "data")
    assert child is None or not child & spreaddir.TOPDIR  # the data dir is a plain dir
    with pytest.raises(FileExistsError):
        spreaddir.make(tmp_path / "build")


def test_no_spare_init_copies_through_a_build_dir_it_removes(
    tmp_path: Path, pristine_cache: Path, cluster_env: dict[str, str]
) -> None:
    from db_tool import spreaddir

    env = _fresh_env(tmp_path, pristine_cache, cluster_env)
    wd = Path(env["PG_WORKING_DIR"])
    for _ in range(2):  # the second replaces the first's data dir
        r = run_cmd([script("postgres-init")], env)
        assert r.returncode == 0, r.stderr
        _select_one(env)
        assert not list(wd.glob(".db-tool-build-*")), sorted(os.listdir(wd))
        for path in (wd, wd / "data"):
            flags = spreaddir.flags(path)
            assert flags is None or not flags & spreaddir.TOPDIR, path
    (template,) = (pristine_cache / "db-tool" / "templates").iterdir()
    assert not (template / "spares").exists()  # no spare was made


def _tree(path: Path) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), path)
            for d, dirs, files in os.walk(path) for n in dirs + files}


@pytest.mark.parametrize("replacing", [False, True], ids=["first init", "replacing data"])
@pytest.mark.parametrize("moment", ["build dir made", "copying", "data renamed"])
def test_kill_9_during_a_no_spare_copy_leaves_no_half_made_data_dir(
    moment: str, replacing: bool, tmp_path: Path, pristine_cache: Path,
    cluster_env: dict[str, str]
) -> None:
    """kill -9 of a DB_TOOL_NO_SPARE init at each step of its copy (a fresh copy, or the
    discarded data rewritten): `data` is either absent or a whole copy of the template, no
    cp goes on writing, and the rerun cleans up and starts."""
    from tests.helpers import stop_quietly

    env = _fresh_env(tmp_path, pristine_cache, cluster_env)
    wd = Path(env["PG_WORKING_DIR"])
    (template,) = (pristine_cache / "db-tool" / "templates").iterdir()
    whole = _tree(template / "data")
    if replacing:
        r = run_cmd([script("postgres-init")], env)
        assert r.returncode == 0, r.stderr
        stop_quietly(wd)

    gone = [not replacing]  # the old data dir has been moved away

    def reached() -> bool:
        builds = list(wd.glob(".db-tool-build-*"))
        if moment == "build dir made":
            return bool(builds)
        if moment == "copying":
            return any(b.glob("data*/base") for b in builds)
        if not (wd / "data").is_dir():
            gone[0] = True
            return False
        return gone[0]

    child = subprocess.Popen([script("postgres-init")], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not reached():
            assert child.poll() is None, "the init ended before the moment to kill it"
            assert time.monotonic() < deadline
            time.sleep(0.0005)
    finally:
        child.kill()
        child.wait()
    _assert_no_build_writer_within_5_s(wd)
    if (wd / "data").exists():
        assert _tree(wd / "data") >= whole  # the copy was complete before it got its name
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0, r.stderr
    _select_one(env)
    assert not list(wd.glob(".db-tool-build-*")), sorted(os.listdir(wd))


# ---- the discarded data rewritten into the fresh copy (recycle.py) ------------------------------
def test_rewrite_makes_a_tree_hold_exactly_the_template_and_writes_through_no_link(
        tmp_path: Path) -> None:
    from db_tool import recycle

    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    for d in (src / "base" / "1", src / "pg_wal", src / "was_file", dst / "base" / "1",
              dst / "base" / "99", dst / "pg_tblspc", outside):
        d.mkdir(parents=True)
    (src / "PG_VERSION").write_text("15\n")
    (src / "base" / "1" / "1259").write_bytes(b"x" * 8192)
    (src / "base" / "1" / "2600").write_bytes(b"y" * 100)
    (src / "base" / "1" / "empty").write_bytes(b"")
    (src / "pg_wal" / "seg").write_bytes(b"w" * 5000)
    (src / "was_dir").write_text("now a file")
    (src / "pg_tblspc").mkdir()
    os.chmod(src / "base" / "1" / "2600", 0o640)
    # the discarded tree: longer and shorter files, extra files and dirs, kinds swapped, a
    # tablespace link and a WAL dir link pointing outside, a file with a second hard link
    (dst / "PG_VERSION").write_text("14 and a much longer text\n")
    (dst / "base" / "1" / "1259").write_bytes(b"old" * 10000)
    (dst / "base" / "1" / "2600").write_bytes(b"o")
    (dst / "base" / "1" / "16384").write_bytes(b"user table")
    (dst / "base" / "99" / "1").write_bytes(b"a user database")
    (dst / "was_file").write_text("a file where a dir belongs")
    (dst / "was_dir").mkdir()
    (dst / "was_dir" / "x").write_text("a dir where a file belongs")
    (outside / "16385").mkdir()
    (outside / "16385" / "keep").write_text("tablespace data")
    os.symlink(outside / "16385", dst / "pg_tblspc" / "16385")
    os.symlink(outside, dst / "pg_wal")
    (outside / "seg").write_text("not ours to write")
    os.link(dst / "base" / "1" / "2600", outside / "linked")
    recycle.rewrite(src, dst, tmp_path / "aside")

    def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
        out: dict[str, tuple[int, bytes | None]] = {}
        for d, dirs, files in os.walk(root):
            for n in dirs + files:
                p = Path(d) / n
                st = p.lstat()
                out[str(p.relative_to(root))] = (st.st_mode, p.read_bytes() if n in files
                                                 else None)
        return out

    assert snapshot(dst) == snapshot(src)
    assert (outside / "16385" / "keep").read_text() == "tablespace data"
    assert (outside / "seg").read_text() == "not ours to write"
    assert (outside / "linked").read_bytes() == b"o"  # the other cluster's file is untouched
    # what the template lacks went aside whole (deleted later, in the background): a user
    # table, a database dir, two swapped kinds, two links
    moved = {p.name if not p.is_symlink() else f"link to {os.readlink(p)}"
             for p in (tmp_path / "aside").iterdir()}
    assert len(moved) == 6 and f"link to {outside / '16385'}" in moved, moved
    assert f"link to {outside}" in moved
    recycle.rewrite(src, dst, tmp_path / "aside-2")
    assert snapshot(dst) == snapshot(src) and not (tmp_path / "aside-2").exists()


def test_no_spare_init_rewrites_the_data_it_replaces_into_the_fresh_copy(
    tmp_path: Path, pristine_cache: Path, cluster_env: dict[str, str]
) -> None:
    from tests.helpers import psql, stop_quietly

    env = {**_fresh_env(tmp_path, pristine_cache, cluster_env), "DB_TOOL_KEEP_PREVIOUS": "no"}
    wd = Path(env["PG_WORKING_DIR"])
    (template,) = (pristine_cache / "db-tool" / "templates").iterdir()
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0, r.stderr
    psql(env, "CREATE TABLE old_rows AS SELECT g FROM generate_series(1, 50000) g")
    stop_quietly(wd)
    first = (wd / "data").stat().st_ino
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0, r.stderr
    from tests.helpers import server_account

    recycled = server_account() is None
    if recycled:  # the old tree, rewritten; what the template lacks went aside
        assert (wd / "data").stat().st_ino == first
    else:  # as root the copy is cp -a: never a rewrite of what the server account owns
        assert (wd / "data").stat().st_ino != first
    assert psql(env, "SELECT count(*) FROM pg_class WHERE relname = 'old_rows'").strip() == "0"
    _select_one(env)
    assert not list(wd.glob(".db-tool-build-*")), sorted(os.listdir(wd))
    deadline = time.monotonic() + 20  # and is deleted in the background
    while list(wd.glob(".trash-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(wd.glob(".trash-*")), sorted(os.listdir(wd))
    stop_quietly(wd)
    # what the server wrote at start and stop aside, the copy holds what the template holds
    made = _tree(wd / "data")
    assert made >= _tree(template / "data")


def test_a_rewrite_that_fails_gives_the_discarded_data_back_for_background_removal(
        tmp_path: Path) -> None:
    from db_tool import recycle

    template = tmp_path / "template"
    (template / "base").mkdir(parents=True)
    (template / "PG_VERSION").write_text("15\n")
    os.symlink("/etc", template / "base" / "odd")  # a template never holds one: refused
    wd = tmp_path / "wd"
    trash = wd / f".trash-{os.getpid()}-1"  # discarded by this run: the one kind it takes
    (trash / "base" / "5").mkdir(parents=True)
    (trash / "PG_VERSION").write_text("15\n")
    (trash / "base" / "5" / "16384").write_bytes(b"user data" * 1000)
    recyclable = [trash]
    assert not recycle.into_place(template, wd / "data", recyclable)
    assert not (wd / "data").exists() and not list(wd.glob(".db-tool-build-*"))
    # everything taken is on the list again, to be deleted in the background, nothing lost
    # on the way: the taken tree renamed back, what it held besides moved aside
    assert sorted(os.listdir(wd)) == sorted(p.name for p in recyclable), recyclable
    assert all(p.name.startswith(".trash-") and p.parent == wd for p in recyclable)
    assert [f.read_bytes() for p in recyclable for f in p.rglob("16384")] == [
        b"user data" * 1000]
    assert recycle.into_place(template, wd / "data", []) is False


def test_a_rewrite_takes_only_data_this_run_discarded_never_another_runs_trash(
        tmp_path: Path) -> None:
    """`.trash-<pid>-…` of an earlier run may still be being deleted by that run's background
    `rm -rf`, which holds its directories open and would go on deleting inside the tree after
    it was renamed into the new data dir: only what this very run discarded is rewritten."""
    from db_tool import recycle

    template = tmp_path / "template"
    (template / "base").mkdir(parents=True)
    (template / "PG_VERSION").write_text("15\n")
    wd = tmp_path / "wd"
    theirs = wd / f".trash-{_dead_pid()}-1"
    (theirs / "base").mkdir(parents=True)
    (theirs / "PG_VERSION").write_text("15\n")
    recyclable = [theirs]
    assert recycle.into_place(template, wd / "data", recyclable) is False
    assert recyclable == [theirs] and (theirs / "PG_VERSION").is_file()
    assert sorted(os.listdir(wd)) == [theirs.name]
    ours = wd / f".trash-{os.getpid()}-2"
    theirs.rename(ours)
    recyclable = [ours]
    assert recycle.into_place(template, wd / "data", recyclable) is True
    assert (wd / "data" / "PG_VERSION").read_text() == "15\n" and not ours.exists()


def test_no_spare_init_loads_no_dataclasses_inspect_typing_or_argparse(
    tmp_path: Path, pristine_cache: Path, cluster_env: dict[str, str]
) -> None:
    """A DB_TOOL_NO_SPARE fresh init — the copy, then the rewrite of the data it replaces —
    is a hook path too: nothing it does needs the modules that cost more than its work."""

    env = {**_fresh_env(tmp_path, pristine_cache, cluster_env), "DB_TOOL_KEEP_PREVIOUS": "no"}
    heavy = ["dataclasses", "inspect", "ast", "typing", "argparse", "shutil",
             "db_tool.commands.branch", "db_tool.progress"]
    from tests.helpers import run_fresh_interpreter

    r, loaded = run_fresh_interpreter(
        "from db_tool.cli import postgres_cleanup, postgres_init\n"
        "for _ in range(2):\n"
        "    assert postgres_init.main(['--print-env']) == 0\n"
        "    assert postgres_cleanup.main([]) == 0\n", heavy, env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("started a fresh") == 2, r.stderr
    assert loaded == "loaded: []", r.stdout + r.stderr
