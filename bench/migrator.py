"""Benchmark `migrator` against the lower bound of one `psql -f` running the same SQL.

One run starts its own throw-away cluster (db_tool.cluster), then for N in 50 and 500 trivial
migrations (`ALTER TABLE t ADD COLUMN cN int`):
  - `migrator migrate up all`     vs  the N ALTERs concatenated in one file, one `psql -f`,
    and vs the migrator's own SQL for them (the driver it sends: each ALTER with its session
    reset, transaction and history row) run by one `psql -f`: what the SQL costs over the
    bound, and what Python, the second connection and the start script cost on top
  - `migrator migrate down N`     vs  the N DROP COLUMNs the same way
  - no-op `migrator migrate up all` and `migrator status` vs one `psql -c 'SELECT 1'` (the
    "one query" bound) and, when installed, `dbmate migrate` / `dbmate status` on the same
    database (medians of --noop-repeat runs, with their spread)
and prints the ratios and the cost per migration at 50 vs 500 (linearity). Targets (issue 11):
`up all` at 500 <= 1.1x `psql -f`; no-op migrate/status <= 1.5x dbmate, which measured 1.23x
one psql query (37 vs 30 ms), so without dbmate the bound is 1.5 * 1.23 = 1.85x one query.
Both sides run on databases that have the hectic bundle (so its event triggers fire alike) and
a table `t` created beforehand; the migrator's time includes its Python start-up and `init`.
The bound runs the psql binary the migrator runs (on Debian not /usr/bin/psql, the pg_wrapper
Perl script both would otherwise pay ~50 ms for); dbmate is looked up on PATH, then in
/tmp/*/node_modules (`npm install dbmate` in a dir under /tmp), its native binary timed; the
output says which psql and which dbmate ran, or that dbmate was skipped.

    python bench/migrator.py [--keep] [--port 5498] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_UP_RATIO = 1.1
TARGET_NOOP_VS_DBMATE = 1.5
DBMATE_VS_ONE_QUERY = 37 / 30  # issue 11's measurement, when dbmate is not installed here


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"failed ({out.returncode}): {' '.join(argv[:6])} ...\n{out.stderr}")
    return elapsed


_SCRIPT = Path(sys.executable).parent / "migrator"
MIGRATOR = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "db_tool.cli.migrator"]


def find_dbmate() -> str | None:
    """dbmate on PATH, else `npm install dbmate` under the work dir's parent or /tmp/*/
    (DBMATE=path wins). npm's `dbmate` is a node shim (~250 ms of node start-up per run):
    its native binary (@dbmate/<platform>/bin/dbmate beside it) is what is timed."""
    import glob

    found = os.environ.get("DBMATE") or shutil.which("dbmate")
    if not found:
        shims = sorted(glob.glob("/tmp/*/node_modules/.bin/dbmate"))
        found = shims[0] if shims else None
    if not found:
        return None
    real = os.path.realpath(found)
    with open(real, "rb") as fh:
        is_script = fh.read(2) == b"#!"
    if is_script:
        modules = real
        while os.path.basename(modules) != "node_modules" and modules != "/":
            modules = os.path.dirname(modules)
        native = sorted(glob.glob(os.path.join(modules, "@dbmate", "*", "bin", "dbmate")))
        if native:
            return native[0]
    return found


def bound_psql() -> tuple[str, str]:
    """(the psql the bound runs, how it was chosen): the binary the migrator itself runs, so
    Debian's pg_wrapper (a Perl script, ~50 ms) is in neither or both."""
    from db_tool import psql

    on_path = shutil.which("psql") or "psql"
    direct = psql.direct_psql(on_path, "postgresql://u@/d?host=/s&port=1", {})
    if direct:
        return direct, f"{direct} (PATH's psql is pg_wrapper, which the migrator steps over)"
    return on_path, on_path


def spread(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max)"""
    ordered = sorted(values)
    return ordered[len(ordered) // 2], ordered[0], ordered[-1]


def bench_noop(
    url_for: object, work: Path, env: dict[str, str], repeat: int
) -> dict[str, list[float]]:
    """No-op migrate and status against their baselines, interleaved round by round."""
    from db_tool import bundle

    url = url_for("noop")  # type: ignore[operator]
    admin = url_for("postgres")  # type: ignore[operator]
    psql(admin, 'DROP DATABASE IF EXISTS "noop"')
    psql(admin, 'CREATE DATABASE "noop"')
    bundle.apply(url)
    psql(url, "CREATE TABLE t () INHERITS (hectic.created_at)")
    mdir = work / "migrations-noop"
    write_migrations(mdir, 50)
    migrator = [*MIGRATOR, "-u", url, "-d", str(mdir)]
    timed([*migrator, "migrate", "up", "all"], env)
    cases = {
        "migrate": [*migrator, "migrate", "up", "all"],
        "status": [*migrator, "status"],
        "one query": [bound_psql()[0], "-X", "-q", "-At", "-d", url, "-c", "SELECT 1"],
    }
    dbmate = find_dbmate()
    denv = env
    if dbmate:
        ddir = work / "dbmate"
        (ddir / "migrations").mkdir(parents=True)
        denv = {**env, "DATABASE_URL": url.replace("postgresql://", "postgres://") +
                "&sslmode=disable", "DBMATE_MIGRATIONS_DIR": str(ddir / "migrations"),
                "DBMATE_NO_DUMP_SCHEMA": "true"}
        # The bundle refuses tables that do not inherit hectic.created_at, dbmate's own too:
        # made beforehand, dbmate's CREATE TABLE IF NOT EXISTS keeps it.
        psql(url, "CREATE TABLE public.schema_migrations (version varchar(128) PRIMARY KEY) "
             "INHERITS (hectic.created_at)")
        for i in range(1, 51):
            (ddir / "migrations" / f"20240101{i:06d}_c{i}.sql").write_text(
                f"-- migrate:up\nSELECT {i};\n-- migrate:down\nSELECT {i};\n")
        timed([dbmate, "migrate"], denv)
        cases["dbmate migrate"] = [dbmate, "migrate"]
        cases["dbmate status"] = [dbmate, "status"]
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, argv in cases.items():
            times[name].append(timed(argv, denv if name.startswith("dbmate") else env))
    psql(admin, 'DROP DATABASE IF EXISTS "noop"')
    return times


def psql(url: str, sql: str) -> None:
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                   check=True, capture_output=True, text=True)


def write_migrations(directory: Path, n: int) -> None:
    directory.mkdir(parents=True)
    for i in range(1, n + 1):
        d = directory / f"20240101{i:06d}-add-c{i}"
        d.mkdir()
        (d / "up.sql").write_text(f"ALTER TABLE t ADD COLUMN c{i} int;\n")
        (d / "down.sql").write_text(f"ALTER TABLE t DROP COLUMN c{i};\n")


def driver_file(mdir: Path, target: Path) -> None:
    """The driver `migrate up all` sends for mdir's migrations (db_tool.pg_script), as one
    file for `psql -f`: the SQL half of the migrator, without Python or its start script."""
    from db_tool import migrations, pg_script
    from db_tool.sqlsplit import OneQuery, TxControl, one_query

    steps = [migrations.Step("up", m) for m in migrations.discover(mdir)]
    inlined: list[pg_script.Inline | None] = []
    for step in steps:
        path = step.migration.up
        assert path is not None
        sql = one_query(migrations.read_file(path))
        assert isinstance(sql, OneQuery), f"{path} is not sent as one query"
        inlined.append(pg_script.Inline(sql, path, 1))
    text, _ = pg_script.driver_script(steps, inlined, [TxControl() for _ in steps],
                                      [None for _ in steps], "bench")
    target.write_text(text)


def bench(
    cluster_url_for: object, work: Path, n: int, env: dict[str, str], repeat: int
) -> dict[str, float]:
    from db_tool import bundle

    url_for = cluster_url_for  # Callable[[str], str]
    mig_url = url_for(f"mig_{n}")  # type: ignore[operator]
    base_url = url_for(f"base_{n}")  # type: ignore[operator]
    sql_url = url_for(f"sql_{n}")  # type: ignore[operator]
    admin = url_for("postgres")  # type: ignore[operator]
    for db in (f"mig_{n}", f"base_{n}", f"sql_{n}"):
        psql(admin, f'DROP DATABASE IF EXISTS "{db}"')
        psql(admin, f'CREATE DATABASE "{db}"')
    for url in (mig_url, base_url, sql_url):
        bundle.apply(url)
        psql(url, "CREATE TABLE t () INHERITS (hectic.created_at)")

    mdir = work / f"migrations-{n}"
    write_migrations(mdir, n)
    up_file, down_file = work / f"up-{n}.sql", work / f"down-{n}.sql"
    up_file.write_text("".join(f"ALTER TABLE t ADD COLUMN c{i} int;\n" for i in range(1, n + 1)))
    down_file.write_text("".join(f"ALTER TABLE t DROP COLUMN c{i};\n" for i in range(n, 0, -1)))
    sql_file = work / f"driver-{n}.sql"
    driver_file(mdir, sql_file)

    migrator = [*MIGRATOR, "-u", mig_url, "-d", str(mdir)]
    base = [bound_psql()[0], "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", base_url, "-f"]
    sql = [bound_psql()[0], "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", sql_url, "-f",
           str(sql_file)]
    # Each round returns both databases to where they started; the best round counts
    # (the machine is shared, so the minimum is the least noisy estimate).
    rounds: list[dict[str, float]] = []
    for _ in range(repeat):
        rounds.append({
            "base_up": timed([*base, str(up_file)], env),
            "sql_up": timed(sql, env),
            "up": timed([*migrator, "migrate", "up", "all"], env),
            "noop": timed([*migrator, "migrate", "up", "all"], env),
            "base_down": timed([*base, str(down_file)], env),
            "down": timed([*migrator, "migrate", "down", str(n)], env),
        })
        psql(sql_url, down_file.read_text() + "DELETE FROM hectic.migration;")
    result = {key: min(r[key] for r in rounds) for key in rounds[0]}
    for db in (f"mig_{n}", f"base_{n}", f"sql_{n}"):
        psql(admin, f'DROP DATABASE IF EXISTS "{db}"')
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", default="5498")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per size (best counts)")
    parser.add_argument("--noop-repeat", type=int, default=15, help="runs per no-op case")
    opts = parser.parse_args()

    from db_tool.cluster import Cluster, ClusterConfig

    work = Path(tempfile.mkdtemp(prefix="bench-migrator-"))
    os.chmod(work, 0o755)  # the cluster may run as another OS user when we are root
    env = dict(os.environ)
    cfg = ClusterConfig.from_env({**env, "PG_WORKING_DIR": str(work / "cluster"),
                                  "PG_PORT": opts.port, "PG_SHARED_PRELOAD_LIBRARIES": ""})
    cluster = Cluster(cfg)
    cluster.init()
    try:
        noop_times = bench_noop(cluster.url_for, work, env, opts.noop_repeat)
        results = {n: bench(cluster.url_for, work, n, env, opts.repeat) for n in (50, 500)}
    finally:
        cluster.stop()
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"bound: {bound_psql()[1]}")
    dbmate = find_dbmate()
    print(f"dbmate: {dbmate}" if dbmate else
          "dbmate: SKIPPED (not on PATH, no /tmp/*/node_modules; `npm install dbmate` in a dir "
          "under /tmp, or DBMATE=path)")
    print(f"{'N':>4}  {'step':<6} {'migrator':>9} {'psql -f':>9} {'ratio':>6}  per migration")
    for n, r in results.items():
        for step in ("up", "down"):
            ratio = r[step] / r[f"base_{step}"]
            per = (r[step] - r["noop"]) / n * 1000
            print(f"{n:>4}  {step:<6} {r[step]:>8.3f}s {r[f'base_{step}']:>8.3f}s "
                  f"{ratio:>5.2f}x  {per:.2f} ms (after the fixed cost)")
        print(f"{n:>4}  {'noop':<6} {r['noop']:>8.3f}s")
    r50, r500 = results[50], results[500]
    up_ratio = r500["up"] / r500["base_up"]
    # Linearity: the marginal cost of one more migration between 50 and 500, next to the
    # same for the bound (ALTER TABLE itself gets slower as t grows wider, in both).
    marginal = (r500["up"] - r50["up"]) / 450 * 1000
    marginal_base = (r500["base_up"] - r50["base_up"]) / 450 * 1000
    fixed = r50["up"] - 50 * marginal / 1000
    print()
    print(f"up all at 500: {up_ratio:.2f}x the psql -f bound "
          f"(target <= {TARGET_UP_RATIO}x): {'ok' if up_ratio <= TARGET_UP_RATIO else 'MISSED'}")
    sql_ratio = r500["sql_up"] / r500["base_up"]
    print(f"  of which the migrator's SQL (its driver through one psql -f): "
          f"{r500['sql_up']:.3f}s = {sql_ratio:.2f}x the bound "
          f"({(r500['sql_up'] - r500['base_up']) / 500 * 1000:.2f} ms per migration for the "
          f"session reset, transaction and history row); the rest, "
          f"{r500['up'] - r500['sql_up']:.3f}s, is Python, the wire read, the start script "
          f"and waiting for the plan")
    print()
    print(f"{'no-op case':<15} {'median':>8} {'min':>8} {'max':>8}  ratio to one query")
    one = spread(noop_times["one query"])[0]
    for name, values in noop_times.items():
        med, lo, hi = spread(values)
        print(f"{name:<15} {med * 1000:>6.1f}ms {lo * 1000:>6.1f}ms {hi * 1000:>6.1f}ms  "
              f"{med / one:.2f}x")
    for case in ("migrate", "status"):
        med = spread(noop_times[case])[0]
        if f"dbmate {case}" in noop_times:
            peer = spread(noop_times[f"dbmate {case}"])[0]
            how = "dbmate measured here"
        else:
            peer = one * DBMATE_VS_ONE_QUERY
            how = f"dbmate not installed: {DBMATE_VS_ONE_QUERY:.2f}x one query"
        ratio = med / peer
        print(f"no-op {case}: {ratio:.2f}x dbmate ({how}; target <= "
              f"{TARGET_NOOP_VS_DBMATE}x): "
              f"{'ok' if ratio <= TARGET_NOOP_VS_DBMATE else 'MISSED'}")
    print(f"linearity (up): {marginal:.2f} ms per extra migration from 50 to 500 "
          f"(psql -f: {marginal_base:.2f} ms per extra statement; overhead "
          f"{marginal - marginal_base:.2f} ms/migration); fixed cost ~{fixed:.3f}s "
          f"(no-op run: {r50['noop']:.3f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
