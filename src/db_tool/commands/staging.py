"""pull_staging: dump tables of the staging database over ssh into the patch file."""

from __future__ import annotations

import os
import shlex
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from db_tool import __version__, output, proc
from db_tool.errors import Error, MissingError

# Checked in this order, before anything else; the first missing one is the error.
REQUIRED = ("STAGING_SSH_HOST", "STAGING_DB_URL", "STAGING_DUMP_TABLES", "STAGING_DUMP_FLAGS")


@dataclass(frozen=True)
class StagingConfig:
    host: str
    db_url: str
    tables: tuple[str, ...]
    flags: tuple[str, ...]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StagingConfig:
        """Unset or empty is missing (exit 3), as in the original."""
        for name in REQUIRED:
            if not env.get(name, "").strip():
                raise MissingError(
                    f"{name} is not set: pull_staging needs {', '.join(REQUIRED)}"
                )
        try:
            flags = tuple(shlex.split(env["STAGING_DUMP_FLAGS"]))
        except ValueError as exc:
            raise MissingError(f"STAGING_DUMP_FLAGS is not valid shell words: {exc}") from None
        return cls(env["STAGING_SSH_HOST"].strip(), env["STAGING_DB_URL"],
                   tuple(env["STAGING_DUMP_TABLES"].split()), flags)


def remote_command(cfg: StagingConfig) -> str:
    """The command line for the remote shell: every word quoted for it."""
    words = ["pg_dump", *cfg.flags]
    for table in cfg.tables:
        words += ["-t", table]
    words.append(f"--dbname={cfg.db_url}")
    return shlex.join(words)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def sequence_reset(table: str) -> str:
    """Move the serial/identity sequence of `table`.id past the dumped rows (no-op when the
    table has no such sequence)."""
    return (
        "DO $db_tool_seq$\nDECLARE seq text;\nBEGIN\n"
        f"    seq := pg_catalog.pg_get_serial_sequence({_literal(table)}, 'id');\n"
        "    IF seq IS NOT NULL THEN\n"
        "        EXECUTE pg_catalog.format('SELECT pg_catalog.setval(%L, "
        "COALESCE(MAX(id), 0) + 1, false) FROM %s', seq, "
        f"{_literal(table)}::pg_catalog.regclass);\n"
        "    END IF;\n"
        "EXCEPTION WHEN undefined_column OR undefined_table THEN NULL;\n"
        "END\n$db_tool_seq$;\n"
    )


def render_patch(cfg: StagingConfig, dump: str, now: float | None = None) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    header = (
        f"-- Pulled from staging by db-tool {__version__} (database pull_staging).\n"
        f"-- Host:   {cfg.host}\n"
        f"-- Time:   {stamp} (UTC)\n"
        f"-- Tables: {' '.join(cfg.tables)}\n"
        f"-- Flags:  {shlex.join(cfg.flags)}\n"
        "-- Regenerate with `database pull_staging`; edits here are overwritten.\n\n"
    )
    resets = "".join(sequence_reset(t) for t in cfg.tables)
    return (
        header + dump.rstrip("\n") + "\n\n"
        "-- Sequence reset: serial ids continue after the pulled rows.\n"
        # pg_dump empties search_path for its session; the resets name tables as given.
        "RESET search_path;\n" + resets
    )


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` in one rename: readers see the old file or the new one, never a half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        except FileNotFoundError:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class PullResult:
    path: Path
    tables: tuple[str, ...]
    size: int


def pull(cfg: StagingConfig, patch_file: Path, env: Mapping[str, str]) -> PullResult:
    """Dump over ssh. The remote command (it holds STAGING_DB_URL and its password) goes to
    the remote shell on ssh's stdin, never on a local argv that every local user can read
    with `ps` (the original puts it on ssh's command line)."""
    argv = ["ssh", cfg.host, "sh"]
    with output.step(f"pg_dump {' '.join(cfg.tables)} on {cfg.host} over ssh"):
        result = proc.run(argv, env=env, check=False, input=f"exec {remote_command(cfg)}\n")
        if not result.ok:
            raise Error(
                f"failed to dump staging database via SSH (ssh {cfg.host}: exit "
                f"{result.returncode}); {patch_file} was left as it was",
                detail=result.err.strip(),
            )
        if not result.out.strip():
            raise Error(f"staging dump returned empty output ({cfg.host}); {patch_file} was "
                        "left as it was", detail=result.err.strip())
    text = render_patch(cfg, result.out)
    write_atomically(patch_file, text)
    return PullResult(patch_file, cfg.tables, len(text.encode()))
