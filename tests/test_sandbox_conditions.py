"""Every command in a build sandbox's conditions (issue 8 §1): an unprivileged account (and
root), HOME=/homeless-shelter (missing, unwritable) or HOME unset, stdin /dev/null, a clean
environment, TMPDIR = the work dir, a private /tmp. No exit 13, no traceback, right results.

Runs `../shared/tools/sandbox-run` (CI has ../shared beside the clone; without it these tests
FAIL, saying what is missing). db-tool is copied for the sandbox account to a world-readable
dir under /var/tmp with its console scripts, because the test venv's python may live in
root's home, which the account cannot enter: the sh launchers of scripts/ and a db-tool-run
console script, as pip installs them.

The steps that build a fresh cluster (postgres-init, database init/deploy/check/diff) need
the template cache to fall back when HOME is unusable (issue 8 §1, the cache's part).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import next_port, portable_install

REPO = Path(__file__).resolve().parent.parent
SANDBOX_RUN = REPO.parent / "shared" / "tools" / "sandbox-run"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="sandbox-run needs root (runs in the root pass, as both accounts)"),
]

COMMANDS = ("postgres-init", "database", "db-tool", "migrator", "postgres-cleanup", "db-ops")

# (step name, shell command, exit codes that are right, text the output must contain)
STEPS: list[tuple[str, str, tuple[int, ...], str]] = [
    ("postgres-init --print-env", 'PG_WORKING_DIR="$W/pi" postgres-init --print-env',
     (0,), "export PGURL="),
    ("postgres-init sourced",
     'PG_WORKING_DIR="$W/pi" PG_REUSE=1 sh -c \'. postgres-init && '
     'psql -X -At "$PGURL" -c "select 6*7"\'', (0,), "42"),
    ("postgres-init without working dir", "env -u LOCAL_DIR postgres-init", (1,),
     "PG_WORKING_DIR or LOCAL_DIR is required"),
    ("postgres-cleanup", 'PG_WORKING_DIR="$W/pi" postgres-cleanup', (0,), "stopped"),
    # Unprivileged, the server is a posix_spawn: a reuse never imports subprocess (as root,
    # switching to the server account needs subprocess.Popen).
    ("postgres-init reuse without subprocess",
     'export PG_WORKING_DIR="$W/pi"; PG_REUSE=1 PYTHONPROFILEIMPORTTIME=1 postgres-init '
     '--print-env 2>"$W/imports" >/dev/null; grep -q "reused the" "$W/imports" && '
     '{ [ "$(id -u)" = 0 ] || ! grep -q "| *subprocess$" "$W/imports"; } && '
     'echo "no subprocess"; postgres-cleanup',
     (0,), "no subprocess"),
    ("database init", "database init", (0,), "cluster"),
    ("database migrator init", "database migrator init", (0,), "bundle"),
    ("database hydrate", "database hydrate", (0,), "hydrate"),
    ("database patch", "database patch", (0,), "patch"),
    ("database test", "database test", (0,), "PASSED"),
    ("database test (no LOCAL_DIR: the cwd)", 'cd "$LOCAL_DIR" && env -u LOCAL_DIR database test',
     (0,), "PASSED"),
    ("database status", "database status", (0,), "running"),
    ("database migrator status", "database migrator status", (0,), "pending"),
    ("database deploy", "database deploy", (0,), "deploy done"),
    ("database migrator migrate up", "database migrator migrate up", (0,), ""),
    ("database check", "database check", (0,), ""),
    ("database backup", "database backup", (0,), ""),
    ("database diff", "database diff", (0, 1), "diff"),
    ("database normalize-backup", "database normalize-backup", (0,), ""),
    ("database restore", "database restore", (0,), ""),
    ("database test after restore", "database test", (0,), "PASSED"),
    ("database log list", "database log list", (0,), ""),
    ("database bundle path", "database bundle path", (0,), "version.sql"),
    ("migrator (PGURL)", 'eval "$(database init --reuse --print-env)" && '
     'migrator -d "$LOCAL_DIR/db/migration" status', (0,), "applied"),
    ("migrator (sqlite)", 'migrator -d "$LOCAL_DIR/db/migration" -u "sqlite://$W/m.db" init',
     (0,), ""),
    ("db-ops secrets load", 'eval "$(database init --reuse --print-env)" && '
     'HECTIC_DOTENV_CONTENT="A=1" db-ops secrets load', (0,), ""),
    ("database cleanup", "database cleanup", (0,), "removed"),
]

SCRIPT = r"""
W=$PWD; export W
cp -r "$DBT_INSTALL/examples" "$W/proj"
export LOCAL_DIR="$W/proj" ENVIRONMENT=development PG_SHARED_PRELOAD_LIBRARIES=
__HOME__
step() {
  printf '\n@@@ step %s\n' "$1"
  sh -c "$2" 2>&1
  printf '\n@@@ rc %s\n' "$?"
}
"""


@pytest.fixture(scope="module")
def install() -> Iterator[Path]:
    if not SANDBOX_RUN.is_file():
        pytest.fail(f"{SANDBOX_RUN} is missing: these tests need ../shared/tools/sandbox-run "
                    "beside the repository (CI provides it)")
    with portable_install() as root:
        yield root


Results = dict[str, tuple[int, str]]


def _parse(output: str) -> Results:
    results: Results = {}
    for block in output.split("\n@@@ step ")[1:]:
        name, _, rest = block.partition("\n")
        body, _, rc = rest.rpartition("\n@@@ rc ")
        results[name] = (int(rc.split()[0]), body)
    return results


MODES = {
    "user": ["--user", "sandbox"],
    "user, HOME unset": ["--user", "sandbox"],
    "root": ["--root"],
}


@pytest.fixture(scope="module", params=list(MODES))
def sandbox(request: pytest.FixtureRequest, install: Path) -> tuple[str, Results]:
    mode = request.param
    script = SCRIPT.replace("__HOME__", "unset HOME" if "unset" in mode else "")
    script += "".join(f"step {_sq(name)} {_sq(cmd)}\n" for name, cmd, _, _ in STEPS)
    r = subprocess.run(
        [str(SANDBOX_RUN), *MODES[mode], "--bin", str(install / "bin"),
         "--env", f"DBT_INSTALL={install}", "--env", f"PG_PORT={next_port()}",
         "--", "sh", "-c", script],
        capture_output=True, text=True, timeout=1800, check=False,
    )
    results = _parse(r.stdout)
    assert results, f"sandbox-run ran nothing (rc {r.returncode}): {r.stdout}{r.stderr}"
    return mode, results


def _sq(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


@pytest.mark.parametrize(("name", "expected_rc", "expected_text"),
                         [(n, rc, t) for n, _, rc, t in STEPS], ids=[s[0] for s in STEPS])
def test_command_in_sandbox_conditions(
    sandbox: tuple[str, Results], name: str,
    expected_rc: tuple[int, ...], expected_text: str,
) -> None:
    mode, results = sandbox
    assert name in results, f"{name} did not run ({mode})"
    rc, out = results[name]
    assert rc != 13, f"{name} ({mode}) exit 13:\n{out}"
    assert "Traceback" not in out, f"{name} ({mode}):\n{out}"
    assert rc in expected_rc, f"{name} ({mode}) exit {rc}, expected {expected_rc}:\n{out}"
    assert re.search(re.escape(expected_text), out), f"{name} ({mode}) said:\n{out}"
