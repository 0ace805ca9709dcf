"""Ctrl-C at any moment of a command's start-up ends it with exit 130 and one line, never a
Python traceback (issue 9 item 18)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import base_env, script


def test_interrupt_once_the_package_is_imported_exits_130_quietly() -> None:
    for code in ("import db_tool.cli; raise KeyboardInterrupt",
                 "import db_tool.cli, os, signal; os.kill(os.getpid(), signal.SIGINT); "
                 "import db_tool.cli.database"):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60, check=False)
        assert r.returncode == 130, r.stderr
        assert "Traceback" not in r.stderr
        assert r.stderr.strip() == "interrupted"


def test_other_uncaught_errors_still_show_their_traceback() -> None:
    r = subprocess.run([sys.executable, "-c", "import db_tool.cli; raise ValueError('x')"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 1 and "Traceback" in r.stderr and "ValueError: x" in r.stderr


def _ours(stderr: str) -> bool:
    """A traceback through db-tool's own files. The interpreter's start-up before the first
    line of db_tool/__init__.py (site, the console script's `import re`: 20-40 ms on a loaded
    machine) is outside any package's reach; from that line on, no traceback."""
    return "Traceback" in stderr and "/db_tool/" in stderr


@pytest.mark.parametrize("argv", [
    ["database", "status"], ["database", "--help"], ["migrator", "status"],
    ["postgres-cleanup"], ["db-ops", "--help"], ["postgres-init", "--print-env"],
])
def test_ctrl_c_in_the_first_50_ms_never_prints_a_traceback(argv: list[str],
                                                             tmp_path: Path) -> None:
    env = base_env(LOCAL_DIR=str(tmp_path), PG_WORKING_DIR=str(tmp_path / "wd"),
                   DB_URL=f"postgresql:///x?host={tmp_path}")
    failures = []
    for delay_ms in range(0, 60, 3):
        p = subprocess.Popen([script(argv[0]), *argv[1:]], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay_ms / 1000)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
        if _ours(err) or p.returncode not in (0, 1, 3, 130, -signal.SIGINT):
            failures.append((delay_ms, p.returncode, err[-400:]))
    subprocess.run([script("postgres-cleanup")], env=env, capture_output=True, timeout=60,
                   check=False)
    assert failures == []
