"""The last discarded cluster: a fresh init (no PG_REUSE) keeps one previous generation.

A cluster holding real data is not thrown away by a fresh init: it is renamed to
<wd>/data.previous (a rename: no time cost) and the generation before it is deleted in the
background. `database restore --previous` swaps it back; DB_TOOL_KEEP_PREVIOUS=0 turns this
off. "Real data" means at least one user relation (a file numbered from 16384 up, the first
OID PostgreSQL hands out to user objects) in some database, or a tablespace.
"""

from __future__ import annotations

import os
from pathlib import Path

from db_tool import output, template_cache
from db_tool.errors import suppress

__all__ = ["PREVIOUS", "holds_data", "keep"]

PREVIOUS = "data.previous"
_FIRST_USER_OID = 16384


def holds_data(datadir: Path) -> bool:
    try:
        if any(os.scandir(datadir / "pg_tblspc")):
            return True
        dbs = [e.path for e in os.scandir(datadir / "base") if e.is_dir()]
        for db in dbs:
            for entry in os.scandir(db):
                head = entry.name.split("_", 1)[0].split(".", 1)[0]
                if head.isdigit() and int(head) >= _FIRST_USER_OID:
                    return True
    except OSError:
        return False
    return False


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def keep(datadir: Path, working_dir: Path) -> Path:
    """Rename datadir to data.previous (deleting the generation before in the background)
    and say so: its size, how to get it back, how to keep the data next time."""
    previous = working_dir / PREVIOUS
    if previous.exists() or previous.is_symlink():
        if previous.is_dir() and not previous.is_symlink():
            template_cache.discard(previous, working_dir)
        else:
            previous.unlink()
    datadir.rename(previous)
    output.info(
        f"kept the data of the previous cluster ({output.human_size(_size(previous))}) in "
        f"{previous}: `database restore --previous` brings it back, PG_REUSE=1 keeps the data "
        "next time (DB_TOOL_KEEP_PREVIOUS=0: do not keep it)"
    )
    return previous
