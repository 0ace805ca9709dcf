"""fslock: the flock helpers every serialised path uses, and errors.suppress beside them."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from db_tool import fslock
from db_tool.errors import Error, suppress


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_exclusive_is_reentrant_in_one_thread_and_held_until_the_outer_exit(
    tmp_path: Path,
) -> None:
    lock = tmp_path / "lock"
    before = _open_fds()
    with fslock.exclusive(lock):
        assert fslock.held(lock) is True
        with fslock.exclusive(lock, busy="would not wait"):  # ours already: no Error
            assert fslock.held(lock) is True
        assert fslock.held(lock) is True  # the nested exit kept it
    assert fslock.held(lock) is False
    assert _open_fds() == before


def _hold_in_another_thread(lock: Path) -> tuple[threading.Thread, threading.Event]:
    """Take lock exclusively in a thread of its own (another holder, as far as fslock can
    tell), held until the returned event is set."""
    taken, release = threading.Event(), threading.Event()

    def other() -> None:
        with fslock.exclusive(lock):
            taken.set()
            release.wait(10)

    t = threading.Thread(target=other)
    t.start()
    assert taken.wait(10)
    return t, release


def test_exclusive_taken_elsewhere_is_busy_at_once_and_leaks_no_descriptor(
    tmp_path: Path,
) -> None:
    lock = tmp_path / "lock"
    t, release = _hold_in_another_thread(lock)
    try:
        before = _open_fds()
        with pytest.raises(Error, match=r"^busy here$"), fslock.exclusive(lock, busy="busy here"):
            raise AssertionError("entered a lock another thread holds")
        assert _open_fds() == before
    finally:
        release.set()
        t.join()
    with fslock.exclusive(lock, busy="busy here"):
        pass


def test_exclusive_waits_for_the_holder_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    lock = tmp_path / "lock"
    t, release = _hold_in_another_thread(lock)
    threading.Timer(0.2, release.set).start()
    with fslock.exclusive(lock, waiting="waiting for the other one"):
        assert release.is_set()
    t.join()
    assert "waiting for the other one" in capsys.readouterr().err


def test_a_directory_is_locked_itself_and_shared_counts_as_held(tmp_path: Path) -> None:
    d = tmp_path / "dir"
    d.mkdir()
    with fslock.exclusive(d):
        assert fslock.held(d, directory=True) is True
    assert os.listdir(d) == []
    lock = tmp_path / "users"
    with fslock.shared(lock):
        assert fslock.held(lock) is True
        assert not fslock.unused(lock)
    assert fslock.unused(lock)


def test_suppress_swallows_the_kinds_given_and_their_subclasses_only() -> None:
    with suppress(OSError):
        raise FileNotFoundError("gone")
    with suppress(KeyError, ValueError):
        raise ValueError("x")
    with pytest.raises(KeyError), suppress(OSError):
        raise KeyError("not an OSError")
    with pytest.raises(KeyboardInterrupt), suppress(Exception):
        raise KeyboardInterrupt
    with suppress(OSError):
        done = True
    assert done
