"""Settings built once from the environment — the only place environment variables are read.

Tests build these from plain dicts. This module is imported on every hot path (the
postgres-init hook, postgres-cleanup, the migrator), so it imports nothing it can do
without: no dataclasses (inspect, ast), typing, re or pathlib (urllib) at import; its value
types are plain classes with __slots__, immutable (Frozen), and Path is imported by the
functions that build paths.
"""

from __future__ import annotations

import os
import pwd

from db_tool.errors import Error, ExitCode, MissingError
from db_tool.record import Frozen

TYPE_CHECKING = False  # typing costs ~7 ms at start-up
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

# Names the sourced shim must never assign: the shell's own variables, what the loader and
# interpreters read, and libpq's variables (PGHOST=<url> would break every psql after it).
_SHELL_OWNED = frozenset({
    "PATH", "IFS", "HOME", "PS1", "PS2", "PS3", "PS4", "ENV", "BASH_ENV", "CDPATH", "SHELL",
    "PWD", "OLDPWD", "OPTIND", "OPTARG", "PPID", "LINENO", "RANDOM", "SECONDS", "UID", "EUID",
    "GROUPS", "HOSTNAME", "MAIL", "MAILPATH", "MAILCHECK", "FPATH", "HISTFILE", "HISTSIZE",
    "PROMPT_COMMAND", "PROMPT", "RPROMPT", "TERM", "USER", "LOGNAME", "TMPDIR", "LANG",
    "LANGUAGE", "LC_ALL", "NLSPATH", "SHELLOPTS", "TMOUT", "POSIXLY_CORRECT", "FCEDIT",
    "EDITOR", "VISUAL", "PAGER", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PERL5LIB",
    "PERL5OPT", "RUBYOPT", "NODE_OPTIONS", "GCONV_PATH", "HOSTALIASES", "RESOLV_HOST_CONF",
    "TZ", "TZDIR", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR", "DISPLAY", "SSH_AUTH_SOCK",
    "PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE",
    "PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGAPPNAME", "PGSSLMODE", "PGSSLROOTCERT",
    "PGSSLCERT", "PGSSLKEY", "PGCONNECT_TIMEOUT", "PGCLIENTENCODING", "PGTZ", "PGDATESTYLE",
    "PGSYSCONFDIR", "PGLOCALEDIR", "PGTARGETSESSIONATTRS", "PGDATA",
    "POSTGRESQL_HOST", "POSTGRESQL_PORT", "POSTGRESQL_USER", "POSTGRESQL_DATABASE",
})
_SHELL_OWNED_PREFIXES = ("LD_", "DYLD_", "BASH", "ZSH", "KSH_", "__dbt_", "PYTHON")
DEFAULT_PORT = 5432
DEFAULT_DATABASE = "testdb"
DEFAULT_PRELOAD = "pg_cron"


DEFAULT_PAGER = ("less", "-FRX")  # quit if one screen, keep colours, leave it on screen


def pager_from(env: Mapping[str, str]) -> tuple[str, ...]:
    """PAGER as argv; unset: less -FRX; set but empty (or `cat`): no pager."""
    return pager_argv(env.get("PAGER"))


def pager_argv(pager: str | None) -> tuple[str, ...]:
    """The value of PAGER (None: unset) as argv, as pager_from."""
    import shlex

    if pager is None:
        return DEFAULT_PAGER
    argv = tuple(shlex.split(pager))
    return () if argv in ((), ("cat",)) else argv


def color_from(env: Mapping[str, str]) -> bool | None:
    """NO_COLOR (any value) turns colour off, FORCE_COLOR (not 0/false) on even without a
    terminal; None: colour when the stream is a terminal. NO_COLOR wins when both are set."""
    if env.get("NO_COLOR"):
        return False
    force = env.get("FORCE_COLOR")
    if force is not None and force.lower() not in ("0", "false", "no"):
        return True
    return None


DEFAULT_PROGRESS_INTERVAL = 5.0


def progress_interval_from(env: Mapping[str, str]) -> float:
    """Seconds between progress lines when stderr is no terminal (DB_TOOL_PROGRESS_INTERVAL)."""
    raw = env.get("DB_TOOL_PROGRESS_INTERVAL", "")
    try:
        value = float(raw) if raw else DEFAULT_PROGRESS_INTERVAL
    except ValueError:
        raise MissingError(f"DB_TOOL_PROGRESS_INTERVAL={raw!r} is not a number of seconds: "
                           "set it to e.g. 5 or unset it") from None
    return max(value, 0.05)


# HECTIC_LOG, as the original's log helper: the lowest level shown (default info).
LOG_LEVELS = {"trace": 0, "debug": 1, "info": 2, "notice": 3, "warn": 4, "warning": 4,
              "error": 5, "panic": 6}


class CacheLocations(Frozen):
    """The environment's say on cache locations (cachedir.py picks one)."""

    _fields = ("xdg_cache_home", "home", "tmpdir")
    __slots__ = _fields
    xdg_cache_home: str | None
    home: str | None
    tmpdir: str | None

    def __init__(self, xdg_cache_home: str | None = None, home: str | None = None,
                 tmpdir: str | None = None) -> None:
        self._set(xdg_cache_home=xdg_cache_home, home=home, tmpdir=tmpdir)


def read_only(values: dict[str, str]) -> Mapping[str, str]:
    from types import MappingProxyType

    return MappingProxyType(values)


def cache_locations_from(env: Mapping[str, str]) -> CacheLocations:
    return CacheLocations(
        xdg_cache_home=env.get("XDG_CACHE_HOME") or None,
        home=env.get("HOME") or None,
        tmpdir=env.get("TMPDIR") or None,
    )


class Runtime(Frozen):
    """What the process-wide helpers need from the environment: log level and colour
    (output), the progress interval (progress), which psql (psql), and the environment every
    child process gets (proc, psql). Read from the env a command's main(argv, env=...) was
    given (use()), so that env, not os.environ, is honoured end to end."""

    _fields = ("child_env", "log_level", "color", "pg_bin_dir", "path",
                 "progress_interval_raw", "cache_locations")
    __slots__ = _fields
    child_env: Mapping[str, str]
    log_level: int
    color: bool | None
    pg_bin_dir: str | None
    path: str | None  # PATH, to find programs (psql, pg_config) the way a child would
    progress_interval_raw: str
    cache_locations: CacheLocations

    def __init__(
        self,
        child_env: Mapping[str, str],
        log_level: int = LOG_LEVELS["info"],
        color: bool | None = None,
        pg_bin_dir: str | None = None,
        path: str | None = None,
        progress_interval_raw: str = "",
        cache_locations: CacheLocations | None = None,
    ) -> None:
        self._set(child_env=child_env, log_level=log_level, color=color, pg_bin_dir=pg_bin_dir,
                  path=path, progress_interval_raw=progress_interval_raw,
                  cache_locations=CacheLocations() if cache_locations is None
                  else cache_locations)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Runtime:
        return cls(
            child_env=read_only(dict(env)),
            log_level=LOG_LEVELS.get(env.get("HECTIC_LOG", "").strip().lower(),
                                     LOG_LEVELS["info"]),
            color=color_from(env),
            pg_bin_dir=env.get("PG_BIN_DIR") or None,
            path=env.get("PATH"),
            progress_interval_raw=env.get("DB_TOOL_PROGRESS_INTERVAL", ""),
            cache_locations=cache_locations_from(env),
        )

    def progress_interval(self) -> float:
        """Checked when progress is first shown, not at start-up: a bad value only matters
        to a command that reports progress."""
        return progress_interval_from({"DB_TOOL_PROGRESS_INTERVAL": self.progress_interval_raw})


_installed: Runtime | None = None


def use(env: Mapping[str, str]) -> Runtime:
    """Install the Runtime of env for this process: every main() does it (cli.common.env_dict)
    with the env it was given. Returns it."""
    global _installed
    _installed = Runtime.from_env(env)
    return _installed


def forget() -> None:
    """Back to no installed Runtime (tests, after an in-process main())."""
    global _installed
    _installed = None


def environ() -> Mapping[str, str]:
    """The process's environment: for a main() called without env= (the launchers)."""
    return os.environ


def runtime() -> Runtime:
    """The installed Runtime; a library caller that never ran a main() gets one read from
    os.environ at the moment of use (as it would have read the variables itself)."""
    return _installed if _installed is not None else Runtime.from_env(os.environ)


def login_name() -> str:
    """The invoking login (`id -un`); the cluster's superuser is named after it."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return os.environ.get("USER") or f"uid{os.getuid()}"


def no_line_breaks(var: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise MissingError(
            f"{var}={value!r} contains a line break: PostgreSQL's config files and the exported "
            f"URL cannot carry one; use a value without newline or carriage return"
        )
    return value


def working_dir_from(env: Mapping[str, str]) -> Path | None:
    from pathlib import Path

    if env.get("PG_WORKING_DIR"):
        return Path(no_line_breaks("PG_WORKING_DIR", env["PG_WORKING_DIR"]))
    if env.get("LOCAL_DIR"):
        return Path(no_line_breaks("LOCAL_DIR", env["LOCAL_DIR"])) / "focus" / "postgresql"
    return None


def current_dir(env: Mapping[str, str]) -> Path | None:
    """The directory we run in (what the original's `$PWD` fallbacks use); None if it is gone.

    os.getcwd() rather than $PWD: PWD is only kept up to date by shells, and a program started
    by anything else may carry a stale one."""
    from pathlib import Path

    try:
        return Path(os.getcwd())
    except OSError:
        pwd_var = env.get("PWD", "")
        return Path(pwd_var) if pwd_var.startswith("/") and os.path.isdir(pwd_var) else None


def check_url_var(url_var: str) -> str:
    """PG_URL_VAR is pasted into `export NAME=...` by the sourced shim: it must be a plain
    identifier (the whole value: no trailing newline) that does not clobber the shell."""
    if not (url_var.isascii() and url_var.isidentifier()):  # [A-Za-z_][A-Za-z0-9_]*
        raise MissingError(
            f"PG_URL_VAR={url_var!r} is not a valid shell variable name: use letters, "
            "digits and _ (not starting with a digit), e.g. PG_URL_VAR=MYAPP_PGURL"
        )
    if url_var in _SHELL_OWNED or url_var.startswith(_SHELL_OWNED_PREFIXES):
        raise MissingError(
            f"PG_URL_VAR={url_var} would overwrite a variable your shell or PostgreSQL's tools "
            "depend on: choose a project name, e.g. PG_URL_VAR=MYAPP_PGURL"
        )
    return url_var


def port_from(env: Mapping[str, str]) -> int:
    raw = env.get("PG_PORT", "") or str(DEFAULT_PORT)
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise MissingError(f"PG_PORT={raw!r} is not a port number: set it to 1-65535 or unset it")
    return int(raw)


class ClusterConfig(Frozen):
    """What a Cluster needs, read once from the environment (from_env)."""

    _fields = (
        "working_dir", "port", "database", "reuse", "log_path", "conf_file", "preload",
        "preload_explicit", "disable_logging", "url_var", "no_tty", "os_user", "superuser",
        "ephemeral", "cache_locations", "use_spare", "keep_previous", "pg_bin_dir", "homes",
        "caller_env",
    )
    __slots__ = _fields
    _hidden = frozenset({"caller_env"})
    working_dir: Path
    port: int
    database: str
    reuse: bool
    log_path: Path | None
    conf_file: Path | None
    preload: str
    preload_explicit: bool
    disable_logging: bool
    url_var: str
    no_tty: bool
    os_user: str | None  # PG_OS_USER: who runs the server when we are root
    superuser: str
    # Throw-away clusters (check, diff) may trade crash safety for speed: fsync off.
    ephemeral: bool
    # Where the template cache may live (cachedir.py picks one); None: no cache, plain initdb.
    cache_locations: CacheLocations | None
    # Keep a spare copy of the template ready (DB_TOOL_NO_SPARE=1 disables).
    use_spare: bool
    # A fresh init keeps a cluster holding data as data.previous (DB_TOOL_KEEP_PREVIOUS=0: no).
    keep_previous: bool
    pg_bin_dir: str | None  # PG_BIN_DIR: which PostgreSQL (else pgbin's search)
    # Home directories never used as a working dir ($HOME and the login's home).
    homes: tuple[Path, ...]
    # The caller's environment, for the processes a cluster starts (Cluster.client_env,
    # Cluster.server_process_env pick from it); from_env takes it from its env, else the
    # installed Runtime's. Not compared, not shown.
    caller_env: tuple[tuple[str, str], ...]

    def __init__(
        self,
        working_dir: Path,
        port: int = DEFAULT_PORT,
        database: str = DEFAULT_DATABASE,
        reuse: bool = False,
        log_path: Path | None = None,
        conf_file: Path | None = None,
        preload: str = DEFAULT_PRELOAD,
        preload_explicit: bool = False,
        disable_logging: bool = False,
        url_var: str = "PGURL",
        no_tty: bool = False,
        os_user: str | None = None,
        superuser: str | None = None,
        ephemeral: bool = False,
        cache_locations: CacheLocations | None = None,
        use_spare: bool = True,
        keep_previous: bool = True,
        pg_bin_dir: str | None = None,
        homes: tuple[Path, ...] = (),
        caller_env: tuple[tuple[str, str], ...] | None = None,
    ) -> None:
        self._set(
            working_dir=working_dir, port=port, database=database, reuse=reuse,
            log_path=log_path, conf_file=conf_file, preload=preload,
            preload_explicit=preload_explicit, disable_logging=disable_logging, url_var=url_var,
            no_tty=no_tty, os_user=os_user,
            superuser=login_name() if superuser is None else superuser, ephemeral=ephemeral,
            cache_locations=cache_locations, use_spare=use_spare, keep_previous=keep_previous,
            pg_bin_dir=pg_bin_dir, homes=homes,
            caller_env=tuple(runtime().child_env.items()) if caller_env is None else caller_env,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ClusterConfig:
        from pathlib import Path

        env = os.environ if env is None else env
        wd_override = overrides.get("working_dir")
        wd = wd_override if isinstance(wd_override, Path) else working_dir_from(env)
        if wd is None:
            # The original's postgres-init returns 1 here (not 3): scripts may test for it.
            raise Error(
                "PG_WORKING_DIR or LOCAL_DIR is required: export PG_WORKING_DIR=/path/to/cluster "
                "(or LOCAL_DIR=/path/to/project for $LOCAL_DIR/focus/postgresql)",
                ExitCode.GENERIC,
            )
        no_line_breaks("PG_WORKING_DIR", str(wd))
        url_var = check_url_var(env.get("PG_URL_VAR", "") or "PGURL")
        preload_explicit = "PG_SHARED_PRELOAD_LIBRARIES" in env
        values: dict[str, object] = dict(
            working_dir=wd.absolute(),
            port=port_from(env),
            database=no_line_breaks("PG_DATABASE", env.get("PG_DATABASE", "") or DEFAULT_DATABASE),
            reuse="PG_REUSE" in env,
            log_path=Path(env["PG_LOG_PATH"]).absolute() if env.get("PG_LOG_PATH") else None,
            conf_file=Path(env["PG_CONF_FILE"]).absolute() if env.get("PG_CONF_FILE") else None,
            preload=env.get("PG_SHARED_PRELOAD_LIBRARIES", DEFAULT_PRELOAD).strip(),
            preload_explicit=preload_explicit,
            disable_logging=env.get("PG_DISABLE_LOGGING", "0") == "1",
            url_var=url_var,
            no_tty=env.get("NO_TTY", "0") not in ("", "0"),
            os_user=env.get("PG_OS_USER") or None,
            cache_locations=cache_locations_from(env),
            use_spare=env.get("DB_TOOL_NO_SPARE", "") in ("", "0"),
            keep_previous=env.get("DB_TOOL_KEEP_PREVIOUS", "") not in ("0", "no", "false"),
            pg_bin_dir=env.get("PG_BIN_DIR") or None,
            homes=_homes(env),
        )
        values.update(overrides)
        if "caller_env" not in values:
            values["caller_env"] = tuple(env.items())
        return cls(**values)  # type: ignore[arg-type]

    def preload_list(self) -> list[str]:
        return [p.strip() for p in self.preload.split(",") if p.strip()]


def _homes(env: Mapping[str, str]) -> tuple[Path, ...]:
    from pathlib import Path

    homes = [Path(env["HOME"])] if env.get("HOME") else []
    try:
        login_home: str | None = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        login_home = None
    if login_home is not None:
        homes.append(Path(login_home))
    return tuple(h for h in homes if h.is_absolute() and h != Path("/"))


# The variables a ClusterConfig reads (ClusterConfig.from_env): ProjectSettings keeps these,
# not the whole environment, and validates them when a cluster is asked for (cluster_config,
# project_settings.py).
CLUSTER_VARIABLES = (
    "PG_WORKING_DIR", "LOCAL_DIR", "PG_PORT", "PG_DATABASE", "PG_REUSE", "PG_LOG_PATH",
    "PG_CONF_FILE", "PG_SHARED_PRELOAD_LIBRARIES", "PG_DISABLE_LOGGING", "PG_URL_VAR", "NO_TTY",
    "PG_OS_USER", "XDG_CACHE_HOME", "HOME", "TMPDIR", "DB_TOOL_NO_SPARE",
    "DB_TOOL_KEEP_PREVIOUS", "PG_BIN_DIR",
)
DEFAULT_MIGRATOR_LOCK_TIMEOUT = 60.0  # seconds to wait for another migrator


class MigratorSettings(Frozen):
    """What `migrator` takes from the environment."""

    _fields = ("db_url", "migration_dir", "strict", "lock_timeout_text", "inline",
                 "search_path", "libpq")
    __slots__ = _fields
    db_url: str | None  # DB_URL, else PGURL (what `. postgres-init` exports)
    migration_dir: str  # MIGRATION_DIR, else ./migration
    strict: bool  # MIGRATOR_STRICT set and not 0
    lock_timeout_text: str  # MIGRATOR_LOCK_TIMEOUT as given (checked by lock_timeout())
    inline: bool  # MIGRATOR_INLINE=0: every migration through `\i` (psql names the line)
    search_path: str | None  # PATH, where sqlite3 is looked up
    # libpq's defaults the wire client must honour as psql would (PGHOST, PGPORT, PGUSER).
    libpq: Mapping[str, str]

    def __init__(self, db_url: str | None, migration_dir: str, strict: bool,
                 lock_timeout_text: str, inline: bool, search_path: str | None,
                 libpq: Mapping[str, str] | None = None) -> None:
        self._set(db_url=db_url, migration_dir=migration_dir, strict=strict,
                  lock_timeout_text=lock_timeout_text, inline=inline, search_path=search_path,
                  libpq={} if libpq is None else libpq)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MigratorSettings:
        env = os.environ if env is None else env
        return cls(
            db_url=env.get("DB_URL") or env.get("PGURL") or None,
            migration_dir=env.get("MIGRATION_DIR") or "migration",
            strict=env.get("MIGRATOR_STRICT", "") not in ("", "0"),
            lock_timeout_text=env.get("MIGRATOR_LOCK_TIMEOUT", ""),
            inline=env.get("MIGRATOR_INLINE", "1") != "0",
            search_path=env.get("PATH"),
            libpq={k: env[k] for k in ("PGHOST", "PGPORT", "PGUSER") if k in env},
        )

    def lock_timeout(self) -> float:
        """MIGRATOR_LOCK_TIMEOUT in seconds (default 60); a bad value is an error only for the
        commands that take the lock."""
        raw = self.lock_timeout_text
        if not raw:
            return DEFAULT_MIGRATOR_LOCK_TIMEOUT
        try:
            value = float(raw)
        except ValueError:
            value = -1
        if value <= 0:
            raise Error(f"MIGRATOR_LOCK_TIMEOUT={raw!r}: expected a positive number of seconds")
        return value
