"""deploy: init the project's cluster → hydrate → patch (→ stop with cleanup)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TextIO

from db_tool import output
from db_tool.cluster import Cluster
from db_tool.commands.hydrate import HydrateResult, hydrate, require_entrypoint
from db_tool.commands.patch import PatchResult, apply_patch, patch_file_of
from db_tool.project_settings import ProjectSettings


@dataclass(frozen=True)
class DeployResult:
    url: str
    action: str  # what init did: created, reused, already running, healed
    hydrated: HydrateResult | None
    patched: PatchResult | None
    stopped: bool
    seconds: float


def preflight(settings: ProjectSettings, *, hydrate: bool, patch: bool) -> None:
    """Everything that can be checked before a cluster is started or a file written."""
    settings.require_local_dir()
    if hydrate:
        require_entrypoint(settings)
    if patch:
        patch_file_of(settings)


def hydrate_and_patch(
    settings: ProjectSettings,
    url: str,
    *,
    hydrate_db: bool,
    patch_db: bool,
    mock: bool,
    out: TextIO | None,
) -> tuple[HydrateResult | None, PatchResult | None]:
    hydrated = patched = None
    if hydrate_db:
        with output.step("hydrate"):
            hydrated = hydrate(settings, url, mock=mock, out=out)
    if patch_db:
        with output.step("patch"):
            patched = apply_patch(settings, url, out=out)
    return hydrated, patched


def deploy(
    settings: ProjectSettings,
    *,
    hydrate_db: bool = True,
    patch_db: bool = True,
    mock: bool = False,
    reuse: bool = False,
    cleanup: bool = False,
    out: TextIO | None = None,
) -> DeployResult:
    """The URL used is always the one of the cluster just started (PGURL is not needed)."""
    if reuse:  # --reuse keeps the data as it is: nothing to hydrate or patch
        hydrate_db = patch_db = False
    preflight(settings, hydrate=hydrate_db, patch=patch_db)
    started = time.monotonic()
    cluster = Cluster(settings.cluster_config(reuse=reuse))
    verb = "start the existing cluster (--reuse)" if reuse else "init a fresh cluster"
    cluster.check_socket_path()
    # The project lock is held across init, hydrate and patch: a second deploy (or
    # postgres-init) waits instead of restarting the cluster under this one's hydrate.
    with cluster.locked():
        with output.step(f"{verb} in {cluster.working_dir}"):
            init = cluster.init()
        hydrated, patched = hydrate_and_patch(
            settings, init.url, hydrate_db=hydrate_db, patch_db=patch_db, mock=mock, out=out
        )
        stopped = False
        if cleanup:
            with output.step("stop the cluster (--cleanup)"):
                stopped = cluster.stop()
    return DeployResult(init.url, init.action, hydrated, patched, stopped,
                        time.monotonic() - started)
