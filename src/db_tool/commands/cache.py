"""cache: what db-tool keeps in its cache dir (templates per PostgreSQL build, test clusters,
the bundle) and removing what is no longer used."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from db_tool import cachedir, fslock
from db_tool.errors import Error
from db_tool.project_settings import ProjectSettings

DAY = 86400.0


@dataclass(frozen=True)
class Entry:
    path: Path
    kind: str  # "template", "other"
    size: int  # bytes on disk
    last_used: float  # epoch seconds
    installation: str  # what the template was built from ("" when unknown)
    bin_dir: Path | None


def disk_usage(path: Path) -> int:
    """Bytes on disk under path (like du), symlinks not followed."""
    total = 0
    stack = [path]
    while stack:
        p = stack.pop()
        try:
            st = os.lstat(p)
        except OSError:
            continue
        total += st.st_blocks * 512
        if os.path.isdir(p) and not os.path.islink(p):
            with contextlib.suppress(OSError):
                stack.extend(Path(p, n) for n in os.listdir(p))
    return total


def _mtime(*paths: Path) -> float:
    times = []
    for p in paths:
        with contextlib.suppress(OSError):
            times.append(os.lstat(p).st_mtime)
    return max(times, default=0.0)


def location(settings: ProjectSettings) -> Path | None:
    """The cache dir db-tool uses here (the cluster's choice: see cachedir.py)."""
    near = settings.working_dir.parent if settings.working_dir is not None else None
    return cachedir.choose(settings.cache_locations, near)


def entries(cache: Path) -> list[Entry]:
    found: list[Entry] = []
    templates = cache / "templates"
    for name in sorted(os.listdir(cache)) if cache.is_dir() else []:
        path = cache / name
        if path == templates and path.is_dir():
            for key in sorted(os.listdir(path)):
                found.append(_template(path / key))
            continue
        found.append(Entry(path, "other", disk_usage(path), _mtime(path), "", None))
    return found


def _template(path: Path) -> Entry:
    described = ""
    bin_dir = None
    with contextlib.suppress(OSError, UnicodeDecodeError, IndexError):
        described = (path / "ready").read_text(encoding="utf-8").splitlines()[1]
        m = re.search(r" from (.+) \(found via ", described)
        bin_dir = Path(m.group(1)) if m else None
    return Entry(path, "template", disk_usage(path),
                 _mtime(path, path / "ready", path / "spares"), described, bin_dir)


def _serving(path: Path) -> bool:
    for pidfile in path.rglob("postmaster.pid") if path.is_dir() else []:
        with contextlib.suppress(OSError, ValueError, IndexError):
            os.kill(int(pidfile.read_text().splitlines()[0]), 0)
            return True
    return False


def why_prune(entry: Entry, *, everything: bool, older_than_days: float,
              now: float | None = None) -> str | None:
    """Why this entry goes (None: it stays). Pure but for the bin dir's existence."""
    if everything:
        return "--all"
    if entry.kind != "template":
        return None
    if not entry.installation:
        return "not finished (no ready marker)"
    if entry.bin_dir is not None and not (entry.bin_dir / "postgres").exists():
        return f"its PostgreSQL ({entry.bin_dir}) is gone"
    age = ((now if now is not None else time.time()) - entry.last_used) / DAY
    if age > older_than_days:
        return f"unused for {age:.0f} days"
    return None


def prune(cache: Path, *, everything: bool, older_than_days: float,
          dry_run: bool = False) -> list[tuple[Entry, str]]:
    """Remove what why_prune names (skipping templates being built); returns what went."""
    removed = []
    for entry in entries(cache):
        why = why_prune(entry, everything=everything, older_than_days=older_than_days)
        if why is None:
            continue
        if entry.kind == "template" and fslock.held(entry.path / "lock") is True:
            continue  # the background worker is building or refilling it
        if entry.kind == "other" and _serving(entry.path):
            continue  # a test cluster that is running right now
        if not dry_run:
            try:
                if entry.path.is_dir() and not entry.path.is_symlink():
                    shutil.rmtree(entry.path)
                else:
                    entry.path.unlink()
            except OSError as exc:
                raise Error(f"cannot remove {entry.path}: {exc.strerror}; fix its "
                            "permissions or remove it by hand") from exc
        removed.append((entry, why))
    return removed
