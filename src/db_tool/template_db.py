"""The test template: one database built by the project's real workflow, copied per test.

Used by the pytest plugin. Two pieces:

* the cluster: the project's own (reused as it is, left running) or a throw-away one whose
  working dir lives in the cache (`<cache>/pytest/<project key>/cluster`), with throw-away
  durability (fsync off). Its data dir, and so the template in it, survives between test
  sessions; it is stopped when the last session using it ends (a shared lock counts users).
* the template: `dbt_tpl_<key>`, built (bundle → hydrate → patch, or migrations → patch) under
  a file lock so that parallel workers build it once. The key is a hash of everything that
  built it: the bundle, every file under DATABASE_SOURCE (or MIGRATION_DIR), the patch file,
  the secrets, the options and the PostgreSQL build. Same key: the existing template is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from db_tool import clone, fslock, output, pgwire
from db_tool.cluster import Cluster
from db_tool.errors import Error
from db_tool.project_settings import ProjectSettings

PREFIX = "dbt_"
TEMPLATE_PREFIX = "dbt_tpl_"
USERS_LOCK = "users.lock"
START_LOCK = "start.lock"
BUILD_LOCK = "template.lock"


class TemplateBuildFailed(Error):
    """Building the template failed (psql's error is in the message)."""


@dataclass(frozen=True)
class Recipe:
    """How the template is built."""

    source: str = "hydrate"  # or "migrations"
    mock: bool = False


def _hash_tree(h: hashlib._Hash, root: Path | None, label: str) -> None:
    h.update(f"\0{label}\0".encode())
    if root is None or not root.is_dir():
        h.update(b"absent")
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            h.update(str(path.relative_to(root)).encode() + b"\0")
            with contextlib.suppress(OSError):
                h.update(hashlib.sha256(path.read_bytes()).digest())


def template_key(settings: ProjectSettings, recipe: Recipe, install_fingerprint: str) -> str:
    from db_tool import bundle
    from db_tool.commands.hydrate import find_dotenv

    h = hashlib.sha256()
    h.update(f"v2|{recipe.source}|mock={recipe.mock}|{install_fingerprint}".encode())
    h.update(bundle.render().encode())
    if recipe.source == "migrations":
        _hash_tree(h, settings.migration_dir, "migrations")
    else:
        _hash_tree(h, settings.database_source, "source")
    patch = settings.patch_file
    h.update(b"\0patch\0")
    if patch is not None and patch.is_file():
        h.update(patch.read_bytes())
    found = find_dotenv(settings.dotenv_vars)
    h.update(b"\0secrets\0" + (found[0].encode() if found else b"none"))
    return h.hexdigest()[:16]


def template_name(key: str) -> str:
    return TEMPLATE_PREFIX + key


# ---- the cluster ---------------------------------------------------------------------------
def state_dir(settings: ProjectSettings) -> Path:
    """`<cache>/pytest/<project key>`: the locks, the build-failure notes and (throw-away mode)
    the cluster's working dir `cluster/` — never files in the project's working dir."""
    from db_tool import cachedir

    base = settings.cluster_config(working_dir=Path("/nonexistent"))
    cache = None
    if base.cache_locations is not None:
        cache = cachedir.choose(base.cache_locations, settings.local_dir, "test cluster")
    if cache is None:
        raise Error("no writable cache dir for the test databases' state: set XDG_CACHE_HOME "
                    "to a writable directory")
    project = str(settings.local_dir or "")
    digest = hashlib.sha256(f"{project}|{os.getuid()}".encode()).hexdigest()[:12]
    path = cache / "pytest" / digest
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def session_cluster(
    settings: ProjectSettings, mode: str, state: Path, *, keep_running: list[bool] | None = None
) -> Iterator[Cluster]:
    """The cluster the test session uses (mode: "throwaway" or "project").

    A throw-away cluster is stopped when the last session using it ends, unless
    keep_running[0] is True by then (a kept database must stay reachable)."""
    if mode == "project":
        cluster = Cluster(settings.cluster_config(reuse=True))
        with output.step(f"start the project's cluster in {cluster.working_dir}"):
            cluster.init()
        yield cluster
        return
    cluster = Cluster(settings.cluster_config(
        working_dir=state / "cluster", reuse=True, ephemeral=True, log_path=None,
        conf_file=None, port=5432, database="postgres", url_var="PGURL",
    ))
    with contextlib.ExitStack() as users:
        with fslock.exclusive(state / START_LOCK):
            cluster.init()
            users.enter_context(fslock.shared(state / USERS_LOCK))
        try:
            yield cluster
        finally:
            with fslock.exclusive(state / START_LOCK):
                users.close()
                if fslock.unused(state / USERS_LOCK) and not (keep_running and keep_running[0]):
                    cluster.stop()


# ---- the template --------------------------------------------------------------------------
def _connect(cluster: Cluster) -> pgwire.Connection:
    return _connect_to(cluster, "postgres")


def _connect_to(cluster: Cluster, database: str) -> pgwire.Connection:
    return pgwire.connect(cluster.sockdir, cluster.port, cluster.superuser, database)


def ensure_template(
    cluster: Cluster, settings: ProjectSettings, recipe: Recipe, key: str, *, state: Path,
    run_id: str,
) -> str:
    """The template's name, building it first when no session built it with this key.

    run_id names this test run (shared by its xdist workers): a build that failed in this run
    is not tried again by the next worker, which reports it in one line instead."""
    name = template_name(key)
    failed = state / f"template-{key}.failed"
    with fslock.exclusive(state / BUILD_LOCK), _connect(cluster) as conn:
        if clone.exists(conn, name):
            return name
        with contextlib.suppress(OSError):
            run = failed.read_text().partition("\n")[0]
            if run == run_id:
                raise TemplateBuildFailed(
                    "the template database could not be built (another worker of this run "
                    "reported psql's error)"
                )
        building = name + "_build"
        clone.drop(conn, building)
        try:
            conn.query(f"CREATE DATABASE {pgwire.quote_ident(building)}")
            build(settings, recipe, cluster.url_for(building))
        except Error as exc:
            failed.write_text(f"{run_id}\n{exc.message}\n")
            clone.drop(conn, building)
            raise TemplateBuildFailed(
                f"building the test template failed: {exc.message}", detail=exc.detail
            ) from None
        failed.unlink(missing_ok=True)
        # A session's start writes the database's relcache init file when DDL removed it; a
        # copy (FILE_COPY) takes it along, so no copy's first session has to build it (~20 ms).
        # close(wait): the rename below would otherwise wait 100 ms for the leaving session.
        _connect_to(cluster, building).close(wait=True)
        clone.rename(conn, building, name)
        conn.query(f"ALTER DATABASE {pgwire.quote_ident(name)} WITH ALLOW_CONNECTIONS false")
        _drop_stale_templates(conn, keep=name)
    return name


def _drop_stale_templates(conn: pgwire.Connection, keep: str) -> None:
    rows = conn.query(
        "SELECT datname FROM pg_database WHERE datname LIKE 'dbt\\_tpl\\_%' "
        f"AND datname <> {pgwire.quote_literal(keep)} AND datname NOT LIKE '%\\_build'"
    )
    for (stale,) in rows:
        with contextlib.suppress(Error):  # in use by a session of an older checkout
            clone.drop(conn, str(stale), force=False)


def build(settings: ProjectSettings, recipe: Recipe, url: str) -> None:
    """The real workflow into `url`: bundle + secrets + entrypoint (or the migrations), then
    the patch file when there is one. psql's output is kept and shown only on failure."""
    out = io.StringIO()
    try:
        if recipe.source == "migrations":
            _migrate_up_all(settings, url)
        else:
            from db_tool.commands.hydrate import hydrate

            hydrate(settings, url, mock=recipe.mock, out=out)
        patch = settings.patch_file
        if patch is not None and patch.is_file():
            from db_tool.commands.patch import apply_patch

            apply_patch(settings, url, out=out)
    except Error as exc:
        tail = "\n".join(out.getvalue().strip().splitlines()[-20:])
        raise Error(exc.message, detail="\n".join(p for p in (exc.detail, tail) if p)) from None


def _migrate_up_all(settings: ProjectSettings, url: str) -> None:
    from db_tool import migrations, planning
    from db_tool.history_pg import PgHistory

    mdir = settings.migration_dir
    if mdir is None or not mdir.is_dir():
        raise Error(f"--db-tool-source=migrations but the migration dir {mdir} does not exist")
    available = migrations.discover(mdir)
    with PgHistory(url).migrate_session({}, 60.0) as session:
        plan = planning.plan(available, session.applied, planning.Target.parse("up", "all"))
        if plan.already is None:
            session.apply(plan.steps)
