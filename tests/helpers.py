"""Helpers for tests that start their own clusters (beyond the shared session cluster)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Mapping
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
