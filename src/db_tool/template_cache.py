"""The template cache: fresh clusters are copies of one initdb per installation.

    <cache>/templates/<key>/data        a finished cluster (initdb + the project's database)
    <cache>/templates/<key>/ready       written last: what `data` must hold (the manifest)
    <cache>/templates/<key>/spares/     ready-<boot>-<tag>: finished copies, claimed by rename
    <cache>/templates/<key>/lock        held by the one background worker (build or refill)

A template is trusted only when `ready` is well-formed and `data` matches it (every file
present, of the recorded size, owned by the right account); anything else is rebuilt, saying
which cache it was. A spare carries the boot it was made in: it is never fsynced, so one from
before a crash is thrown away rather than trusted.

No spare (DB_TOOL_NO_SPARE=1, or none ready): the data dir the init discards, when it is
ours, is rewritten into the copy (recycle.py: no file created or freed); otherwise the
template is copied (`cp -a`) into a build dir that spreads its content to quiet block
groups (spreaddir.py) and renamed into place.

Cold path (no usable template): initdb runs in the foreground into a build dir beside
`data/` and is renamed into place — the user's cluster is never copied — and the template is
built by a detached, low-priority worker (`python -m db_tool.template_cache`, whose code is
template_worker.py) after the server is up. Children of the foreground die with it (kill -9
included); a data dir only appears complete (build dir + rename), so an interrupted run
leaves nothing but a build dir, which the next run removes.

Everything here takes explicit values (installation, server account, superuser, database,
cache dir); nothing reads the environment or a Cluster.
"""

from __future__ import annotations

import fcntl
import os
import stat
import sys
import time
from pathlib import Path

from db_tool import output, proc, template_manifest
from db_tool.errors import Error, suppress

TYPE_CHECKING = False  # no typing or dataclasses at run time: a fresh init is the hook path
if TYPE_CHECKING:
    from collections.abc import Mapping

    from db_tool import pgbin

__all__ = ["Template", "discard", "initdb", "provide"]

BUILD_PREFIX = ".db-tool-build-"  # <wd>/.db-tool-build-<pid>-...: a data dir being made
SCRATCH_PREFIX = "db-tool-template-"  # $TMPDIR/db-tool-template-<pid>-*: a root build
REFILL_WAIT = 2.0  # how long a fresh init waits for a spare that is being copied


class Template:
    """What a template is made of and where it is cached (cache_dir None: no cache)."""

    __slots__ = ("account", "cache_dir", "database", "install", "superuser", "use_spare")

    def __init__(self, *, install: pgbin.PgInstall, account: proc.RunAs | None,
                 superuser: str, database: str, cache_dir: Path | None,
                 use_spare: bool = True) -> None:
        self.install = install
        self.account = account
        self.superuser = superuser
        self.database = database
        self.cache_dir = cache_dir
        self.use_spare = use_spare

    def key(self) -> str:
        # Two CRC-32s (64 bits) name the few templates of one machine well enough, and zlib
        # loads in a fraction of hashlib's OpenSSL start-up on the hook path.
        import zlib

        material = "|".join(
            [self.install.fingerprint(), self.superuser, f"{self.owner[0]}:{self.owner[1]}",
             "no-locale,UTF8,trust", "v3", self.database]
        ).encode()
        return f"{zlib.crc32(material):08x}{zlib.crc32(material[::-1]):08x}"

    @property
    def owner(self) -> tuple[int, int]:
        if self.account is not None:
            return self.account.uid, self.account.gid
        return os.getuid(), os.getgid()

    @property
    def path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / "templates" / self.key()


class Provided:
    """How a fresh data dir was made: from `template` (None: plain initdb) by `how`."""

    __slots__ = ("how", "template")

    def __init__(self, template: Path | None, how: str) -> None:
        self.template = template
        self.how = how  # "spare", "copy", "initdb"


def _rmtree(path: str | Path, ignore_errors: bool = False) -> None:
    # shutil loads its compression modules at import: only where something is removed.
    import shutil

    shutil.rmtree(path, ignore_errors=ignore_errors)


# ---- building blocks --------------------------------------------------------------------------
def initdb_argv(install: pgbin.PgInstall, superuser: str, target: Path) -> list[str]:
    argv = [
        install.tool("initdb"), "-D", str(target), "-U", superuser,
        "--auth=trust", "--no-locale", "-E", "UTF8", "--no-sync",
    ]
    if install.major >= 14:
        argv.append("--no-instructions")
    return argv


def initdb(spec: Template, target: Path, env: Mapping[str, str]) -> None:
    account = spec.account
    if account is not None:
        target.mkdir(mode=0o700)
        os.chown(target, account.uid, account.gid)
    proc.run(
        initdb_argv(spec.install, spec.superuser, target), user=account, cwd="/", env=env,
        what=f"initdb {target}", tied=True,
    )


def create_database_offline(spec: Template, datadir: Path, env: Mapping[str, str]) -> None:
    from db_tool import pgwire

    name = spec.database
    if name in ("postgres", "template0", "template1") or "\n" in name:
        return  # exists already / cannot be fed line-wise: created after start instead
    proc.run(
        [spec.install.tool("postgres"), "--single", "-D", str(datadir), "-F",
         "-c", "listen_addresses=", "-c", "logging_collector=off", "postgres"],
        input=f"CREATE DATABASE {pgwire.quote_ident(name)}\n",
        user=spec.account, cwd="/", env=env, what="create database in template",
        tied=True,
    )


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as fh:  # no codec lookup
            return fh.read().decode("ascii", "replace").strip().replace("-", "")[:16]
    except OSError:
        return "noboot"


def _pid_of_build(name: str) -> int | None:
    head = name[len(BUILD_PREFIX):].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def remove_dead_builds(parent: Path) -> None:
    """Build dirs left by a run that was killed (their pid is gone): remove them."""
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(BUILD_PREFIX):
            pid = _pid_of_build(entry.name)
            if pid is None or not proc.pid_alive(pid):
                if entry.is_dir(follow_symlinks=False):
                    proc.kill_servers_left_in(entry.path)
                _rmtree(entry.path, ignore_errors=True)


def build_dir(parent: Path) -> Path:
    return parent / f"{BUILD_PREFIX}{os.getpid()}-{time.monotonic_ns()}"


def _remove_empty(build: Path) -> None:
    # Its data dir is in place: what is left is an empty dir (or, if this fails, one the
    # next run removes as a dead build).
    with suppress(OSError):
        build.rmdir()


def spread_build(build: Path) -> Path:
    """Make `build` (spreaddir: its subdirectories go to quiet block groups) and return the
    path inside it where a data dir is to be made, then renamed into place. Its name differs
    run to run: ext4 starts its search for a quiet group at the hash of that name."""
    from db_tool import spreaddir

    spreaddir.make(build)
    return build / f"data-{time.monotonic_ns():x}"


# ---- the foreground: a fresh data dir ------------------------------------------------------------
def provide(spec: Template, datadir: Path, env: Mapping[str, str],
            recyclable: list[Path] | None = None) -> Provided:
    """Make `datadir` (absent) a fresh cluster. Never leaves a half-made datadir.
    `recyclable`: discarded data dirs (to be deleted); a copy of the template may be made
    out of one of them (recycle.py), which is then taken off the list."""
    parent = datadir.parent
    remove_dead_builds(parent)
    template = spec.path
    if template is not None:
        if spec.use_spare and _claim_spare(template, datadir):
            return Provided(template, "spare")
        why = template_manifest.usable(template, spec.owner)
        if why is None and _recycled(spec, template, datadir, recyclable):
            return Provided(template, "copy")
        if why is None:
            build = build_dir(parent)
            try:
                made = spread_build(build)
                # cp -a keeps ownership (root → PG_OS_USER) and modes (0700) in one pass.
                proc.run(["cp", "-a", "--", str(template / "data"), str(made)],
                         what="copy template", tied=True)
                made.rename(datadir)
            except Error as exc:
                _rmtree(build, ignore_errors=True)
                why = f"copying it failed: {exc.message}"
            except BaseException:
                _rmtree(build, ignore_errors=True)
                raise
            else:
                _remove_empty(build)
                return Provided(template, "copy")
        if why != "not built yet":
            output.warn(f"the template cache {template} is unusable ({why}); rebuilding it "
                        "(this run makes its cluster with initdb)")
            drop(spec)
    build = build_dir(parent)
    try:
        made = spread_build(build)
        if spec.account is not None:  # initdb runs as the server account: it must enter
            os.chown(build, spec.account.uid, spec.account.gid)
        # Cold: seconds of initdb (the template for the next runs is built afterwards).
        from db_tool import progress

        with progress.watch(f"initdb for {spec.install.describe()} (no template yet)",
                            lambda: progress.tree_size(made)):
            initdb(spec, made, env)
        create_database_offline(spec, made, env)
        made.rename(datadir)
    except BaseException:
        _rmtree(build, ignore_errors=True)
        raise
    _remove_empty(build)
    return Provided(template, "initdb")


def _recycled(spec: Template, template: Path, datadir: Path,
              recyclable: list[Path] | None) -> bool:
    if not recyclable or spec.account is not None:
        return False  # as root the copy is cp -a: never rewrite what the server account owns
    from db_tool import recycle

    return recycle.into_place(template / "data", datadir, recyclable)


# A spare is a finished copy of the template kept next to it; claiming one is a rename,
# which costs nothing, where copying ~1300 files takes 0.1-1 s.
def _claim_spare(template: Path, datadir: Path) -> bool:
    spares = template / "spares"
    boot = boot_id()
    for attempt in range(2):
        try:
            names = sorted(os.listdir(spares))
        except OSError:
            return False
        for name in names:
            if not name.startswith(f"ready-{boot}-"):
                continue
            spare = spares / name
            try:
                spare.rename(datadir)
            except FileNotFoundError:
                continue  # claimed by a concurrent init
            except OSError:
                return False  # e.g. the cache is on another filesystem: copy instead
            if (datadir / "PG_VERSION").is_file() and (datadir / "global").is_dir():
                return True
            discard(datadir, datadir.parent)  # a damaged spare: never start on it
            return False
        if attempt == 0 and not _wait_for_refill(template, names):
            return False
    return False


def _wait_for_refill(template: Path, names: list[str]) -> bool:
    """A spare is being copied right now (back-to-back inits): waiting for the rest of that
    copy is cheaper than copying again. True when the refill finished in time."""
    if not any(n.startswith("tmp-") for n in names):
        return False
    try:
        fd = os.open(template / "lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        deadline = time.monotonic() + REFILL_WAIT
        while time.monotonic() < deadline:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                time.sleep(0.01)
        return False
    finally:
        os.close(fd)


def drop(spec: Template) -> None:
    """Forget the template (broken): the next fresh init rebuilds it. Works on a template
    dir that is a file, half-made or not ours (moved aside, removed in the background)."""
    template = spec.path
    if template is None:
        return
    with suppress(OSError):
        (template / "ready").unlink()
    if template.is_symlink() or (template.exists() and not template.is_dir()):
        with suppress(OSError):
            template.unlink()
        return
    if template.exists():
        with suppress(OSError):
            discard(template, template.parent, prefix=".stale-")


def refill(spec: Template, provided: Provided | None, env: Mapping[str, str],
           remove: list[Path] | None = None) -> None:
    """After a fresh init: (re)build the template if needed, keep one spare ready and delete
    `remove` (discarded data), in one detached low-priority worker — the caller never waits."""
    remove = remove or []
    template = provided.template if provided is not None else None
    if template is None or (provided is not None and provided.how == "copy"
                            and not spec.use_spare):
        if remove:
            proc.spawn_detached(["rm", "-rf", "--", *map(str, remove)], low_priority=True)
        return
    account = spec.account
    job: dict[str, object] = {
        "bin_dir": str(spec.install.bin_dir), "source": spec.install.source,
        "account": None if account is None else [account.uid, account.gid, account.name,
                                                 account.home],
        "superuser": spec.superuser, "database": spec.database,
        "cache_dir": str(spec.cache_dir), "use_spare": spec.use_spare,
        "template": str(template), "remove": [str(p) for p in remove],
        "env": dict(env),  # for initdb: the worker reads no environment of its own
    }
    # The worker gets the template's lock already taken: from before this command returns, a
    # waiter (postgres-cleanup: cachedir.settle_near) sees it at work, not a free lock.
    lock = _take_lock_for_worker(template)
    if lock is not None:
        job["lock_fd"] = lock
    try:
        # repr, read back with ast.literal_eval: json (and its re) is ~3 ms of the window the
        # server starts in; -P: our working dir is not on the worker's sys.path (it starts
        # there, then changes to /).
        proc.spawn_detached(
            [sys.executable, "-P", "-m", "db_tool.template_cache", repr(job)],
            env={**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
            low_priority=True, pass_fds=() if lock is None else (lock,),
        )
    finally:
        if lock is not None:
            os.close(lock)  # the worker's copy holds the lock on


def _take_lock_for_worker(template: Path) -> int | None:
    """The template's lock, taken (flock) on a descriptor to hand to the worker; None when
    another worker holds it or the template dir is not a plain directory of ours."""

    try:
        template.mkdir(parents=True, exist_ok=True)
        if not stat.S_ISDIR(os.lstat(template).st_mode):
            return None
        fd = os.open(template / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


# ---- removal ----------------------------------------------------------------------------------
def discard(path: Path, parent: Path, *, prefix: str = ".trash-",
            later: list[Path] | None = None) -> Path:
    """Remove a directory of ours without waiting: rename now, delete in the background at
    low priority — at once, or (`later` given) collected there for refill() to hand to its
    worker, so that a fresh init spawns one background process, not two."""
    trash = parent / f"{prefix}{os.getpid()}-{time.monotonic_ns()}"
    path.rename(trash)
    if later is not None:
        later.append(trash)
    else:
        proc.spawn_detached(["rm", "-rf", "--", str(trash)], low_priority=True)
    return trash


def remove_tree(path: Path, wait: bool = False) -> None:
    """rm -rf path: it is renamed to a hidden sibling (.db-tool-trash-*) and deleted — in the
    background unless `wait`; where renaming fails, deleted here. Stale trash of a removal
    that never finished goes too."""
    trash = path.parent / f".db-tool-trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}"
    try:
        path.rename(trash)
    except OSError:
        _rmtree(path)
        return
    stale = []  # left by a background removal that never finished (machine stopped)
    with suppress(OSError), os.scandir(path.parent) as it:
        for entry in it:
            if entry.name.startswith(".db-tool-trash-") and entry.path != str(trash):
                with suppress(OSError):
                    if time.time() - entry.stat(follow_symlinks=False).st_ctime > 600:
                        stale.append(entry.path)
    if wait:
        for victim in (str(trash), *stale):
            _rmtree(victim, ignore_errors=True)
        return
    proc.spawn_detached(["rm", "-rf", "--", str(trash), *stale], low_priority=True)


def main(argv: list[str]) -> int:
    """`python -m db_tool.template_cache JOB`: the background worker (template_worker.py)."""
    from db_tool import template_worker

    return template_worker.main(argv)


if __name__ == "__main__":
    os.chdir("/")  # started in the caller's working dir (proc.spawn_detached)
    raise SystemExit(main(sys.argv[1:]))
