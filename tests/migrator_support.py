"""Helpers shared by the migrator test modules (PostgreSQL and SQLite)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from db_tool.cli.migrator import main

Run = Callable[..., tuple[int, str, str]]


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
    db_url: str, mdir: Path, capsys: pytest.CaptureFixture[str],
    base: Mapping[str, str] | None = None,
) -> Run:
    """`run(*argv, env=None) -> (rc, out, err)`: migrator.main in-process with DB_URL and
    MIGRATION_DIR set on top of `base` (default: this process's environment)."""

    def _run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        environ = {**(os.environ if base is None else base), "DB_URL": db_url,
                   "MIGRATION_DIR": str(mdir), **(env or {})}
        capsys.readouterr()
        rc = main(list(argv), environ)
        out, err = capsys.readouterr()
        return rc, out, err

    return _run
