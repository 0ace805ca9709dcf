"""`database log -f`: following the server log (commands/logs.py)."""

from __future__ import annotations

import os
import select
import subprocess
import time

from tests.helpers import run_cmd, script


def test_log_follow_shows_what_the_server_writes_next(cluster_env: dict[str, str]) -> None:
    r = run_cmd([script("postgres-init"), "--print-env"], cluster_env)
    assert r.returncode == 0, r.stderr
    url = r.stdout.split("PGURL=", 1)[1].splitlines()[0].strip("'")
    child = subprocess.Popen([script("database"), "log", "-f"], env=cluster_env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)
    assert child.stdout is not None
    seen = b""
    try:
        time.sleep(0.5)
        subprocess.run(["psql", "-X", "-q", "-d", url, "-c",
                        "DO $$ BEGIN RAISE LOG 'followed-%', 42; END $$"], check=True,
                       capture_output=True, env=cluster_env)
        deadline = time.monotonic() + 20
        while b"followed-42" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([child.stdout], [], [], 0.2)
            if ready:
                seen += os.read(child.stdout.fileno(), 65536)
        assert child.poll() is None  # still following
    finally:
        child.send_signal(2)
        rc = child.wait(timeout=10)
    assert b"followed-42" in seen
    assert rc == 0


def test_log_follow_takes_no_file_name(cluster_env: dict[str, str]) -> None:
    r = run_cmd([script("database"), "log", "-f", "1"], cluster_env)
    assert r.returncode == 9 and "takes no file name" in r.stderr
