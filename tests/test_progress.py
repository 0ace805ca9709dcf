"""Progress of long work (progress.py): a line every DB_TOOL_PROGRESS_INTERVAL seconds when
stderr is no terminal; none with -q."""

from __future__ import annotations

import os
import pty
import re
import select
import sys
import time
from collections.abc import Iterator

import pytest

from db_tool import progress
from tests.dbproject import Project, project
from tests.helpers import run_cmd, script


def test_describe_shows_bytes_percent_and_elapsed_time() -> None:
    assert progress.describe("unpacking x", 3 << 20, 12 << 20, 2.25) == \
        "unpacking x: 3.0 MiB of 12.0 MiB (25%), 2.2s"
    assert progress.describe("pg_basebackup", 2048, None, 12.4) == "pg_basebackup: 2.0 KiB, 12s"
    assert progress.describe("check", None, None, 0.5) == "check: 0.5s"


def test_on_a_terminal_one_line_is_redrawn_and_cleared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    leader, follower = pty.openpty()
    terminal = os.fdopen(follower, "w")
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(progress, "TTY_TICK", 0.02)
    with progress.watch("copying", total=100) as meter:
        for _ in range(5):
            meter.add(20)
            time.sleep(0.05)
    terminal.flush()
    shown = ""
    while select.select([leader], [], [], 0.3)[0]:
        shown += os.read(leader, 65536).decode()
    terminal.close()
    os.close(leader)
    assert "\r\x1b[Kcopying: " in shown and "(100%)" in shown
    assert shown.endswith("\r\x1b[K")  # the line is gone once the work is done


@pytest.fixture
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with project(tmp_path_factory.getbasetemp() / "cache") as p:
        p.psql("CREATE TABLE blob AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS t "
               "FROM generate_series(1, 400000) g")
        yield p


def test_backup_and_restore_print_progress_lines_when_not_on_a_terminal(big: Project) -> None:
    env = {**big.env, "DB_TOOL_PROGRESS_INTERVAL": "0.05"}
    r = run_cmd([script("database"), "backup"], env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^database: pg_basebackup: [\d.]+ [KM]iB, [\d.]+s$", r.stderr, re.M), \
        r.stderr
    r = run_cmd([script("database"), "restore"], env, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = re.findall(r"^database: unpacking base\.tar\.gz: [\d.]+ MiB of [\d.]+ MiB "
                       r"\((\d+)%\), [\d.]+s$", r.stderr, re.M)
    assert lines, r.stderr
    assert [int(p) for p in lines] == sorted(int(p) for p in lines), r.stderr
    assert big.psql("SELECT count(*) FROM blob") == "400000"


def test_quiet_restore_prints_nothing_but_does_the_work(big: Project) -> None:
    env = {**big.env, "DB_TOOL_PROGRESS_INTERVAL": "0.05"}
    r = run_cmd([script("database"), "backup", "-q"], env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    big.psql("DELETE FROM blob")
    r = run_cmd([script("database"), "--quiet", "restore"], env, timeout=300)
    assert r.returncode == 0 and r.stderr == ""
    assert big.psql("SELECT count(*) FROM blob") == "400000"
