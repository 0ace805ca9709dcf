#!/usr/bin/env python3
"""`database deploy` of examples/ against the same work done by hand with the raw tools.

    python bench/deploy.py [--runs N]

Both sides start from an empty working dir and end with a running server whose database
holds the hectic bundle, the example schema (entrypoint.sql) and its test data; stopping the
server and removing the dir happen outside the timings. By hand means:
    initdb --auth=trust --no-locale -E UTF8 -U <you>   (plain, as in the original script)
    pg_ctl start -w          (unix socket only, in its own dir)
    createdb testdb
    psql -f <each bundle file> ; psql -f entrypoint.sql ; psql -f test-data.sql
As root the raw server tools run as `postgres` (runuser -u postgres --), like db-tool does.
For a like-for-like comparison the tool runs without pg_cron (the raw cluster has none) and
without a dotenv file (so no secrets are loaded).

Cold = the first deploy with an empty template cache (it runs initdb once and caches the
result); warm = every later deploy (copies the cached template). Target: warm <= 0.6x raw.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples"
BIN = Path(sys.executable).parent
PORT = 5791


def sh(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    return done  # type: ignore[no-any-return]


def database_cmd() -> str:
    local = BIN / "database"
    return str(local) if local.exists() else (shutil.which("database") or "database")


def tool_env(project: Path, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PG", "HECTIC_", "DB_URL")) and k not in (
               "LOCAL_DIR", "DATABASE_DIR", "MIGRATION_DIR", "DATABASE_SOURCE", "PROFILE_DIR",
               "ENVIRONMENT", "HYDRATE_LOG", "PATCH_LOG")}
    env.update(LOCAL_DIR=str(project), PG_PORT=str(PORT), XDG_CACHE_HOME=str(cache),
               PG_SHARED_PRELOAD_LIBRARIES="", NO_COLOR="1")
    return env


def time_tool(project: Path, env: dict[str, str]) -> float:
    wd = project / "focus" / "postgresql"
    started = time.perf_counter()
    sh([database_cmd(), "deploy"], env=env)
    elapsed = time.perf_counter() - started
    sh([database_cmd(), "cleanup"], env=env)
    assert not wd.exists()
    return elapsed


class Raw:
    """The same work with initdb / pg_ctl / createdb / psql."""

    def __init__(self, root: Path, no_sync: bool) -> None:
        from db_tool import bundle, pgbin
        from db_tool.settings import login_name

        self.install = pgbin.find()
        self.root = root
        self.no_sync = no_sync
        self.user = login_name()
        self.files = [*bundle.materialized_paths(), EXAMPLE / "db" / "src" / "entrypoint.sql",
                      EXAMPLE / "test-data.sql"]
        self.as_server: list[str] = []
        self.owner: tuple[int, int] | None = None
        if os.geteuid() == 0:
            entry = pwd.getpwnam(os.environ.get("PG_OS_USER") or "postgres")
            self.as_server = ["runuser", "-u", entry.pw_name, "--"]
            self.owner = (entry.pw_uid, entry.pw_gid)

    def run(self) -> dict[str, float]:
        wd = Path(tempfile.mkdtemp(prefix="raw-", dir=self.root))
        data, sock = wd / "data", wd / "sock"
        sock.mkdir()
        if self.owner:
            os.chmod(wd, 0o755)
            os.chown(wd, *self.owner)
            os.chown(sock, *self.owner)
        tool = self.install.tool
        url = f"postgresql://{self.user}@/testdb?host={sock}&port={PORT}"
        psql = [tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url]
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        initdb = [tool("initdb"), "-D", str(data), "-U", self.user, "--auth=trust",
                  "--no-locale", "-E", "UTF8"]
        sh(self.as_server + initdb + (["--no-sync"] if self.no_sync else []))
        t1 = time.perf_counter()
        sh(self.as_server + [tool("pg_ctl"), "-D", str(data), "-w", "-l", str(wd / "log"),
                             "-o", f"-k {sock} -c listen_addresses= -p {PORT}", "start"])
        t2 = time.perf_counter()
        sh([tool("createdb"), "-h", str(sock), "-p", str(PORT), "-U", self.user, "testdb"])
        t3 = time.perf_counter()
        for path in self.files:
            sh([*psql, "-f", str(path)])
        t4 = time.perf_counter()
        times.update(initdb=t1 - t0, start=t2 - t1, createdb=t3 - t2, psql=t4 - t3,
                     total=t4 - t0)
        sh(self.as_server + [tool("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(wd)
        return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", default=None,
                        help="where the clusters and the template cache go (default: $TMPDIR)")
    args = parser.parse_args()
    runs = args.runs
    root = Path(tempfile.mkdtemp(prefix="dbt-bench-", dir=args.dir))
    os.chmod(root, 0o755)
    try:
        project = root / "p"
        shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("focus"))
        cache = root / "cache"
        env = tool_env(project, cache)
        from db_tool import pgbin

        print(f"db-tool deploy vs raw tools — {pgbin.find().describe()}, {runs} run(s) each, "
              f"median shown, in {root}")
        os.sync()
        cold = time_tool(project, env)
        print(f"  tool cold (empty template cache: initdb once + deploy) {cold:6.3f}s  "
              "— this also warmed the cache for the runs below")
        # Interleaved, each after a sync, so both sides see the same disk state.
        raws = {False: Raw(root, False), True: Raw(root, True)}
        tool_samples: list[float] = []
        raw_samples: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for _ in range(runs):
            os.sync()
            tool_samples.append(time_tool(project, env))
            for no_sync, raw in raws.items():
                os.sync()
                raw_samples[no_sync].append(raw.run())
        warm = statistics.median(tool_samples)
        print(f"  tool warm (database deploy, template cached)          {warm:6.3f}s  "
              f"(runs: {', '.join(f'{t:.3f}' for t in tool_samples)})")
        results = {}
        for no_sync, samples in raw_samples.items():
            med = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
            results[no_sync] = med
            label = "initdb --no-sync" if no_sync else "initdb (plain)  "
            parts = ", ".join(f"{k} {med[k]:.3f}" for k in ("initdb", "start", "createdb",
                                                            "psql"))
            print(f"  raw, {label}                                {med['total']:6.3f}s  "
                  f"({parts})")
        plain = results[False]
        bare = plain["initdb"] + plain["start"]
        print(f"  bare fresh init by hand (initdb + pg_ctl start)        {bare:6.3f}s")
        print()
        ratio = warm / plain["total"]
        print(f"ratio warm / raw (plain initdb)      {ratio:.2f}x  (target <= 0.6x)")
        print(f"ratio warm / raw (initdb --no-sync)  {warm / results[True]['total']:.2f}x")
        print(f"ratio warm / bare fresh init         {warm / bare:.2f}x  (the original: ~1.1x)")
        print(f"ratio cold / raw (plain initdb)      {cold / plain['total']:.2f}x")
    finally:
        subprocess.run([database_cmd(), "cleanup"], env=tool_env(root / "p", root / "cache"),
                       capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
