"""ProjectSettings: what the `database` workflow takes from the environment, built from the
mapping a command was given (settings.environ() by default) — settings.py's rules for the
cluster's variables, nothing read from os.environ. Apart from settings.py because the hot
paths (the postgres-init hook, postgres-cleanup, the migrator) never need it."""

from __future__ import annotations

from db_tool.errors import MissingError
from db_tool.record import Frozen
from db_tool.settings import (
    CLUSTER_VARIABLES,
    ClusterConfig,
    MigratorSettings,
    cache_locations_from,
    current_dir,
    environ,
    no_line_breaks,
    port_from,
    read_only,
    working_dir_from,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from db_tool.settings import CacheLocations

# What commands.staging.StagingConfig.from_env reads (checked by `database pull_staging` only).
STAGING_VARIABLES = ("STAGING_SSH_HOST", "STAGING_DB_URL", "STAGING_DUMP_TABLES",
                     "STAGING_DUMP_FLAGS")
# What commands.hydrate.find_dotenv (bundle.resolve_dotenv) reads: the secrets' sources.
DOTENV_VARIABLES = ("HECTIC_DOTENV_CONTENT", "HECTIC_DOTENV_FILE", "LOCAL_DIR", "ENVIRONMENT")


def _only(env: Mapping[str, str], names: tuple[str, ...]) -> Mapping[str, str]:
    return read_only({k: env[k] for k in names if k in env})


class ProjectSettings(Frozen):
    """What the `database` workflow needs: the seed README's variables with their defaults.

    No raw environment: each value a command looks up is a field; the groups a later step
    validates (the cluster's, pull_staging's, the dotenv sources) are kept as just their
    variables (cluster_vars, staging_vars, dotenv_vars); child_env is what child processes
    and nested commands (postgres-init, migrator) are given, never looked into."""

    _fields = (
        "local_dir", "database_dir", "migration_dir", "database_source", "working_dir",
        "patch_file", "hydrate_log", "patch_log", "url", "environment", "pg_log_path",
        "migrator", "cache_locations", "url_source", "local_dir_is_cwd", "hydrate_entrypoint",
        "pager", "editor", "cluster_vars", "staging_vars", "dotenv_vars", "child_env",
    )
    __slots__ = _fields
    _hidden = frozenset({"cluster_vars", "staging_vars", "dotenv_vars", "child_env"})
    local_dir: Path | None
    database_dir: Path | None
    migration_dir: Path | None
    database_source: Path | None
    working_dir: Path | None
    patch_file: Path | None  # PATCH_SQL, else ${PROFILE_DIR:-$LOCAL_DIR}/test-data.sql
    hydrate_log: Path | None
    patch_log: Path | None
    url: str | None  # --url, else PGURL, else DB_URL (None: the project's cluster, see below)
    environment: str | None
    pg_log_path: Path | None
    migrator: MigratorSettings  # MIGRATOR_*, DB_URL/PGURL, PATH, libpq's: what `migrator` reads
    cache_locations: CacheLocations
    url_source: str | None  # which of --url / PGURL / DB_URL gave `url`
    # LOCAL_DIR was unset: local_dir is the current directory, as the original's ${LOCAL_DIR:-$PWD}
    local_dir_is_cwd: bool
    # HYDRATE_ENTRYPOINT (default entrypoint.sql), relative to DATABASE_SOURCE unless absolute
    hydrate_entrypoint: Path | None
    pager: str | None  # PAGER as given (None: unset; pager_argv makes it argv)
    editor: str | None  # EDITOR as given (None or empty: vi)
    cluster_vars: Mapping[str, str]
    staging_vars: Mapping[str, str]
    dotenv_vars: Mapping[str, str]
    # The environment of child processes and nested commands: passed on, not read.
    child_env: Mapping[str, str]

    def __init__(
        self,
        local_dir: Path | None,
        database_dir: Path | None,
        migration_dir: Path | None,
        database_source: Path | None,
        working_dir: Path | None,
        patch_file: Path | None,
        hydrate_log: Path | None,
        patch_log: Path | None,
        url: str | None,
        environment: str | None,
        pg_log_path: Path | None,
        migrator: MigratorSettings,
        cache_locations: CacheLocations,
        url_source: str | None = None,
        local_dir_is_cwd: bool = False,
        hydrate_entrypoint: Path | None = None,
        pager: str | None = None,
        editor: str | None = None,
        cluster_vars: Mapping[str, str] | None = None,
        staging_vars: Mapping[str, str] | None = None,
        dotenv_vars: Mapping[str, str] | None = None,
        child_env: Mapping[str, str] | None = None,
    ) -> None:
        self._set(
            local_dir=local_dir, database_dir=database_dir, migration_dir=migration_dir,
            database_source=database_source, working_dir=working_dir, patch_file=patch_file,
            hydrate_log=hydrate_log, patch_log=patch_log, url=url, environment=environment,
            pg_log_path=pg_log_path, migrator=migrator, cache_locations=cache_locations,
            url_source=url_source, local_dir_is_cwd=local_dir_is_cwd,
            hydrate_entrypoint=hydrate_entrypoint, pager=pager, editor=editor,
            cluster_vars={} if cluster_vars is None else cluster_vars,
            staging_vars={} if staging_vars is None else staging_vars,
            dotenv_vars={} if dotenv_vars is None else dotenv_vars,
            child_env={} if child_env is None else child_env,
        )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, url: str | None = None
    ) -> ProjectSettings:
        from pathlib import Path

        env = dict(environ() if env is None else env)
        local_is_cwd = not env.get("LOCAL_DIR")
        if env.get("LOCAL_DIR"):
            local: Path | None = Path(no_line_breaks("LOCAL_DIR", env["LOCAL_DIR"])).absolute()
        else:
            local = current_dir(env)

        def path(var: str, default: Path | None) -> Path | None:
            if env.get(var):
                return Path(env[var]).absolute()
            return default

        database_dir = path("DATABASE_DIR", local / "db" if local else None)
        log_path = path("PG_LOG_PATH", None)
        profile = path("PROFILE_DIR", local)
        working_dir = working_dir_from(env)
        if working_dir is None and local is not None:
            working_dir = local / "focus" / "postgresql"
        url_source = None
        for source, value in (("--url", url), ("PGURL", env.get("PGURL")),
                              ("DB_URL", env.get("DB_URL"))):
            if value:
                url, url_source = value, source
                break
        else:
            url = None
        database_source = path("DATABASE_SOURCE", database_dir / "src" if database_dir else None)
        entry = env.get("HYDRATE_ENTRYPOINT") or "entrypoint.sql"
        return cls(
            local_dir=local,
            database_dir=database_dir,
            migration_dir=path("MIGRATION_DIR", database_dir / "migration" if database_dir
                               else None),
            database_source=database_source,
            working_dir=working_dir.absolute() if working_dir else None,
            patch_file=path("PATCH_SQL", profile / "test-data.sql" if profile else None),
            hydrate_log=path("HYDRATE_LOG", log_path / "hydrate.stdout.log" if log_path
                             else None),
            patch_log=path("PATCH_LOG", log_path / "patch.stdout.log" if log_path else None),
            url=url,
            environment=env.get("ENVIRONMENT") or None,
            pg_log_path=log_path,
            url_source=url_source,
            local_dir_is_cwd=local_is_cwd,
            hydrate_entrypoint=database_source / entry if database_source else None,
            pager=env.get("PAGER"),
            editor=env.get("EDITOR"),
            migrator=MigratorSettings.from_env(env),
            cache_locations=cache_locations_from(env),
            cluster_vars=_only(env, CLUSTER_VARIABLES),
            staging_vars=_only(env, STAGING_VARIABLES),
            dotenv_vars=_only(env, DOTENV_VARIABLES),
            child_env=read_only(env),
        )

    def require_local_dir(self) -> Path:
        if self.local_dir is None:
            raise MissingError(
                "LOCAL_DIR is required (the current directory, the fallback, no longer "
                "exists): export LOCAL_DIR=/path/to/project (the directory holding db/)"
            )
        return self.local_dir

    def project_url(self) -> str | None:
        """The URL of this project's own cluster (socket under the working dir, PG_PORT,
        PG_DATABASE, the login), or None when no working dir can be told."""
        if self.working_dir is None:
            return None
        from db_tool.conninfo import build_url

        config = self.cluster_config()
        return build_url(config.superuser, config.database, config.working_dir / "sock",
                         config.port)

    def project_cluster_running(self) -> bool:
        """A server is listening on the project's socket (its socket file exists)."""
        if self.working_dir is None:
            return False
        port = port_from(self.cluster_vars)
        return (self.working_dir / "sock" / f".s.PGSQL.{port}").is_socket()

    def require_url(self) -> str:
        """--url, PGURL, DB_URL, then the project's own cluster when it is running."""
        if self.url:
            return self.url
        if self.project_cluster_running():
            url = self.project_url()
            assert url is not None
            return url
        if self.working_dir is None:
            cluster = "no project cluster (LOCAL_DIR unset and no current directory)"
        else:
            cluster = (f"the project's cluster in {self.working_dir} is not running "
                       "(`database init` starts it)")
        raise MissingError(
            "no database URL: tried --url, PGURL, DB_URL (all unset) and "
            f"{cluster}; or pass --url / export PGURL (`. postgres-init` does it) or DB_URL"
        )

    def cluster_config(self, **overrides: object) -> ClusterConfig:
        """The project's ClusterConfig (its variables checked now), with overrides."""
        if self.working_dir is not None:
            overrides.setdefault("working_dir", self.working_dir)
        overrides.setdefault("caller_env", tuple(self.child_env.items()))
        return ClusterConfig.from_env(self.cluster_vars, **overrides)


    @property
    def focus_dir(self) -> Path:
        return self.require_local_dir() / "focus"
