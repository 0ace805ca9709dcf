"""Terminal output: colour (NO_COLOR, FORCE_COLOR) and the pager (PAGER, --no-pager)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path

from db_tool.settings import color_from, pager_from
from tests.helpers import run_cmd, script


def test_pager_defaults_to_less_that_quits_on_one_screen() -> None:
    assert pager_from({}) == ("less", "-FRX")
    assert pager_from({"PAGER": "most -s"}) == ("most", "-s")
    assert pager_from({"PAGER": ""}) == ()
    assert pager_from({"PAGER": "cat"}) == ()


def test_color_follows_no_color_then_force_color() -> None:
    assert color_from({}) is None
    assert color_from({"FORCE_COLOR": "1"}) is True
    assert color_from({"FORCE_COLOR": "0"}) is None
    assert color_from({"NO_COLOR": "1", "FORCE_COLOR": "1"}) is False


def test_force_color_colours_messages_in_a_pipe(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "LOCAL_DIR": str(tmp_path)}
    r = run_cmd([script("database"), "cleanup"], {**env, "FORCE_COLOR": "1"})
    assert "\033[36mdatabase\033[0m:" in r.stderr
    r = run_cmd([script("database"), "cleanup"], {**env, "FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert "\033[" not in r.stderr and "database:" in r.stderr


def _on_terminal(argv: list[str], env: dict[str, str], timeout: float = 60) -> str:
    """Run argv with stdout on a pseudo-terminal; what it printed there."""
    leader, follower = pty.openpty()
    child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=follower,
                             stderr=subprocess.PIPE, close_fds=True)
    os.close(follower)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        elif child.poll() is not None:
            break
    child.wait(timeout=10)
    os.close(leader)
    return out.decode("utf-8", "replace")


def test_log_on_a_terminal_goes_through_pager_unless_no_pager(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    r = run_cmd([script("postgres-init")], cluster_env)
    assert r.returncode == 0, r.stderr
    marker = tmp_path / "paged"
    pager = tmp_path / "pager.sh"
    pager.write_text(f'#!/bin/sh\necho paged >> "{marker}"\ncat "$@"\n')
    pager.chmod(0o755)
    env = {**cluster_env, "PAGER": str(pager)}
    shown = _on_terminal([script("database"), "log"], env)
    assert marker.read_text() == "paged\n" and "database system is ready" in shown
    shown = _on_terminal([script("database"), "--no-pager", "log"], env)
    assert marker.read_text() == "paged\n" and "database system is ready" in shown
    shown = _on_terminal([script("database"), "log"], {**env, "PAGER": ""})
    assert marker.read_text() == "paged\n" and "database system is ready" in shown
