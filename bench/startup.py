"""Benchmark: start-up of every command's --help (and --version), against a bare interpreter.

    python bench/startup.py [--repeat N] [--check]

Each command runs as a user runs it: the installed sh launcher next to this interpreter
(`database`, `migrator`, `db-ops`, `postgres-init`, `postgres-cleanup`), stdout to /dev/null.
Baselines in the same invocation, alternating with ours so that machine load hits all alike:
`python -c pass` of the same interpreter (what any Python CLI pays) and `psql --help` when
psql is on PATH. Target (issue 10): every `--help` <= 60 ms (median).
--check exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BIN, verdict

COMMANDS = ("database", "migrator", "db-ops", "postgres-init", "postgres-cleanup")
BUDGET_MS = 60.0


def once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    return (time.perf_counter() - start) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--check", action="store_true")
    opts = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    cases: dict[str, list[str]] = {"python -c pass": [sys.executable, "-c", "pass"]}
    psql = shutil.which("psql", path=env["PATH"])
    if psql is not None:
        cases["psql --help"] = [psql, "--help"]
    for cmd in COMMANDS:
        cases[f"{cmd} --help"] = [str(BIN / cmd), "--help"]
    cases["migrator --version"] = [str(BIN / "migrator"), "--version"]
    cases["database --version"] = [str(BIN / "database"), "--version"]
    for argv in cases.values():  # warm the page cache and the bytecode
        once(argv, env)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(opts.repeat):
        for name, argv in cases.items():
            samples[name].append(once(argv, env))
    base = statistics.median(samples["python -c pass"])
    print(f"median of {opts.repeat} runs; load average {os.getloadavg()[0]:.1f}; "
          f"{sys.executable}")
    missed = False
    for name, values in samples.items():
        med = statistics.median(values)
        line = (f"{med:7.1f} ms ({min(values):.1f}-{max(values):.1f})  "
                f"{med / base:4.2f}x python -c pass")
        if name.endswith("--help") and name.split()[0] in COMMANDS:
            ok = verdict(med / BUDGET_MS, 1.0)
            missed |= ok.strip() == "MISS"
            print(f"{ok} {name:24} {line}  (budget {BUDGET_MS:.0f} ms)")
        else:
            print(f"info {name:24} {line}")
    return 1 if opts.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
