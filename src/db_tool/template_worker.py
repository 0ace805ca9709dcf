"""The template cache's background worker: build the template, keep one spare ready, delete
discarded data — run detached at low priority by template_cache.refill()
(`python -m db_tool.template_cache JOB`), holding the template's lock, so never two at once.

A template is built in a build dir, its own files fsynced (never a machine-wide sync), renamed
into place, and only then marked ready with its manifest (what `data` must hold). A spare is a
plain copy, never fsynced: it carries the boot it was made in.

Everything comes from the job (JSON: installation, account, superuser, database, cache dir,
the environment for initdb); nothing reads the environment.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import time
from pathlib import Path

from db_tool import pgbin, proc, template_manifest
from db_tool import template_cache as tc


def _fsync_tree(root: Path) -> None:
    """Flush our files only (never a machine-wide sync): files first, then directories."""
    dirs = [root]
    for rel, st in template_manifest.walk(root):
        if stat.S_ISDIR(st.st_mode):
            dirs.append(root / rel)
        elif stat.S_ISREG(st.st_mode):
            fd = os.open(root / rel, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for d in reversed(dirs):
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_marker(template: Path, text: str) -> None:
    tmp = template / f"ready.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, template / "ready")
    fd = os.open(template, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Vanishing:
    """Stops the worker, quietly and at once, when a directory it works in is removed or
    replaced (a test or sandbox removing its temp tree, `rm -rf ~/.cache`): going on would
    race that removal ("Directory not empty") and re-create what it removes. Its children
    (initdb, cp) are tied to it (die_with_parent) and go with it."""

    def __init__(self, lock_fd: int) -> None:
        self._lock_fd = lock_fd
        self._dirs: dict[str, tuple[int, int]] = {}
        self._on = True

    def forget(self, path: Path) -> None:
        """Before the worker removes a directory of its own."""
        self._dirs.pop(str(path), None)

    def stop(self) -> None:
        """Before the lock file is closed: from here on nothing is watched."""
        self._on = False

    def add(self, path: Path) -> None:
        st = os.stat(path)
        self._dirs[str(path)] = (st.st_dev, st.st_ino)
        if len(self._dirs) == 1:
            import threading

            threading.Thread(target=self._watch, name="db-tool-vanishing", daemon=True).start()

    def gone(self) -> bool:
        try:
            if os.fstat(self._lock_fd).st_nlink == 0:
                return True  # our lock file was unlinked: the template dir is being removed
            for path, ident in list(self._dirs.items()):
                st = os.stat(path)
                if (st.st_dev, st.st_ino) != ident:
                    return True
        except OSError:
            return True
        return False

    def _watch(self) -> None:
        while self._on:
            if self.gone() and self._on:
                os._exit(0)
            time.sleep(0.05)


def _worker(spec: tc.Template, template: Path, env: dict[str, str],
            lock_fd: int | None = None) -> None:
    templates = template.parent
    if templates.is_symlink() or (templates.exists() and not templates.is_dir()):
        templates.unlink()
    template.mkdir(parents=True, exist_ok=True)
    fd = os.open(template / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    if lock_fd is not None:  # taken for us by the init that started us (refill): use it
        try:
            same = os.path.samestat(os.fstat(lock_fd), os.fstat(fd))
        except OSError:
            same = False
        if same:
            os.close(fd)
            fd = lock_fd
        else:
            with contextlib.suppress(OSError):
                os.close(lock_fd)
    vanishing: _Vanishing | None = None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another worker is at it: never two at once
        vanishing = _Vanishing(fd)
        vanishing.add(template)
        for entry in os.scandir(templates):
            if entry.name.startswith(".stale-"):
                shutil.rmtree(entry.path, ignore_errors=True)
        if template_manifest.usable(template, spec.owner) is not None:
            try:
                _build_template(spec, template, env, vanishing)
            except BaseException:
                # Nothing half-made stays (a full disk, a kill): the next init starts over.
                shutil.rmtree(template, ignore_errors=True)
                raise
        if spec.use_spare:
            _make_spare(spec, template)
    finally:
        if vanishing is not None:
            vanishing.stop()
        os.close(fd)


def _remove_dead_scratch(tmp: Path) -> None:
    with contextlib.suppress(OSError), os.scandir(tmp) as it:
        for entry in it:
            if entry.name.startswith(tc.SCRATCH_PREFIX):
                head = entry.name[len(tc.SCRATCH_PREFIX):].split("-", 1)[0]
                if head.isdigit() and not proc.pid_alive(int(head)) and entry.is_dir(
                        follow_symlinks=False) and entry.stat().st_uid == os.geteuid():
                    proc.kill_servers_left_in(entry.path)
                    shutil.rmtree(entry.path, ignore_errors=True)


def _build_template(spec: tc.Template, template: Path, env: dict[str, str],
                    vanishing: _Vanishing | None = None) -> None:
    (template / "ready").unlink(missing_ok=True)
    for name in ("data", "spares"):
        if (template / name).exists() or (template / name).is_symlink():
            old = template / name
            if old.is_dir() and not old.is_symlink():
                tc.discard(old, template, prefix="stale-")
            else:
                old.unlink()
    for entry in os.scandir(template):
        if entry.name.startswith(("stale-", tc.BUILD_PREFIX, "ready.tmp-")):
            shutil.rmtree(entry.path, ignore_errors=True) if entry.is_dir(
                follow_symlinks=False) else os.unlink(entry.path)
    if spec.account is None:
        parent, scratch = template, None
    else:
        # As root the server account cannot reach our cache: it builds in a private temp
        # dir it may enter (0711), named after our pid so a dead worker's is found again.
        import tempfile

        _remove_dead_scratch(Path(tempfile.gettempdir()))
        scratch = Path(tempfile.mkdtemp(prefix=f"{tc.SCRATCH_PREFIX}{os.getpid()}-"))
        os.chmod(scratch, 0o711)
        parent = scratch
        if vanishing is not None:
            vanishing.add(scratch)
    tc.remove_dead_builds(parent)
    build = tc.build_dir(parent)
    try:
        made = tc.spread_build(build)
        if spec.account is not None:
            os.chown(build, spec.account.uid, spec.account.gid)
        tc.initdb(spec, made, env)
        tc.create_database_offline(spec, made, env)
        _fsync_tree(made)
        try:
            made.rename(template / "data")
        except OSError:  # another filesystem
            proc.run(["cp", "-a", "--", str(made), str(template / "data")],
                     what="cache template", tied=True)
            _fsync_tree(template / "data")
    finally:
        shutil.rmtree(build, ignore_errors=True)
        if scratch is not None:
            if vanishing is not None:
                vanishing.forget(scratch)
            shutil.rmtree(scratch, ignore_errors=True)
    listing = template_manifest.manifest(template / "data")
    text = f"{template_manifest.MAGIC}\n{spec.install.describe()}\n{listing}\nend\n"
    _write_marker(template, text)


def _make_spare(spec: tc.Template, template: Path) -> None:
    spares = template / "spares"
    if spares.is_symlink() or (spares.exists() and not spares.is_dir()):
        spares.unlink()
    spares.mkdir(exist_ok=True)
    boot = tc.boot_id()
    have = False
    for entry in os.scandir(spares):
        if entry.name.startswith(f"ready-{boot}-"):
            have = True
        else:  # tmp-*: a dead copy (we hold the lock); ready-<other boot>: maybe unsynced
            shutil.rmtree(entry.path, ignore_errors=True)
    if have:
        return
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    tmp = spares / f"tmp-{tag}"  # a spread build dir (template_cache.spread_build)
    made = tc.spread_build(tmp)
    proc.run(["cp", "-a", "--", str(template / "data"), str(made)], what="copy spare",
             tied=True)
    made.rename(spares / f"ready-{boot}-{tag}")
    tmp.rmdir()


def main(argv: list[str]) -> int:
    import ast

    job = ast.literal_eval(argv[0])  # a repr of plain values (template_cache.refill)
    acc = job["account"]
    spec = tc.Template(
        install=pgbin.PgInstall(Path(job["bin_dir"]), job["source"]),
        account=None if acc is None else proc.RunAs(acc[0], acc[1], acc[2], acc[3]),
        superuser=job["superuser"], database=job["database"],
        cache_dir=Path(job["cache_dir"]), use_spare=job["use_spare"],
    )
    status = 0
    try:
        _worker(spec, Path(job["template"]), job["env"], job.get("lock_fd"))
    except Exception:
        status = 1  # nothing to report to: the next fresh init sees the state and retries
    for trash in job.get("remove", []):
        if Path(trash).name.startswith(".trash-"):
            shutil.rmtree(trash, ignore_errors=True)
    return status

