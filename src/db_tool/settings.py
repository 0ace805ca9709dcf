"""Settings built once from the environment — the only place environment variables are read.

Tests build these from plain dicts.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from db_tool.errors import Error, ExitCode, MissingError

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_PORT = 5432
DEFAULT_DATABASE = "testdb"
DEFAULT_PRELOAD = "pg_cron"


def login_name() -> str:
    """The invoking login (`id -un`); the cluster's superuser is named after it."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return os.environ.get("USER") or f"uid{os.getuid()}"


def working_dir_from(env: Mapping[str, str]) -> Path | None:
    if env.get("PG_WORKING_DIR"):
        return Path(env["PG_WORKING_DIR"])
    if env.get("LOCAL_DIR"):
        return Path(env["LOCAL_DIR"]) / "focus" / "postgresql"
    return None


def _port(env: Mapping[str, str]) -> int:
    raw = env.get("PG_PORT", "") or str(DEFAULT_PORT)
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise MissingError(f"PG_PORT={raw!r} is not a port number: set it to 1-65535 or unset it")
    return int(raw)


@dataclass(frozen=True)
class ClusterConfig:
    working_dir: Path
    port: int = DEFAULT_PORT
    database: str = DEFAULT_DATABASE
    reuse: bool = False
    log_path: Path | None = None
    conf_file: Path | None = None
    preload: str = DEFAULT_PRELOAD
    preload_explicit: bool = False
    disable_logging: bool = False
    url_var: str = "PGURL"
    no_tty: bool = False
    os_user: str | None = None  # PG_OS_USER: who runs the server when we are root
    superuser: str = field(default_factory=login_name)
    # Throw-away clusters (check, diff) may trade crash safety for speed: fsync off.
    ephemeral: bool = False
    cache_dir: Path | None = None
    # Keep a spare copy of the template ready (DB_TOOL_NO_SPARE=1 disables).
    use_spare: bool = True
    pg_bin_dir: str | None = None  # PG_BIN_DIR: which PostgreSQL (else pgbin's search)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ClusterConfig:
        env = os.environ if env is None else env
        wd = working_dir_from(env)
        if wd is None:
            raise MissingError(
                "PG_WORKING_DIR or LOCAL_DIR is required: export PG_WORKING_DIR=/path/to/cluster "
                "(or LOCAL_DIR=/path/to/project for $LOCAL_DIR/focus/postgresql)"
            )
        url_var = env.get("PG_URL_VAR", "") or "PGURL"
        if not _IDENT.match(url_var):
            raise Error(
                f"PG_URL_VAR={url_var!r} is not a valid shell variable name: use letters, "
                "digits and _ (not starting with a digit)",
                ExitCode.MISSING,
            )
        preload_explicit = "PG_SHARED_PRELOAD_LIBRARIES" in env
        values: dict[str, object] = dict(
            working_dir=wd.absolute(),
            port=_port(env),
            database=env.get("PG_DATABASE", "") or DEFAULT_DATABASE,
            reuse="PG_REUSE" in env,
            log_path=Path(env["PG_LOG_PATH"]).absolute() if env.get("PG_LOG_PATH") else None,
            conf_file=Path(env["PG_CONF_FILE"]).absolute() if env.get("PG_CONF_FILE") else None,
            preload=env.get("PG_SHARED_PRELOAD_LIBRARIES", DEFAULT_PRELOAD).strip(),
            preload_explicit=preload_explicit,
            disable_logging=env.get("PG_DISABLE_LOGGING", "0") == "1",
            url_var=url_var,
            no_tty=env.get("NO_TTY", "0") not in ("", "0"),
            os_user=env.get("PG_OS_USER") or None,
            cache_dir=cache_dir_from(env),
            use_spare=env.get("DB_TOOL_NO_SPARE", "") in ("", "0"),
            pg_bin_dir=env.get("PG_BIN_DIR") or None,
        )
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def preload_list(self) -> list[str]:
        return [p.strip() for p in self.preload.split(",") if p.strip()]


def cache_dir_from(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CACHE_HOME") or os.path.join(
        env.get("HOME") or os.path.expanduser("~"), ".cache"
    )
    return Path(base) / "db-tool"


@dataclass(frozen=True)
class ProjectSettings:
    """What the `database` workflow needs: the seed README's variables with their defaults."""

    env: Mapping[str, str]
    local_dir: Path | None
    database_dir: Path | None
    migration_dir: Path | None
    database_source: Path | None
    working_dir: Path | None
    patch_file: Path | None  # PATCH_SQL, else ${PROFILE_DIR:-$LOCAL_DIR}/test-data.sql
    hydrate_log: Path | None
    patch_log: Path | None
    url: str | None  # --url, else PGURL, else DB_URL
    environment: str | None
    pg_log_path: Path | None
    # HYDRATE_ENTRYPOINT (default entrypoint.sql), relative to DATABASE_SOURCE unless absolute
    hydrate_entrypoint: Path | None = None

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, url: str | None = None
    ) -> ProjectSettings:
        env = dict(os.environ if env is None else env)
        local = Path(env["LOCAL_DIR"]).absolute() if env.get("LOCAL_DIR") else None

        def path(var: str, default: Path | None) -> Path | None:
            if env.get(var):
                return Path(env[var]).absolute()
            return default

        database_dir = path("DATABASE_DIR", local / "db" if local else None)
        log_path = path("PG_LOG_PATH", None)
        profile = path("PROFILE_DIR", local)
        database_source = path("DATABASE_SOURCE", database_dir / "src" if database_dir else None)
        entry = env.get("HYDRATE_ENTRYPOINT") or "entrypoint.sql"
        return cls(
            env=env,
            local_dir=local,
            database_dir=database_dir,
            migration_dir=path("MIGRATION_DIR", database_dir / "migration" if database_dir
                               else None),
            database_source=database_source,
            working_dir=working_dir_from(env),
            patch_file=path("PATCH_SQL", profile / "test-data.sql" if profile else None),
            hydrate_log=path("HYDRATE_LOG", log_path / "hydrate.stdout.log" if log_path
                             else None),
            patch_log=path("PATCH_LOG", log_path / "patch.stdout.log" if log_path else None),
            url=url or env.get("PGURL") or env.get("DB_URL") or None,
            environment=env.get("ENVIRONMENT") or None,
            pg_log_path=log_path,
            hydrate_entrypoint=database_source / entry if database_source else None,
        )

    def require_local_dir(self) -> Path:
        if self.local_dir is None:
            raise MissingError(
                "LOCAL_DIR is required: export LOCAL_DIR=/path/to/project (the directory "
                "holding db/)"
            )
        return self.local_dir

    def require_url(self) -> str:
        if not self.url:
            raise MissingError(
                "no database URL: pass --url, or export PGURL (`. postgres-init` does) or DB_URL"
            )
        return self.url

    def cluster_config(self, **overrides: object) -> ClusterConfig:
        return ClusterConfig.from_env(self.env, **overrides)

    @property
    def focus_dir(self) -> Path:
        return self.require_local_dir() / "focus"
