"""Where db-tool may keep its caches, tried in order until one is usable.

1. $XDG_CACHE_HOME/db-tool
2. $HOME/.cache/db-tool            (HOME must exist: it is never created)
3. <near>/.db-tool-cache-<uid>     (per user, next to the working dir)
4. $TMPDIR/db-tool-cache-<uid>     (per user; /tmp without TMPDIR)
5. none: the caller works without a cache

A directory is usable when we can create it (mode 0700) or it exists, is a directory owned by
us and we can write it; one owned by someone else is refused (in /tmp anyone may plant one).
An unwritable, missing or unset HOME (Nix build sandboxes, systemd ProtectHome, `nobody`)
thus never stops a command. Which one was taken is said at debug level (HECTIC_LOG=debug).

settle_near(): postgres-cleanup's wait for the background worker of a cache that lies inside
a tree about to be thrown away (here, not in template_cache: the stop loads no more than this).
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from db_tool import output
from db_tool.errors import suppress
from db_tool.settings import CacheLocations  # defined there: every main() builds one

__all__ = ["CacheLocations", "candidates", "choose", "settle_near"]


def candidates(loc: CacheLocations, near: Path | None) -> list[tuple[Path, Path]]:
    """(base that must already exist, cache dir to use below it), in order of preference."""
    uid = os.geteuid()
    out: list[tuple[Path, Path]] = []
    if loc.xdg_cache_home and os.path.isabs(loc.xdg_cache_home):
        xdg = Path(loc.xdg_cache_home)
        out.append((xdg.parent, xdg / "db-tool"))
    if loc.home and os.path.isabs(loc.home):
        home = Path(loc.home)
        out.append((home, home / ".cache" / "db-tool"))
    if near is not None:
        out.append((near, near / f".db-tool-cache-{uid}"))
    tmp = Path(loc.tmpdir) if loc.tmpdir and os.path.isabs(loc.tmpdir) else Path("/tmp")
    out.append((tmp, tmp / f"db-tool-cache-{uid}"))
    return out


def _problem(base: Path, target: Path) -> str | None:
    """None when target is usable (created if missing), else why not."""
    if not base.is_dir():
        return f"{base} does not exist"
    try:
        missing = []
        p = target
        while p != base and not p.exists() and not p.is_symlink():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            with suppress(FileExistsError):
                os.mkdir(d, 0o700)
        st = os.stat(target)
    except OSError as exc:
        return exc.strerror or str(exc)
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not by us"
    if st.st_mode & 0o022:
        try:
            os.chmod(target, stat.S_IMODE(st.st_mode) & ~0o022)
        except OSError as exc:
            return f"writable by others and cannot fix that: {exc.strerror}"
    if not os.access(target, os.W_OK | os.X_OK):
        return "not writable"
    return None


def choose(loc: CacheLocations, near: Path | None, what: str = "cache") -> Path | None:
    """The first usable cache dir, or None (work without a cache)."""
    tried: list[str] = []
    for base, target in candidates(loc, near):
        why = _problem(base, target)
        if why is None:
            output.debug(f"{what}: using {target}"
                         + (f" (skipped {'; '.join(tried)})" if tried else ""))
            return target
        tried.append(f"{target}: {why}")
    output.debug(f"{what}: no usable directory ({'; '.join(tried)}); working without a cache")
    return None


# How long postgres-cleanup waits for a worker in a cache inside the tree it is in.
SETTLE_WAIT = 10.0


def settle_near(working_dir: Path, tmpdir: str | None, timeout: float = SETTLE_WAIT) -> bool:
    """Wait up to `timeout` for the background worker of a fallback cache — the one beside the
    working dir, or in $TMPDIR (/tmp without it) — to finish; True when none is at work.

    Those caches are taken when HOME is unusable (build sandboxes, CI, containers), so they
    sit inside a tree that is thrown away right after `postgres-cleanup` (a trap, then
    `rm -rf`): a spare still being copied into it would make that `rm` fail ("Directory not
    empty"). The cache under HOME or XDG_CACHE_HOME is never waited for."""
    # With no HOME and no XDG_CACHE_HOME, the candidates are exactly the fallbacks.
    fallbacks = candidates(CacheLocations(tmpdir=tmpdir), working_dir.parent)
    locks: list[Path] = []
    for _, cache in fallbacks:
        try:
            names = os.listdir(cache / "templates")
        except OSError:
            continue
        locks += [cache / "templates" / name / "lock" for name in names]
    if not locks:
        return True
    from db_tool import fslock

    deadline = time.monotonic() + timeout
    for lock in locks:
        while fslock.held(lock):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
    return True
