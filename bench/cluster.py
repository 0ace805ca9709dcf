"""Benchmark: postgres-init against the raw PostgreSQL tools, measured in the same run.

    python bench/cluster.py [--repeat N] [--check]

1. fresh:  baseline `initdb + pg_ctl start + createdb`  vs  `postgres-init` (fresh cluster),
           both with a spare template copy ready (the steady state: inits are minutes apart and
           the spare is re-made in the background) and with DB_TOOL_NO_SPARE=1 (a plain copy)
2. reuse:  raw `pg_ctl start` of a stopped cluster       vs  `PG_REUSE=1 postgres-init`
3. help:   `postgres-init --help` (absolute)
Targets (issue 2): fresh <= 0.4x, reuse <= 1.3x, --help <= 150 ms. The template cache is
warmed once before timing (a fresh cluster is a copy of it; the first run ever pays initdb).
--check exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BIN, own, run_cli, run_raw, timed, verdict

from db_tool import pgbin
from db_tool.settings import login_name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--check", action="store_true")
    opts = parser.parse_args()

    pg = pgbin.find()
    tool = pg.tool
    root = Path(tempfile.mkdtemp(prefix="db-tool-bench-"))
    os.chmod(root, 0o755)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PG_PORT": "5591",
           "PG_WORKING_DIR": str(root / "init"), "XDG_CACHE_HOME": str(root / "cache"),
           "PG_SHARED_PRELOAD_LIBRARIES": ""}
    env.pop("PG_REUSE", None)
    raw = root / "raw"
    raw_data, raw_sock = raw / "data", raw / "sock"
    pg_ctl_opts = f"-k {raw_sock} -p 5592 -c listen_addresses="

    def raw_reset() -> None:
        if (raw_data / "postmaster.pid").exists():
            run_raw([tool("pg_ctl"), "-D", str(raw_data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(raw, ignore_errors=True)
        raw.mkdir()
        raw_sock.mkdir()
        own(raw)
        own(raw_sock)

    def raw_fresh() -> None:
        run_raw([tool("initdb"), "-D", str(raw_data), "-U", login_name(), "--auth=trust",
                 "--no-locale", "-E", "UTF8"])
        run_raw([tool("pg_ctl"), "-D", str(raw_data), "-o", pg_ctl_opts, "-l",
                 str(raw / "log"), "-w", "start"])
        run_raw([tool("createdb"), "-h", str(raw_sock), "-p", "5592", "-U", login_name(),
                 "testdb"])

    def ours_stop() -> None:
        run_cli([str(BIN / "postgres-cleanup")], env)

    def ours_fresh() -> None:
        run_cli([str(BIN / "postgres-init")], env)

    no_spare_env = {**env, "DB_TOOL_NO_SPARE": "1"}

    def ours_fresh_no_spare() -> None:
        run_cli([str(BIN / "postgres-init")], no_spare_env)

    def stop_and_wait_for_spare() -> None:
        ours_stop()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(root.glob("cache/db-tool/templates/*/spares/ready-*")):
                return
            time.sleep(0.02)
        raise SystemExit("no spare template copy appeared within 60 s")

    def raw_stop() -> None:
        run_raw([tool("pg_ctl"), "-D", str(raw_data), "-m", "fast", "-w", "stop"])

    def raw_start() -> None:
        run_raw([tool("pg_ctl"), "-D", str(raw_data), "-o", pg_ctl_opts, "-l",
                 str(raw / "log"), "-w", "start"])

    reuse_env = {**env, "PG_REUSE": "1"}

    def ours_reuse() -> None:
        run_cli([str(BIN / "postgres-init")], reuse_env)

    def ours_help() -> None:
        run_cli([str(BIN / "postgres-init"), "--help"], env)

    try:
        print(f"PostgreSQL: {pg.describe()}; running as {login_name()}; "
              f"median of {opts.repeat} runs")
        ours_fresh()  # warm the template cache (the first fresh init ever pays initdb)
        ours_stop()
        base_fresh = timed(raw_fresh, before=raw_reset, repeat=opts.repeat)
        our_fresh = timed(ours_fresh, before=stop_and_wait_for_spare, repeat=opts.repeat)
        stop_and_wait_for_spare()
        our_fresh_copy = timed(ours_fresh_no_spare, before=ours_stop, repeat=opts.repeat)
        raw_stop()
        base_start = timed(raw_start, before=lambda: None if not (
            raw_data / "postmaster.pid").exists() else raw_stop(), repeat=opts.repeat)
        raw_stop()
        ours_stop()
        our_reuse = timed(ours_reuse, before=ours_stop, repeat=opts.repeat)
        help_time = timed(ours_help, repeat=opts.repeat)
    finally:
        if (raw_data / "postmaster.pid").exists():
            raw_stop()
        ours_stop()
        shutil.rmtree(root, ignore_errors=True)

    rows: list[tuple[str, float, str, float, float | None]] = [
        ("fresh: initdb+pg_ctl start+createdb", base_fresh, "postgres-init (fresh)", our_fresh,
         0.4),
        ("fresh: initdb+pg_ctl start+createdb", base_fresh, "  fallback: no spare, cp -a",
         our_fresh_copy, None),
        ("reuse: pg_ctl start", base_start, "PG_REUSE=1 postgres-init", our_reuse, 1.3),
    ]
    ok = True
    for base_name, base, our_name, ours, target in rows:
        ratio = ours / base
        if target is None:  # shown for honesty: the path taken when no spare is ready yet
            print(f"info {our_name:28s} {ours * 1000:7.1f} ms vs {base_name:36s} "
                  f"{base * 1000:7.1f} ms  ratio {ratio:.2f}x")
            continue
        ok &= ratio <= target
        print(f"{verdict(ratio, target)} {our_name:28s} {ours * 1000:7.1f} ms vs "
              f"{base_name:36s} {base * 1000:7.1f} ms  ratio {ratio:.2f}x (target <= {target}x)")
    help_ok = help_time <= 0.150
    ok &= help_ok
    print(f"{'OK ' if help_ok else 'MISS'} postgres-init --help        {help_time * 1000:7.1f} ms"
          f" (target <= 150 ms)")
    return 0 if ok or not opts.check else 1


if __name__ == "__main__":
    raise SystemExit(main())
