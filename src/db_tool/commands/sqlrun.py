"""Run one SQL file through psql with its output going where the user asked (a log file or
a stream), and turn a failure into one line that says where the full output is."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from db_tool import proc, psql


@dataclass(frozen=True)
class FileRun:
    ok: bool
    returncode: int
    error: str  # psql's first ERROR line ("" when ok or when it printed none)
    where: str  # where the output went: the log path, or "above (stdout)"
    output: str  # captured output ("" when it went to a log file or was streamed)




def _real_fd(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, ValueError, OSError):
        return None


def run_file(
    url: str,
    path: Path,
    *,
    log: Path | None,
    out: TextIO | None = None,
    variables: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    cwd: Path | None = None,
    capture: bool = False,
) -> FileRun:
    """psql -f PATH with ON_ERROR_STOP; stdout+stderr appended to `log`, else written to `out`.

    With capture (or when `out` has no file descriptor, as under pytest) the output is
    collected and then written, so callers can also read it."""
    out = out if out is not None else sys.stdout
    argv = psql.base_argv(url, variables=variables) + list(extra_args) + ["-f", str(path)]
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as fh:
            start = fh.tell()
            result = proc.run(argv, env=psql.env(url=url), cwd=cwd, check=False,
                              stdout=fh, stderr=subprocess.STDOUT)
        error = ""
        if not result.ok:
            error = psql.first_error(_read_from(log, start))
        return FileRun(result.ok, result.returncode, error, str(log), "")
    fd = _real_fd(out)
    if fd is not None and not capture:
        out.flush()
        result = proc.run(argv, env=psql.env(url=url), cwd=cwd, check=False,
                          stdout=fd, stderr=subprocess.STDOUT)
        # The error line also went to the terminal; ask psql's exit code only.
        return FileRun(result.ok, result.returncode, "", "above (stdout)", "")
    result = proc.run(argv, env=psql.env(url=url), cwd=cwd, check=False, stderr=subprocess.STDOUT)
    out.write(result.out)
    out.flush()
    return FileRun(result.ok, result.returncode, psql.first_error(result.out), "above (stdout)",
                   result.out)


def _read_from(path: Path, offset: int) -> str:
    """What this run appended (the error is near its end, so read at most the last 256 KiB)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(offset, path.stat().st_size - 256 * 1024))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
