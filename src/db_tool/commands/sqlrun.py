"""Run one SQL file through psql with its output going where the user asked (a log file or
a stream) and its errors on stderr, and turn a failure into one line naming psql's error."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TextIO

from db_tool import proc, psql


@dataclass(frozen=True)
class FileRun:
    ok: bool
    returncode: int
    error: str  # psql's first ERROR line ("" when ok or when it printed none)
    where: str  # where the output went: the log path, or "above (stdout)"
    output: str  # captured stdout ("" when it went to a log file or was streamed)
    errors: str = ""  # psql's stderr (also copied to ours as it came)




def _real_fd(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, ValueError, OSError):
        return None


def _tee_stderr(pipe: IO[bytes], sink: TextIO, kept: list[bytes]) -> None:
    """Copy psql's stderr to ours as it comes (NOTICEs, the ERROR line with file and line),
    keeping it to name the error afterwards."""
    for line in iter(pipe.readline, b""):
        kept.append(line)
        with contextlib.suppress(OSError, ValueError):
            sink.write(line.decode("utf-8", "replace"))
            sink.flush()


def _wait_teeing(child: subprocess.Popen[bytes], err: TextIO,
                 kept: list[bytes]) -> tuple[str, int]:
    """(its stdout if piped, exit code) of child, its stderr copied to err (and kept) as it
    comes; the child is killed when we are interrupted."""
    assert child.stderr is not None
    tee = threading.Thread(target=_tee_stderr, args=(child.stderr, err, kept), daemon=True)
    tee.start()
    try:
        text = child.stdout.read().decode("utf-8", "replace") if child.stdout else ""
        return text, child.wait()
    except BaseException:
        child.kill()
        child.wait()
        raise
    finally:
        tee.join(timeout=5)
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()


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
    err: TextIO | None = None,
) -> FileRun:
    """psql -f PATH with ON_ERROR_STOP, as the original runs it: stdout to `log` (truncated
    first, like `> $HYDRATE_LOG`), else to `out`; stderr (errors, notices) always to our
    stderr (`err`), also when stdout is redirected or captured. `cwd` None: the caller's.

    With capture (or when `out` has no file descriptor, as under pytest) stdout is also
    collected and then written, so callers can read it."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    argv = psql.base_argv(url, variables=variables) + list(extra_args) + ["-f", str(path)]
    log_fh: IO[bytes] | None = None
    stdout: int | IO[bytes]
    fd = _real_fd(out)
    collect = log is None and (capture or fd is None)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log_fh = open(log, "wb")  # noqa: SIM115 - closed below
        stdout = log_fh
    elif collect:
        stdout = subprocess.PIPE
    else:
        assert fd is not None
        out.flush()
        stdout = fd
    kept: list[bytes] = []
    try:
        child = proc.spawn(argv, env=psql.env(url=url), stdin=subprocess.DEVNULL, stdout=stdout,
                           stderr=subprocess.PIPE, cwd=cwd, tied=True)
        text, rc = _wait_teeing(child, err, kept)
    finally:
        if log_fh is not None:
            log_fh.close()
    errors = b"".join(kept).decode("utf-8", "replace")
    error = psql.first_error(errors) if rc != 0 else ""
    if collect:
        out.write(text)
        out.flush()
    where = str(log) if log is not None else "above (stdout)"
    return FileRun(rc == 0, rc, error, where, text if collect else "", errors)


def failure(run: FileRun) -> str:
    """What went wrong, in a few words: psql's error, or its exit code."""
    if run.error:
        return run.error
    if run.returncode == 2:
        return "psql could not connect (exit 2)"
    return f"psql exited with {run.returncode}"
