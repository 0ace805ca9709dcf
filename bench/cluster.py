"""Benchmark: postgres-init / postgres-cleanup against the raw PostgreSQL tools and the bound,
every baseline measured in the same invocation (ratios, not absolute times, are the result).

    python bench/cluster.py [--repeat N] [--check] [--only NAME,...]

Cases (issue 11 targets):
  warm     fresh init, spare ready             vs bound: rename a prepared copy + postgres + poll
                                                  (in-process, no interpreter start)  <= 1.5x
  cold     fresh init, empty template cache    vs raw initdb + pg_ctl start + createdb  <= 1.0x
  nospare  fresh init, DB_TOOL_NO_SPARE=1      vs raw cp -a of a prepared cluster + pg_ctl
                                                  start (what testing.postgresql does)   info
  cycle    init -> cleanup -> database cleanup, back to back (no waiting for the spare)
                                               vs raw cp -a + pg_ctl start + stop + rm -rf info
  reuse    PG_REUSE=1 postgres-init            vs pg_ctl start                          <= 0.7x
           and the floor of any Python command (bare interpreter start + postgres + poll +
           connect, no check) vs pg_ctl start                                       info
  stop     postgres-cleanup                    vs pg_ctl stop -m fast                   <= 0.7x
  help     postgres-init --help (absolute)                                           <= 150 ms
The peers' own numbers (testing.postgresql & co, targets for nospare and cycle) come from
bench/peers.py. Runs of ours and of the baseline alternate so that machine load hits both.
--check exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BIN, account, own, run_cli, run_raw

from db_tool import pgbin, pgwire
from db_tool.settings import login_name

Fn = Callable[[], None]


def paired(ours: Fn, base: Fn, repeat: int, before_ours: Fn | None = None,
           before_base: Fn | None = None) -> tuple[list[float], list[float]]:
    """Alternate ours and base `repeat` times; `before_*` (untimed) reset state."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeat):
        for fn, before, out in ((ours, before_ours, a), (base, before_base, b)):
            if before is not None:
                before()
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return a, b


def spread(samples: list[float]) -> str:
    return f"{min(samples) * 1000:.0f}-{max(samples) * 1000:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--only", default="")
    opts = parser.parse_args()
    only = set(filter(None, opts.only.split(",")))

    def wanted(name: str) -> bool:
        return not only or name in only

    pg = pgbin.find()
    tool = pg.tool
    acc = account()
    user = login_name()
    root = Path(tempfile.mkdtemp(prefix="db-tool-bench-"))
    os.chmod(root, 0o755)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PG_PORT": "5591",
           "PG_WORKING_DIR": str(root / "init"), "XDG_CACHE_HOME": str(root / "cache"),
           "PG_SHARED_PRELOAD_LIBRARIES": "", "NO_TTY": "0"}
    env.pop("PG_REUSE", None)
    raw = root / "raw"
    raw_data, raw_sock = raw / "data", raw / "sock"
    prepared = root / "prepared"  # a finished cluster for the copy baselines and the bound
    pg_ctl_opts = f"-k {raw_sock} -p 5592 -c listen_addresses="

    def raw_stop() -> None:
        if (raw_data / "postmaster.pid").exists():
            run_raw([tool("pg_ctl"), "-D", str(raw_data), "-m", "fast", "-w", "stop"])

    def raw_reset() -> None:
        raw_stop()
        shutil.rmtree(raw, ignore_errors=True)
        raw.mkdir()
        raw_sock.mkdir()
        own(raw)
        own(raw_sock)

    def raw_start() -> None:
        if (raw_data / "postmaster.pid").exists():
            return
        run_raw([tool("pg_ctl"), "-D", str(raw_data), "-o", pg_ctl_opts, "-l",
                 str(raw / "log"), "-w", "start"])

    def raw_fresh() -> None:
        run_raw([tool("initdb"), "-D", str(raw_data), "-U", user, "--auth=trust",
                 "--no-locale", "-E", "UTF8"])
        raw_start()
        run_raw([tool("createdb"), "-h", str(raw_sock), "-p", "5592", "-U", user, "testdb"])

    def raw_copy_start() -> None:
        subprocess.run(["cp", "-a", str(prepared), str(raw_data)], check=True)
        raw_start()

    def raw_cycle() -> None:
        raw_reset()
        raw_copy_start()
        raw_stop()
        shutil.rmtree(raw)

    def bound_fresh() -> None:
        """The physical limit of a warm fresh init: rename a ready copy, spawn, poll."""
        (root / "spare").rename(raw_data)
        bound_start()

    def python_floor_start() -> None:
        """The least any Python command can take to reuse a cluster: its interpreter's bare
        start (-S, nothing imported) + spawn + poll + connect, with no check at all."""
        subprocess.run([str(BIN / "python3"), "-S", "-c", "pass"], check=True)
        bound_start()

    def bound_start() -> None:
        subprocess.Popen(
            [tool("postgres"), "-D", str(raw_data), "-k", str(raw_sock), "-p", "5592",
             "-c", "listen_addresses="],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, user=acc.uid if acc else None,
            group=acc.gid if acc else None, extra_groups=[] if acc else None,
        )
        pid = raw_data / "postmaster.pid"
        while True:
            try:
                lines = pid.read_text().splitlines()
            except FileNotFoundError:
                lines = []
            if len(lines) >= 8 and lines[7].strip() == "ready":
                break
            time.sleep(0.001)
        pgwire.connect(raw_sock, 5592, user, "testdb").close()

    def bound_reset() -> None:
        raw_reset()
        subprocess.run(["cp", "-a", str(prepared), str(root / "spare")], check=True)

    def ours(*args: str, extra: dict[str, str] | None = None) -> Fn:
        e = {**env, **(extra or {})}
        return lambda: run_cli([str(BIN / args[0]), *args[1:]], e)

    ours_stop = ours("postgres-cleanup")
    ours_fresh = ours("postgres-init")

    def wait_for_worker(timeout: float = 120) -> None:
        """Until the background worker (template build, spare refill) is idle."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(root.glob("cache*/db-tool/templates/*/spares/ready-*")) and not any(
                    root.glob("cache*/db-tool/templates/*/spares/tmp-*")):
                return
            time.sleep(0.02)
        raise SystemExit("the background worker did not finish within 120 s")

    def stop_and_wait_for_spare() -> None:
        ours_stop()
        wait_for_worker()

    cold_n = [0]

    def cold_reset() -> None:
        ours_stop()
        wait_for_worker()
        cold_n[0] += 1
        env_cold["XDG_CACHE_HOME"] = str(root / f"cache-cold-{cold_n[0]}")

    env_cold = dict(env)

    def ours_cold() -> None:
        run_cli([str(BIN / "postgres-init")], env_cold)

    ok = True

    class Results(list[tuple[str, str, list[float], str, list[float], float | None]]):
        def append(self, row: tuple[str, str, list[float], str, list[float],
                                    float | None]) -> None:
            nonlocal ok
            super().append(row)
            _name, our_name, a, base_name, b, target = row
            ratio = statistics.median(a) / statistics.median(b)
            line = (f"{our_name:36s} {statistics.median(a) * 1000:7.1f} ms ({spread(a)}) vs "
                    f"{base_name:32s} {statistics.median(b) * 1000:7.1f} ms ({spread(b)})  "
                    f"ratio {ratio:.2f}x")
            if target is None:
                print(f"info {line}", flush=True)
                return
            ok &= ratio <= target
            print(f"{'OK  ' if ratio <= target else 'MISS'} {line} (target <= {target}x)",
                  flush=True)

    results = Results()
    try:
        print(f"PostgreSQL: {pg.describe()}; running as {user}; median of {opts.repeat} "
              f"runs; load average {os.getloadavg()[0]:.1f}", flush=True)
        ours_fresh()  # warm the template cache (the first fresh init ever pays initdb)
        stop_and_wait_for_spare()
        raw_reset()
        run_raw([tool("initdb"), "-D", str(raw_data), "-U", user, "--auth=trust",
                 "--no-locale", "-E", "UTF8", "--no-sync"])
        raw_start()
        run_raw([tool("createdb"), "-h", str(raw_sock), "-p", "5592", "-U", user, "testdb"])
        raw_stop()
        raw_data.rename(prepared)
        if wanted("warm"):
            a, b = paired(ours_fresh, bound_fresh, opts.repeat,
                          before_ours=stop_and_wait_for_spare, before_base=bound_reset)
            results.append(("warm", "postgres-init (fresh, spare ready)", a,
                            "bound: rename + postgres + poll", b, 1.5))
        if wanted("cold"):
            a, b = paired(ours_cold, raw_fresh, max(3, opts.repeat // 2),
                          before_ours=cold_reset, before_base=raw_reset)
            results.append(("cold", "postgres-init (empty cache)", a,
                            "initdb + pg_ctl start + createdb", b, 1.0))
            ours_stop()
            wait_for_worker()
        if wanted("nospare"):
            a, b = paired(ours("postgres-init", extra={"DB_TOOL_NO_SPARE": "1"}),
                          raw_copy_start, opts.repeat, before_ours=ours_stop,
                          before_base=raw_reset)
            results.append(("nospare", "DB_TOOL_NO_SPARE=1 postgres-init", a,
                            "cp -a + pg_ctl start", b, None))
        if wanted("cycle"):
            stop_and_wait_for_spare()

            def cycle() -> None:
                ours_fresh()
                ours_stop()
                run_cli([str(BIN / "database"), "cleanup"], env)

            a, b = paired(cycle, raw_cycle, opts.repeat)
            results.append(("cycle", "init -> cleanup -> database cleanup", a,
                            "cp -a + start + stop + rm -rf", b, None))
            wait_for_worker()
        if wanted("reuse") or wanted("stop"):
            raw_reset()
            subprocess.run(["cp", "-a", str(prepared), str(raw_data)], check=True)
            ours_fresh()
            ours_stop()
            reuse = ours("postgres-init", extra={"PG_REUSE": "1"})
            if wanted("reuse"):
                a, b = paired(reuse, raw_start, opts.repeat, before_ours=ours_stop,
                              before_base=raw_stop)
                results.append(("reuse", "PG_REUSE=1 postgres-init", a, "pg_ctl start", b,
                                0.7))
                a, b = paired(python_floor_start, raw_start, opts.repeat,
                              before_ours=raw_stop, before_base=raw_stop)
                results.append(("reuse-floor", "floor: python -S + postgres + poll", a,
                                "pg_ctl start", b, None))
            if wanted("stop"):
                a, b = paired(ours_stop, raw_stop, opts.repeat, before_ours=reuse,
                              before_base=raw_start)
                results.append(("stop", "postgres-cleanup", a, "pg_ctl stop -m fast", b, 0.7))
        help_samples: list[float] = []
        if wanted("help"):
            help_run = ours("postgres-init", "--help")
            for _ in range(opts.repeat):
                start = time.perf_counter()
                help_run()
                help_samples.append(time.perf_counter() - start)
    finally:
        raw_stop()
        ours_stop()
        time.sleep(0.2)
        shutil.rmtree(root, ignore_errors=True)

    if help_samples:
        h = statistics.median(help_samples)
        ok &= h <= 0.150
        print(f"{'OK  ' if h <= 0.150 else 'MISS'} postgres-init --help {h * 1000:7.1f} ms "
              "(target <= 150 ms)")
    return 0 if ok or not opts.check else 1


if __name__ == "__main__":
    raise SystemExit(main())
