"""log: the server log files of the project's cluster (PG_LOG_PATH, else <wd>/data/log)."""

from __future__ import annotations

from pathlib import Path

from db_tool.cluster import Cluster
from db_tool.errors import Error
from db_tool.settings import ProjectSettings


def log_dir(settings: ProjectSettings) -> Path:
    return Cluster(settings.cluster_config()).log_dir


def log_files(settings: ProjectSettings) -> tuple[Path, list[Path]]:
    """(the log dir, its files oldest first). No dir → Error (exit 1)."""
    directory = log_dir(settings)
    if not directory.is_dir():
        raise Error(
            f"no server log dir {directory}: the cluster has not run yet (database deploy / "
            "database init), or its logging is off (PG_DISABLE_LOGGING=1)"
        )
    try:
        entries = [p for p in directory.iterdir() if p.is_file()]
    except PermissionError as exc:
        raise Error(f"cannot read {directory}: {exc.strerror}") from exc
    # postgresql-YYYY-MM-DD_HHMMSS.log names sort chronologically; mtime breaks other ties.
    return directory, sorted(entries, key=lambda p: (p.stat().st_mtime, p.name))


def select(files: list[Path], selector: str | None) -> Path:
    """None → the newest; a number → that entry of `log list` (1 = oldest); otherwise an
    exact file name, else a unique substring of one."""
    if not files:
        raise AssertionError("select() needs files")
    hint = "see `database log list`"
    if selector is None:
        return files[-1]
    if selector.isdigit():
        index = int(selector)
        if not 1 <= index <= len(files):
            raise Error(f"no log number {index}: there are {len(files)}; {hint}")
        return files[index - 1]
    exact = [p for p in files if p.name == selector]
    if exact:
        return exact[0]
    matches = [p for p in files if selector in p.name]
    if not matches:
        raise Error(f"no log file matches {selector!r}; {hint}")
    if len(matches) > 1:
        shown = ", ".join(p.name for p in matches[:5]) + (" ..." if len(matches) > 5 else "")
        raise Error(f"{selector!r} matches {len(matches)} log files ({shown}); be more "
                    f"specific or use its number — {hint}")
    return matches[0]
