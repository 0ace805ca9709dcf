"""Shared bits of the benchmarks: timing, running raw server tools as the server account."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from db_tool import privs
from db_tool.proc import RunAs

BIN = Path(sys.executable).parent


def account() -> RunAs | None:
    """Raw tools run as the same account postgres-init uses (setuid in the child, no runuser)."""
    return privs.server_account(os.environ.get("PG_OS_USER"))


def run_raw(argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    acc = account()
    subprocess.run(
        list(argv), check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, cwd="/", env=dict(env or os.environ),
        user=acc.uid if acc else None, group=acc.gid if acc else None,
        extra_groups=[] if acc else None,
    )


def own(path: Path) -> None:
    """Make a directory usable by the server account (as postgres-init does)."""
    acc = account()
    if acc is not None:
        privs.grant_search(path, acc)
        os.chown(path, acc.uid, acc.gid)


def run_cli(argv: Sequence[str], env: Mapping[str, str]) -> None:
    subprocess.run(list(argv), check=True, env=dict(env), stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed(fn: Callable[[], None], before: Callable[[], None] | None = None,
          repeat: int = 5) -> float:
    """Median wall time of fn over `repeat` runs; `before` (untimed) resets state each run."""
    samples = []
    for _ in range(repeat):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def verdict(ratio: float, target: float) -> str:
    return "OK " if ratio <= target else "MISS"
