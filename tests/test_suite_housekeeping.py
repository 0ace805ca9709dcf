"""The test suite's own housekeeping (tests/conftest.py): what a run leaves on disk."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import KEEP_FAILED_RUNS, KEPT_MARK, _prune_kept_runs


def _run_dir(tmp: Path, name: str, kept: bool, age: float) -> Path:
    base = tmp / f"db-tool-tests-{name}"
    (base / "cluster").mkdir(parents=True)
    Path(f"{base}.lock").touch()
    if kept:
        (base / KEPT_MARK).touch()
        stamp = time.time() - age
        os.utime(base / KEPT_MARK, (stamp, stamp))
    return base


def test_only_the_newest_ended_failed_runs_are_kept(tmp_path: Path) -> None:
    old = [_run_dir(tmp_path, f"old{i}", kept=True, age=1000 + i) for i in range(3)]
    newest = [_run_dir(tmp_path, f"new{i}", kept=True, age=10 + i)
              for i in range(KEEP_FAILED_RUNS)]
    running = _run_dir(tmp_path, "running", kept=True, age=5000)  # its session holds the lock
    unmarked = _run_dir(tmp_path, "unmarked", kept=False, age=0)  # not ours to judge
    other = tmp_path / "something-else"
    other.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         f"fd = os.open({str(running) + '.lock'!r}, os.O_RDWR)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('locked', flush=True)\n"
         "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        _prune_kept_runs(tmp_path)
    finally:
        holder.communicate("")
    assert [p.exists() for p in old] == [False] * 3
    assert not any(Path(f"{p}.lock").exists() for p in old)
    assert all(p.exists() for p in newest)
    assert running.exists() and unmarked.exists() and other.exists()


def test_the_running_sessions_base_dir_is_locked_and_not_marked_kept(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """This very run: a prune by a concurrent session must leave its base dir alone."""
    base = tmp_path_factory.getbasetemp()
    if not any(p.name.startswith("db-tool-tests-") for p in (base, *base.parents)):
        pytest.skip(f"--basetemp {base} was given: the suite does not manage that dir")
    while not Path(f"{base}.lock").exists() and base.parent != base:
        base = base.parent  # under xdist each worker has a dir below the controller's
    assert Path(f"{base}.lock").is_file(), "conftest made no session lock"
    assert not (base / KEPT_MARK).exists()
    fd = os.open(f"{base}.lock", os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
