"""Make a fresh copy of the template out of the data dir a fresh init discards.

A fresh init that replaces a cluster would otherwise create the template's ~1300 files anew
and then delete the old ones: on a journal-less ext4 both halves hurt, because every file
created skips the inodes freed in the last minutes (spreaddir.py). Rewriting the discarded
tree in place creates and frees almost no inode: each file of the template overwrites the
old file of the same name, what the template lacks is moved aside (deleted in the
background, as the discarded data was before), what the
old tree lacks is created. The result holds exactly the template's entries, contents and
modes; it is built under a build dir and renamed into place only when complete, so a kill
at any moment leaves a build dir the next run removes, never a half-made data dir.

Only for a tree that is ours through and through: the caller's own account owns every file
(as root with a server account the copy is `cp -a`, never a rewrite that would follow what
the server account planted). Nothing is written through a symlink (O_NOFOLLOW, symlinks are
removed, never followed: a tablespace link in pg_tblspc goes, its target stays) nor into a
file with another hard link (pg_upgrade --link shares files between clusters): such a file
is replaced by a new one.
"""

from __future__ import annotations

import os
import stat
import time

from db_tool.errors import suppress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["into_place", "rewrite"]

_CHUNK = 1 << 30


class _Aside:
    """Where what the template lacks goes: renamed into one directory (made on first use)
    that the caller deletes in the background — a user's gigabytes are not unlinked while
    the user waits."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.used = 0

    def take(self, path: str) -> None:
        if not self.used:
            os.mkdir(self.path, 0o700)
        self.used += 1
        os.rename(path, os.path.join(self.path, str(self.used)))


def _copy_file(src: str, dst: str, mode: int) -> None:
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        try:
            fout = os.open(dst, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            st = os.fstat(fout)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.geteuid():
                os.close(fout)
                fout = -1
                os.unlink(dst)
                fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
                st = os.fstat(fout)
            # Overwritten, not truncated first: freeing and reallocating the blocks of a file
            # of the same size costs as much as the copy (measured: 0.65 s for 1264 files).
            while os.copy_file_range(fin, fout, _CHUNK):
                pass
            size = os.fstat(fin).st_size
            if st.st_size > size:
                os.ftruncate(fout, size)
            if stat.S_IMODE(st.st_mode) != mode:
                os.fchmod(fout, mode)
        finally:
            if fout >= 0:
                os.close(fout)
    finally:
        os.close(fin)


def _rewrite_dir(src: str, dst: str, aside: _Aside) -> None:
    with os.scandir(src) as it:
        want = {e.name: e.stat(follow_symlinks=False) for e in it}
    kept: dict[str, os.stat_result] = {}
    with os.scandir(dst) as it:
        have = {e.name: e.stat(follow_symlinks=False) for e in it}
    for name, st in have.items():
        w = want.get(name)
        if w is None or stat.S_IFMT(w.st_mode) != stat.S_IFMT(st.st_mode) or (
                stat.S_ISDIR(st.st_mode) and st.st_uid != os.geteuid()):
            aside.take(os.path.join(dst, name))
        else:
            kept[name] = st
    for name, w in want.items():
        s, d = os.path.join(src, name), os.path.join(dst, name)
        mode = stat.S_IMODE(w.st_mode)
        if stat.S_ISDIR(w.st_mode):
            old = kept.get(name)
            if old is None:
                os.mkdir(d, 0o700)
            _rewrite_dir(s, d, aside)
            if old is None or stat.S_IMODE(old.st_mode) != mode:
                os.chmod(d, mode)
        elif stat.S_ISREG(w.st_mode):
            _copy_file(s, d, mode)
        else:
            raise OSError(f"{s} is neither a file nor a directory")


def rewrite(src: str | os.PathLike[str], dst: str | os.PathLike[str],
            aside: str | os.PathLike[str]) -> None:
    """Make the directory tree dst (ours, not a symlink) hold exactly what src holds; what
    it held besides is renamed into the directory `aside` (same file system), made only when
    needed: the caller deletes it whenever it exists, also after a failure."""
    st = os.lstat(dst)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise OSError(f"{dst} is not a directory of ours")
    _rewrite_dir(os.fspath(src), os.fspath(dst), _Aside(os.fspath(aside)))
    want = stat.S_IMODE(os.lstat(src).st_mode)
    if stat.S_IMODE(st.st_mode) != want:
        os.chmod(dst, want)


def into_place(template_data: Path, datadir: Path, recyclable: list[Path]) -> bool:
    """Rewrite one of `recyclable` (discarded data dirs of ours, .trash-* beside datadir,
    to be deleted) into a copy of template_data, in a build dir, and rename it to datadir
    (absent). True when done; the one taken is off the list and what it held besides is on
    it. False: nothing changed (what was taken, if anything, is back on the list under a new
    name), copy afresh."""
    from db_tool import output
    from db_tool import template_cache as tc

    parent = datadir.parent
    # Only what this run discarded: an earlier run's .trash-* may still be in its background
    # `rm -rf`, which holds the tree's directories open and would delete on inside it.
    mine = f".trash-{os.getpid()}-"
    old = next((p for p in recyclable if p.parent == parent and p.name.startswith(mine)
                and p.is_dir() and not p.is_symlink() and (p / "PG_VERSION").is_file()), None)
    if old is None:
        return False
    build = tc.build_dir(parent)
    aside = parent / f".trash-{os.getpid()}-{time.monotonic_ns()}"
    made = build / "data"
    taken = False
    try:
        os.mkdir(build, 0o700)
        old.rename(made)
        recyclable.remove(old)
        taken = True
        rewrite(template_data, made, aside)
        made.rename(datadir)
    except BaseException as exc:
        if taken:  # a user's data may be large: deleted in the background, not here
            back = parent / f".trash-{os.getpid()}-{time.monotonic_ns()}"
            with suppress(OSError):
                made.rename(back)
                recyclable.append(back)
        tc._rmtree(build, ignore_errors=True)
        if not isinstance(exc, OSError):
            raise
        output.debug(f"copying the template over discarded data failed ({exc}); copying it "
                     "afresh")
        return False
    finally:
        if aside.is_dir():  # what the template lacks: deleted in the background
            recyclable.append(aside)
    with suppress(OSError):
        os.rmdir(build)
    return True
