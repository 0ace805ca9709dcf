"""hydrate: the hectic bundle, the project's secrets, then the project's entrypoint.sql."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from db_tool import output
from db_tool.commands import sqlrun
from db_tool.errors import Error
from db_tool.project_settings import ProjectSettings


@dataclass(frozen=True)
class HydrateResult:
    entrypoint: Path
    bundle_applied: bool
    secrets: int | None  # how many were loaded; None when no (or an empty) dotenv was found
    secrets_from: str | None
    log: Path | None


def entrypoint_of(settings: ProjectSettings) -> Path:
    """$DATABASE_SOURCE/$HYDRATE_ENTRYPOINT (default entrypoint.sql; an absolute one as is)."""
    if settings.hydrate_entrypoint is None:
        settings.require_local_dir()
    assert settings.hydrate_entrypoint is not None
    return settings.hydrate_entrypoint


def require_entrypoint(settings: ProjectSettings) -> Path:
    path = entrypoint_of(settings)
    if not path.is_file():
        raise Error(
            f"hydrate entrypoint {path} does not exist: create it (it is "
            "$DATABASE_SOURCE/$HYDRATE_ENTRYPOINT, by default $LOCAL_DIR/db/src/entrypoint.sql)"
        )
    return path


def find_dotenv(env: Mapping[str, str]) -> tuple[str, str] | None:
    """The first dotenv source available: HECTIC_DOTENV_CONTENT, a readable
    HECTIC_DOTENV_FILE, $LOCAL_DIR/.env.$ENVIRONMENT — or None."""
    from db_tool import bundle

    found = bundle.resolve_dotenv(env, strict=False)
    if found is None and env.get("HECTIC_DOTENV_FILE") and not env.get("HECTIC_DOTENV_CONTENT"):
        # Set but unreadable: say so, then fall through to $LOCAL_DIR/.env.$ENVIRONMENT.
        output.warn(f"HECTIC_DOTENV_FILE={env['HECTIC_DOTENV_FILE']} is not readable; "
                    "trying $LOCAL_DIR/.env.$ENVIRONMENT")
        rest = {k: v for k, v in env.items() if k != "HECTIC_DOTENV_FILE"}
        found = bundle.resolve_dotenv(rest, strict=False)
    return found


def hydrate(
    settings: ProjectSettings,
    url: str,
    *,
    hook: bool = True,
    mock: bool = False,
    out: TextIO | None = None,
) -> HydrateResult:
    """Apply the bundle and load secrets (unless hook is False), then run the entrypoint.

    psql runs in the caller's directory, as the original's does (`\\i db/src/x.sql` resolves
    from there, `\\ir` from the file); its stdout goes to HYDRATE_LOG or `out`, its errors
    and notices to stderr."""
    entrypoint = require_entrypoint(settings)
    secrets: int | None = None
    secrets_from: str | None = None
    if hook:
        from db_tool import bundle

        with output.step("apply the hectic bundle"):
            bundle.apply(url)
        found = find_dotenv(settings.dotenv_vars)
        if found is not None:
            content, secrets_from = found
            if not bundle.dotenv_is_empty(content):  # as the original: empty loads nothing
                with output.step(f"load secrets from {secrets_from}"):
                    secrets = bundle.load_secrets(url, content)
    variables = {"USE_MOCK": "1"} if mock else {}
    log = settings.hydrate_log
    what = f"run {entrypoint}" + (" with USE_MOCK=1" if mock else "")
    with output.step(what):
        run = sqlrun.run_file(url, entrypoint, log=log, out=out, variables=variables)
        if not run.ok:
            raise Error(f"hydrate error in {entrypoint}: {sqlrun.failure(run)}, check "
                        f"{log or 'stdout'} for more")
    return HydrateResult(entrypoint, hook, secrets, secrets_from, log)
