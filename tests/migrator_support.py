"""Helpers shared by the migrator test modules (PostgreSQL and SQLite)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli, CliResult

Run = Callable[..., CliResult]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def flat(mdir: Path, name: str, up: str, down: str = "") -> None:
    """A migration in the up.sql / down.sql layout."""
    write(mdir / name / "up.sql", up)
    write(mdir / name / "down.sql", down)


def pg_history(pg: Any, url: str) -> list[str]:
    out = pg.psql("SELECT name FROM hectic.migration ORDER BY id", url)
    return out.splitlines() if out else []


def runner(
    cli: Cli, db_url: str, mdir: Path, base: Mapping[str, str] | None = None,
) -> Run:
    """`run(*argv, env=None) -> (rc, out, err)`: the migrator (the `cli` fixture) with DB_URL
    and MIGRATION_DIR set on top of `base` (default: this process's environment) and env."""

    def _run(*argv: str, env: dict[str, str] | None = None) -> CliResult:
        environ = {**(os.environ if base is None else base), "DB_URL": db_url,
                   "MIGRATION_DIR": str(mdir), **(env or {})}
        return cli("migrator", argv, environ)

    return _run


# --------------------------------------------------------------------------- the original migrator

ORIGINAL = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "original"


def original_source() -> Path:
    """The original tool's source tree (../shared/reference/original); fails, never skips."""
    if not (ORIGINAL / "package" / "migrator" / "migrator.sh").is_file():
        pytest.fail(
            f"the original migrator is missing: expected {ORIGINAL}/package/migrator/migrator.sh "
            "(a checkout of hectic-lab/util.nix at f6e7c1e under ../shared/reference/original)"
        )
    return ORIGINAL


def original_migrator(tmp: Path) -> list[str]:
    """argv running the original migrator.sh with dash, as its Nix build assembles it: the
    helper library's `log` (Nix-only; here a stand-in that prints `<level>: <text>` to stderr,
    colours empty), then apply-hectic-bundle.sh with its @HECTIC_*_SQL@ placeholders set to the
    original bundle files (their @HECTIC_VERSION@ set from HECTIC_VERSION), then migrator.sh
    itself, all read at test time, otherwise unmodified."""
    import shutil

    src = original_source()
    sql = src / "lib" / "hook" / "sql"
    version = (sql / "HECTIC_VERSION").read_text().strip()
    bundle = (src / "lib" / "hook" / "apply-hectic-bundle.sh").read_text()
    for part in ("VERSION", "SECRET", "MIGRATION", "INHERITANCE"):
        name = f"hectic-{part.lower()}.sql"
        # What the Nix build does to the files: @HECTIC_VERSION@ becomes HECTIC_VERSION's text.
        (tmp / name).write_text((sql / name).read_text().replace("@HECTIC_VERSION@", version))
        bundle = bundle.replace(f"@HECTIC_{part}_SQL@", str(tmp / name))
    prelude = (
        "WHITE= NC= RED= GREEN= YELLOW= CYAN= BCYAN= BGREEN= BBLACK=\n"
        "log() { _level=$1; shift; printf '%s: %s\\n' \"$_level\" \"$*\" >&2; }\n"
    )
    script = tmp / "original-migrator.sh"
    script.write_text(prelude + bundle + "\n"
                      + (src / "package" / "migrator" / "migrator.sh").read_text())
    dash = shutil.which("dash") or shutil.which("sh")
    assert dash, "no POSIX shell (dash or sh) to run the original migrator"
    return [dash, str(script)]


def original_hash(path: Path) -> str:
    """The hash the original records: `cksum --algorithm=sha256 --untagged FILE | awk '{printf
    $1}'` (its sha256sum helper), run for real."""
    import subprocess

    out = subprocess.run(
        ["/bin/sh", "-c", "cksum --algorithm=sha256 --untagged \"$1\" | awk '{printf $1}'",
         "sh", str(path)], capture_output=True, text=True, check=True,
    )
    return out.stdout
