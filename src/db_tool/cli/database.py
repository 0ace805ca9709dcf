"""`database` (also `db-tool`): the development workflow command."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from db_tool.cli.common import env_dict, guarded
from db_tool.cli.context import Context
from db_tool.errors import Error, ExitCode, UsageError

HELP = """\
usage: database [-u|--url URL] [-i|--inherits TABLE]... <subcommand> [options]

Development database workflow for one project (per-project PostgreSQL cluster under
$LOCAL_DIR/focus/postgresql). Global options may stand before or after the subcommand.
`database <subcommand> --help` describes each.

Subcommands:
  init [--reuse] [--print-env]  create/reuse and start the cluster (wraps postgres-init)
  cleanup                       stop the cluster and remove its working dir (only if db-tool
                                made it, or it holds nothing but the postgres-init layout)
  deploy [-P] [-H] [-m] [--reuse] [-c]
                                init -> hydrate -> patch (the everyday command)
  hydrate [-H] [-m]             apply the hectic bundle, load secrets, run the entrypoint
  patch [-e]                    apply (or --edit) the patch file test-data.sql
  test                          run db/test/test.sql without leaving a trace
  check [-P] [-H] [-m]          the whole deploy in a throw-away cluster
  status [--json]               running?, PostgreSQL, URL, data size, pending migrations
  log [list|<index>|<name>]     the server logs
  pull_staging                  dump staging tables over ssh into the patch file
  diff [...] | diff log         schema + immutable-data drift: backup+migrations vs sources
  backup | restore [...] | normalize-backup [...]
                                physical backups of the cluster
  bundle path|sql               the hectic SQL bundle files, or their concatenated SQL
  branch create|list|switch|drop|reset NAME
                                databases of the cluster used like git branches
  migrator ...                  the migrator with this project's MIGRATION_DIR and URL
  psql [args]                   psql on the project's database (db-tool's PostgreSQL)
  upgrade [--old-bin-dir DIR]   move the cluster to the PostgreSQL major now in use
  cache [list|prune [--all]]    show or prune db-tool's cache (~90 MB per PostgreSQL build)

Global options:
  -u, --url URL                 connection URL (else PGURL, else DB_URL, else the project's
                                own cluster when it is running)
  -i, --inherits TABLE          verify TABLE exists first (repeatable); missing -> exit 5
  -q, --quiet                   only warnings and errors on stderr (no progress, no steps)
  --no-pager                    print instead of paging (default pager: $PAGER, else
                                less -FRX; PAGER= or PAGER=cat also turns it off)
  -h, --help, help, ?           this help

Environment (defaults): LOCAL_DIR (the current directory), DATABASE_DIR
($LOCAL_DIR/db), MIGRATION_DIR ($DATABASE_DIR/migration), DATABASE_SOURCE ($DATABASE_DIR/src;
entrypoint.sql), PROFILE_DIR ($LOCAL_DIR; holds test-data.sql), PG_WORKING_DIR
($LOCAL_DIR/focus/postgresql), HYDRATE_LOG / PATCH_LOG (stdout; $PG_LOG_PATH/hydrate.stdout.log
and patch.stdout.log when PG_LOG_PATH is set), ENVIRONMENT, HECTIC_DOTENV_FILE,
HECTIC_DOTENV_CONTENT, and every postgres-init variable (postgres-init --help).

Exit codes: 0 ok, 1 error, 2 ambiguous, 3 missing argument/variable, 4 migration failed,
5 table missing, 9 unknown argument/command, 13 bug, 127 missing dependency.
"""

SUBCOMMANDS = (
    "init", "cleanup", "deploy", "hydrate", "patch", "test", "check", "status", "log",
    "pull_staging", "diff", "backup", "restore", "normalize-backup", "bundle", "migrator",
    "postgres-init", "branch", "psql", "upgrade",
    "cache",
)

INIT_HELP = """\
usage: database init [--reuse] [--print-env]

Create (fresh, or with --reuse an existing) cluster and start it; see postgres-init --help.
--print-env prints export lines for eval. To export into your shell use `. postgres-init`.
"""

CLEANUP_HELP = """\
usage: database cleanup

Stop the cluster and remove its working dir (PG_WORKING_DIR or $LOCAL_DIR/focus/postgresql) —
only a dir db-tool created (marked .db-tool-created) or one holding nothing but the
postgres-init layout (data/ with PG_VERSION, sock/, logs). Anything else is refused untouched
(exit 1).
"""

BUNDLE_HELP = """\
usage: database bundle path|sql

  path   print the bundle's SQL files in application order (for \\i in an init script)
  sql    print the concatenated bundle SQL (for psql -f -)
"""


def _split_globals(
    argv: Sequence[str],
) -> tuple[list[str], list[str], str | None, list[str], set[str]]:
    """Pull -u/--url, -i/--inherits and the flags --no-pager, -q/--quiet out of argv (before
    or after the subcommand; psql's own -q stays psql's).

    Everything after `migrator` passes through untouched (the migrator has its own -u, which
    means the same), except `--url`, which the original's `database` takes from anywhere."""
    url: str | None = None
    inherits: list[str] = []
    rest: list[str] = []
    before: list[str] = []
    flags: set[str] = set()
    i = 0
    seen_sub = False
    args = list(argv)
    while i < len(args):
        arg = args[i]
        i += 1
        name, eq, inline = arg.partition("=")
        if seen_sub and rest and rest[0] in ("migrator", "postgres-init"):
            if rest[0] == "migrator" and name == "--url" and "--" not in rest:
                if eq:
                    url = inline
                elif i < len(args):
                    url = args[i]
                    i += 1
                else:
                    raise UsageError("--url needs a value")
                continue
            rest.append(arg)
            continue
        if arg in _FLAGS and not (seen_sub and rest and rest[0] == "psql"):
            flags.add(_FLAGS[arg])
            continue
        if name in ("-u", "--url", "-i", "--inherits"):
            if eq:
                value = inline
            elif i < len(args):
                value = args[i]
                i += 1
            else:
                raise UsageError(f"{name} needs a value")
            if name in ("-u", "--url"):
                url = value
            else:
                inherits.append(value)
            continue
        if not seen_sub and not arg.startswith("-"):
            seen_sub = True
        (rest if seen_sub else before).append(arg)
    return before, rest, url, inherits, flags


_FLAGS = {"--no-pager": "no_pager", "-q": "quiet", "--quiet": "quiet"}


# What the server says when --inherits is no identifier at all (exit 3, not 1).
_BAD_NAME = ("invalid name syntax", "improper relation name", "cross-database references")


def _check_inherits(ctx: Context) -> None:
    if not ctx.inherits:
        return
    from db_tool import psql

    url = ctx.settings.require_url()
    for table in ctx.inherits:
        try:
            rows = psql.query(url, "SELECT to_regclass(:'t') IS NOT NULL", variables={"t": table})
        except Error as exc:
            said = f"{exc.message}\n{exc.detail}"
            for why in _BAD_NAME:
                if why in said:
                    raise Error(
                        f"--inherits {table!r} is not a table name ({why}); give TABLE or "
                        "SCHEMA.TABLE, double-quoting parts that need it",
                        ExitCode.MISSING,
                    ) from None
            raise
        if not rows or rows[0][0] != "t":
            raise Error(f"table {table} does not exist (from --inherits)", ExitCode.NO_TABLE)


def _init(ctx: Context, argv: list[str]) -> int:
    from db_tool.cli import args as a
    from db_tool.cli import postgres_init

    if a.wants_help(argv):
        ctx.stdout.write(INIT_HELP)
        return 0
    opts, _ = a.parse(argv, [a.Opt(("--reuse",), "reuse"), a.Opt(("--print-env",), "print_env")],
                      cmd="database init", max_positional=0)
    passthrough = ["--print-env"] if opts["print_env"] else []
    # Without PG_WORKING_DIR and LOCAL_DIR, the cluster goes under the current directory.
    return postgres_init.run(passthrough, ctx.settings.env, reuse=bool(opts["reuse"]),
                             working_dir=ctx.settings.working_dir)


def _cleanup(ctx: Context, argv: list[str]) -> int:
    from db_tool import output
    from db_tool.cli import args as a
    from db_tool.cluster import Cluster
    from db_tool.settings import ClusterConfig

    if a.wants_help(argv):
        ctx.stdout.write(CLEANUP_HELP)
        return 0
    a.parse(argv, [], cmd="database cleanup", max_positional=0)
    wd = ctx.settings.working_dir
    if wd is None:
        ctx.settings.require_local_dir()
        raise AssertionError("unreachable")
    if not wd.exists():
        output.info(f"{wd} does not exist; nothing to clean up")
        return 0
    Cluster(ClusterConfig(working_dir=wd.absolute())).destroy()
    output.info(f"stopped the cluster and removed {wd}")
    return 0


def _bundle(ctx: Context, argv: list[str]) -> int:
    from db_tool import bundle
    from db_tool.cli import args as a

    if a.wants_help(argv) or not argv:
        ctx.stdout.write(BUNDLE_HELP)
        return 0 if argv else 1
    _, pos = a.parse(argv, [], cmd="database bundle", max_positional=1)
    if pos[0] == "path":
        for p in bundle.materialized_paths(ctx.settings.env):
            ctx.stdout.write(f"{p}\n")
        return 0
    if pos[0] == "sql":
        ctx.stdout.write(bundle.render())
        return 0
    raise UsageError(f"bundle: unknown action {pos[0]!r}; use path or sql")


def _migrator(ctx: Context, argv: list[str]) -> int:
    from db_tool.cli import migrator

    s = ctx.settings
    pre: list[str] = []
    if s.migration_dir is not None:
        pre += ["--migration-dir", str(s.migration_dir)]
    # --url, PGURL, DB_URL, else the project's own cluster (a connection error then names
    # its socket, which says more than "no URL").
    url = s.url or s.project_url()
    if url:
        pre += ["--db-url", url]
    # Bare `database migrator` shows the migrator's help, as the original's bare `migrator`.
    return migrator.run(pre + argv if argv else [], s.env)


def dispatch(ctx: Context, sub: str, argv: list[str]) -> int:
    if sub == "postgres-init":
        from db_tool.cli import postgres_init

        return postgres_init.run(argv, ctx.settings.env)
    if sub == "init":
        return _init(ctx, argv)
    if sub == "cleanup":
        return _cleanup(ctx, argv)
    if sub == "bundle":
        return _bundle(ctx, argv)
    if sub == "migrator":
        return _migrator(ctx, argv)
    if sub == "branch":
        from db_tool.cli import db_branch

        return db_branch.dispatch(ctx, argv)
    if sub in ("psql", "upgrade", "cache"):
        from db_tool.cli import db_pg

        if sub == "cache":
            return db_pg.cache(ctx, argv)
        return db_pg.psql(ctx, argv) if sub == "psql" else db_pg.upgrade(ctx, argv)
    if sub in ("deploy", "hydrate", "patch", "test", "check", "status", "log", "pull_staging"):
        from db_tool.cli import db_workflow

        return db_workflow.dispatch(ctx, sub, argv)
    if sub in ("diff", "backup", "restore", "normalize-backup"):
        from db_tool.cli import db_backup

        return db_backup.dispatch(ctx, sub, argv)
    raise AssertionError(sub)


_HELP_WORDS = ("-h", "--help", "-?", "?")


def run(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    from db_tool.settings import ProjectSettings

    before, rest, url, inherits, flags = _split_globals(argv)
    if "quiet" in flags:
        from db_tool import output

        output.set_quiet()
    if not rest:
        if any(a in _HELP_WORDS for a in before):
            sys.stdout.write(HELP)
            return 0
        if before:  # the original: options but no subcommand is exit 1
            raise Error(f"no subcommand specified (only {before[0]}); use '--help' for usage "
                        "information")
        sys.stdout.write(HELP)  # as the original (help on stdout), and its exit 1
        return int(ExitCode.GENERIC)
    if before:
        if any(a in _HELP_WORDS for a in before):
            sys.stdout.write(HELP)
            return 0
        raise UsageError(f"unknown option {before[0]}; see database --help")
    sub, sub_argv = rest[0], rest[1:]
    if sub in ("help", "?"):
        sys.stdout.write(HELP)
        return 0
    if sub not in SUBCOMMANDS:
        import difflib

        close = difflib.get_close_matches(sub, SUBCOMMANDS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        # exit 1 as the original's (its words first): an unknown word is no subcommand there
        raise Error(f"no subcommand specified: {sub!r} is not one; {hint}use '--help' for "
                    "usage information")
    settings = ProjectSettings.from_env(env_dict(env), url=url)
    ctx = Context(settings=settings, inherits=inherits, url_given=url is not None,
                  no_pager="no_pager" in flags)
    if inherits and not any(a in ("-h", "--help") for a in sub_argv):
        _check_inherits(ctx)
    return dispatch(ctx, sub, sub_argv)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # The postgres-init shim calls `db-tool postgres-init`: speak as postgres-init then.
    prog = "postgres-init" if args[:1] == ["postgres-init"] else "database"
    return guarded(prog, lambda: run(args, env))


def entry() -> None:
    raise SystemExit(main())
