"""The server configuration texts db-tool writes into a data dir.

- postgresql.conf: the installation's (or PG_CONF_FILE's) text plus DEV_CONF, ending with the
  include of the runtime conf (written once, at a fresh init);
- pg_hba.conf: HBA_CONF (unix socket only, trust);
- the runtime conf (`db-tool.runtime.conf`): port, socket, no TCP, preload libraries, logging —
  rewritten before every start; postgresql.auto.conf lines that would override it are dropped.

Everything takes explicit values (config, data dir, socket dir, server account); nothing reads
the environment or a Cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

from db_tool import output, pgbin, proc, safefs
from db_tool.clusterdir import RUNTIME_CONF
from db_tool.errors import Error, NotInstalledError
from db_tool.settings import ClusterConfig

INCLUDE_LINE = f"include_if_exists = '{RUNTIME_CONF}'"
# Settings of the runtime conf that nothing may override: postgresql.auto.conf lines setting
# them (ALTER SYSTEM, or the original postgres-init's own) are dropped before every start.
MANAGED_KEYS = frozenset({
    "port", "unix_socket_directories", "unix_socket_permissions", "unix_socket_group",
    "listen_addresses", "hba_file", "ident_file",
})

# `all` does not match replication connections; pg_basebackup (`database backup`) needs its
# own line.
HBA_CONF = (
    "# Written by db-tool: unix socket only, trust.\n"
    "local all all trust\n"
    "local replication all trust\n"
)

DEV_CONF = """
# --- db-tool development settings ---
# synchronous_commit = off may lose the commits of the last few hundred ms when the server
# process crashes (or is killed -9) or the OS crashes, but never corrupts data; fsync stays on
# so a reused development database survives crashes.
synchronous_commit = off
# Throw-away clusters additionally get fsync = off / full_page_writes = off (see runtime conf).
"""


def read_conf_file(path: Path | None) -> str | None:
    """PG_CONF_FILE's text (None when unset); unreadable is the user's error to fix."""
    if path is None:
        return None
    try:
        return path.read_text()
    except OSError as exc:
        raise Error(
            f"PG_CONF_FILE={path} is not readable ({exc.strerror}): fix the path or unset "
            "PG_CONF_FILE"
        ) from exc


def conf_key(line: str) -> str:
    """The parameter a postgresql.conf line sets ("name = value" or "name value"), or ""."""
    text = line.strip()
    if not text or text.startswith("#"):
        return ""
    return text.replace("=", " ", 1).split()[0].lower()


def conf_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def write_base_conf(datadir: Path, conf_text: str | None, owner: proc.RunAs | None) -> None:
    """postgresql.conf (PG_CONF_FILE's text, else initdb's plus DEV_CONF) and pg_hba.conf of a
    fresh cluster."""
    conf = datadir / "postgresql.conf"
    if conf_text is not None:
        body = conf_text
    else:
        body = (safefs.read_text(conf, owner) or "") + DEV_CONF
    if not body.endswith("\n"):
        body += "\n"
    safefs.replace_file(conf, body + INCLUDE_LINE + "\n", owner=owner)
    safefs.replace_file(datadir / "pg_hba.conf", HBA_CONF, owner=owner)


def runtime_conf(config: ClusterConfig, datadir: Path, sockdir: Path, libs: list[str]) -> str:
    """The runtime conf's text; `libs`: the preload libraries (preload_libraries())."""
    lines = [
        "# Written by db-tool on every start; edit postgresql.conf instead.",
        f"port = {config.port}",
        f"unix_socket_directories = {conf_quote(str(sockdir))}",
        "unix_socket_permissions = 0700",
        "listen_addresses = ''",
        f"hba_file = {conf_quote(str(datadir / 'pg_hba.conf'))}",
        f"ident_file = {conf_quote(str(datadir / 'pg_ident.conf'))}",
    ]
    if config.ephemeral:
        lines += ["fsync = off", "full_page_writes = off"]
    if config.conf_file is None:
        lines.append(f"shared_preload_libraries = {conf_quote(','.join(libs))}")
        if "pg_cron" in libs:
            lines.append(f"cron.database_name = {conf_quote(config.database)}")
            lines.append(f"cron.host = {conf_quote(str(sockdir))}")
        if config.disable_logging:
            lines.append("logging_collector = off")
        else:
            lines.append("logging_collector = on")
            lines.append(f"log_directory = {conf_quote(str(config.log_path or 'log'))}")
    return "\n".join(lines) + "\n"


def preload_libraries(config: ClusterConfig, install: pgbin.PgInstall) -> list[str]:
    """The libraries to preload: all of PG_SHARED_PRELOAD_LIBRARIES (a missing one named is an
    error), or of the default those the installation has."""
    if config.conf_file is not None:
        return []  # PG_CONF_FILE says everything itself
    libs = config.preload_list()
    missing = [lib for lib in libs if not install.has_library(lib)]
    if not missing:
        return libs
    if config.preload_explicit:
        raise NotInstalledError(
            f"PG_SHARED_PRELOAD_LIBRARIES names {', '.join(missing)}, which "
            f"{install.describe()} does not have: "
            f"{pgbin.library_hint(install, missing)} or change "
            "PG_SHARED_PRELOAD_LIBRARIES"
        )
    # The default pg_cron is only wanted where it exists: its absence is no news.
    output.debug(f"{', '.join(missing)} not installed for PostgreSQL "
                 f"{install.major}; starting without it")
    return [lib for lib in libs if lib not in missing]


def write_runtime_conf(datadir: Path, runtime: str, owner: proc.RunAs | None) -> None:
    """Every file the server reads gets an explicit owner and mode (whatever the umask),
    and is replaced, never written through: data/ belongs to the server account."""
    managed = MANAGED_KEYS | {k for ln in runtime.splitlines() if (k := conf_key(ln))}
    safefs.replace_file(datadir / RUNTIME_CONF, runtime, owner=owner)
    conf = datadir / "postgresql.conf"
    text = safefs.read_text(conf, owner) or ""
    # The include must come last so nothing in postgresql.conf overrides it.
    stripped = [ln for ln in text.rstrip("\n").splitlines() if ln.strip()]
    if not stripped or stripped[-1].strip() != INCLUDE_LINE:
        text += ("" if text.endswith("\n") or not text else "\n") + INCLUDE_LINE + "\n"
        safefs.replace_file(conf, text, owner=owner)
    elif owner is not None:
        _own(conf, owner)
    # postgresql.auto.conf is read after postgresql.conf: drop what would override ours.
    auto = datadir / "postgresql.auto.conf"
    auto_text = safefs.read_text(auto, owner)
    if auto_text is not None:
        kept = [ln for ln in auto_text.splitlines(keepends=True)
                if conf_key(ln) not in managed]
        if len(kept) != len(auto_text.splitlines(keepends=True)):
            safefs.replace_file(auto, "".join(kept), owner=owner)
        elif owner is not None:
            _own(auto, owner)


def _own(path: Path, owner: proc.RunAs) -> None:
    """A file the server reads must be readable by it (a root umask of 077 made it not)."""
    st = os.lstat(path)
    if st.st_uid != owner.uid and not os.path.islink(path):
        os.lchown(path, owner.uid, owner.gid)
