"""patch: the project's test data (test-data.sql): create, edit, apply."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from db_tool import output, proc
from db_tool.commands import sqlrun
from db_tool.errors import Error
from db_tool.project_settings import ProjectSettings


@dataclass(frozen=True)
class PatchResult:
    path: Path
    created: bool
    log: Path | None


def patch_file_of(settings: ProjectSettings) -> Path:
    if settings.patch_file is None:
        settings.require_local_dir()
    assert settings.patch_file is not None
    return settings.patch_file


def ensure_patch_file(path: Path) -> bool:
    """Create an empty patch file if there is none (as the original's `touch`); True when
    created."""
    if path.exists():
        if not path.is_file():
            raise Error(f"patch file {path} exists but is not a file: move it away")
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8"):
            pass
    except FileExistsError:
        return False
    output.info(f"created an empty patch file {path}")
    return True


def edit(settings: ProjectSettings) -> PatchResult:
    """Open the patch file in $EDITOR (default vi) and stop; nothing is applied."""
    path = patch_file_of(settings)
    created = ensure_patch_file(path)
    editor = shlex.split(settings.editor or "vi")
    if not editor:
        editor = ["vi"]
    rc = proc.run_interactive([*editor, str(path)], env=settings.child_env)
    if rc != 0:  # the original exits with the editor's code
        raise Error(f"{shlex.join(editor)} exited with {rc}; {path} was not applied", rc)
    return PatchResult(path, created, None)


def apply_patch(settings: ProjectSettings, url: str, *, out: TextIO | None = None) -> PatchResult:
    path = patch_file_of(settings)
    created = ensure_patch_file(path)
    log = settings.patch_log
    with output.step(f"apply {path}"):
        # In the caller's directory, as the original runs it.
        run = sqlrun.run_file(url, path, log=log, out=out)
        if not run.ok:
            raise Error(f"patch error in {path}: {sqlrun.failure(run)}, check "
                        f"{log or 'stdout'} for more")
    return PatchResult(path, created, log)
