"""`database` (also `db-tool`): the development workflow command."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from db_tool.cli.common import env_dict, guarded
from db_tool.cli.parser import parse, wants_help, with_examples
from db_tool.cli.spec import DATABASE, DB_GLOBALS
from db_tool.errors import Error, ExitCode, MissingError, UsageError

TYPE_CHECKING = False  # no typing at run time (`database branch create` is a hot path)
if TYPE_CHECKING:  # imported where used: it costs db_tool.settings, which --help needs not
    from typing import Any

    from db_tool.cli.context import Context

    Opts = dict[str, Any]

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
  help [SUBCOMMAND]             the help of a subcommand (as `database SUBCOMMAND --help`)
  completion bash|zsh|fish      shell completion for all five commands (docs/cli.md)

Global options:
  -u, --url URL                 connection URL (else PGURL, else DB_URL, else the project's
                                own cluster when it is running)
  -i, --inherits TABLE          verify TABLE exists first (repeatable); missing -> exit 5
  -q, --quiet                   only warnings and errors on stderr (no progress, no steps)
  --no-pager                    print instead of paging (default pager: $PAGER, else
                                less -FRX; PAGER= or PAGER=cat also turns it off)
  -h, --help, help, ?           this help
  --version                     db-tool's version

Environment (defaults): LOCAL_DIR (the current directory), DATABASE_DIR
($LOCAL_DIR/db), MIGRATION_DIR ($DATABASE_DIR/migration), DATABASE_SOURCE ($DATABASE_DIR/src;
entrypoint.sql), PROFILE_DIR ($LOCAL_DIR; holds test-data.sql), PG_WORKING_DIR
($LOCAL_DIR/focus/postgresql), HYDRATE_LOG / PATCH_LOG (stdout; $PG_LOG_PATH/hydrate.stdout.log
and patch.stdout.log when PG_LOG_PATH is set), ENVIRONMENT, HECTIC_DOTENV_FILE,
HECTIC_DOTENV_CONTENT, and every postgres-init variable (postgres-init --help).

Exit codes: 0 ok, 1 error, 2 ambiguous, 3 missing argument/variable, 4 migration failed,
5 table missing, 9 unknown argument/command, 13 bug, 127 missing dependency.
"""

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


def _init(ctx: Context, opts: Opts) -> int:
    from db_tool.cli import postgres_init

    passthrough = ["--print-env"] if opts["print_env"] else []
    # Without PG_WORKING_DIR and LOCAL_DIR, the cluster goes under the current directory.
    return postgres_init.run(passthrough, ctx.settings.child_env, reuse=bool(opts["reuse"]),
                             working_dir=ctx.settings.working_dir)


def _cleanup(ctx: Context) -> int:
    from db_tool import output
    from db_tool.cluster import Cluster
    from db_tool.settings import ClusterConfig

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


def _bundle(ctx: Context, pos: list[str]) -> int:
    from db_tool import bundle

    if not pos:  # no arguments: the help on stdout, exit 1 (the rule of `database`)
        ctx.stdout.write(sub_help("bundle"))
        return int(ExitCode.GENERIC)
    if pos[0] == "path":
        for p in bundle.materialized_paths(ctx.settings.child_env):
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
    return migrator.run(pre + argv if argv else [], s.child_env)


def dispatch(ctx: Context, sub: str, opts: Opts, pos: list[str]) -> int:
    if sub == "init":
        return _init(ctx, opts)
    if sub == "cleanup":
        return _cleanup(ctx)
    if sub == "bundle":
        return _bundle(ctx, pos)
    if sub in ("upgrade", "cache"):
        from db_tool.cli import db_pg

        return db_pg.cache(ctx, opts, pos) if sub == "cache" else db_pg.upgrade(ctx, opts)
    if sub in ("deploy", "hydrate", "patch", "test", "check", "status", "log", "pull_staging"):
        from db_tool.cli import db_workflow

        return db_workflow.dispatch(ctx, sub, opts, pos)
    if sub in ("diff", "backup", "restore", "normalize-backup"):
        from db_tool.cli import db_backup

        return db_backup.dispatch(ctx, sub, opts, pos)
    if sub == "completion":
        from db_tool.cli import completion

        ctx.stdout.write(completion.script(pos[0] if pos else ""))
        return 0
    raise AssertionError(sub)


HELP_HELP = """\
usage: database help [SUBCOMMAND]

The help of `database`, or of one subcommand (the same as `database SUBCOMMAND --help`).
"""

COMPLETION_HELP = """\
usage: database completion bash|zsh|fish

Print the shell completion script for all five commands (database, db-tool, migrator,
db-ops, postgres-init, postgres-cleanup): subcommands, their options and fixed words. Made
from the same definitions the commands parse with, so it completes what they accept.
Install it once (docs/cli.md says where for each shell), or load it in the shell's
startup file: source <(database completion bash).
"""


def sub_help(sub: str) -> str:
    """The help of `database SUB` with its examples."""
    text = _SUB_HELPS.get(sub)
    if text is None:
        module, attr, key = _HELP_AT[sub]
        import importlib

        found = getattr(importlib.import_module(module), attr)
        text = found[key] if key else found
    return with_examples(text, DATABASE.sub(sub))


_SUB_HELPS = {"init": INIT_HELP, "cleanup": CLEANUP_HELP, "bundle": BUNDLE_HELP,
              "help": HELP_HELP, "completion": COMPLETION_HELP}
_WORKFLOW = ("deploy", "hydrate", "patch", "test", "check", "status", "log", "pull_staging")
_HELP_AT: dict[str, tuple[str, str, str | None]] = {
    **{s: ("db_tool.cli.db_workflow", "HELPS", s) for s in _WORKFLOW},
    "diff": ("db_tool.cli.db_backup", "DIFF_HELP", None),
    "backup": ("db_tool.cli.db_backup", "BACKUP_HELP", None),
    "restore": ("db_tool.cli.db_backup", "RESTORE_HELP", None),
    "normalize-backup": ("db_tool.cli.db_backup", "NORMALIZE_HELP", None),
    "branch": ("db_tool.cli.db_branch", "HELP", None),
    "psql": ("db_tool.cli.db_pg", "PSQL_HELP", None),
    "upgrade": ("db_tool.cli.db_pg", "UPGRADE_HELP", None),
    "cache": ("db_tool.cli.db_pg", "CACHE_HELP", None),
    "migrator": ("db_tool.cli.migrator", "HELP", None),
    "postgres-init": ("db_tool.cli.postgres_init", "HELP", None),
}

_HELP_WORDS = ("-h", "--help", "-?", "?")
_VALUE_GLOBALS = {n for o in DB_GLOBALS if o.takes_value for n in o.names}


def _subcommand_at(args: list[str]) -> int:
    """Index of the subcommand: the first word that is no option and no global's value."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return i + 1
        if arg.startswith("--"):
            i += 2 if arg in _VALUE_GLOBALS else 1
            continue
        if arg.startswith("-") and len(arg) > 1:
            # -u URL, -qu URL (a value-taking short flag last in a group), -uURL
            i += 2 if f"-{arg[-1]}" in _VALUE_GLOBALS and not any(
                f"-{c}" in _VALUE_GLOBALS for c in arg[1:-1]) else 1
            continue
        return i
    return len(args)


def _global_values(values: Opts) -> Opts:
    return {o.dest: values.pop(o.dest) for o in DB_GLOBALS}


def run(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """`database ARGV`: global options, the help forms, the subcommand, its options; the
    settings are built once, here.

    One piece (~80 lines): each early return is one of the original's help and exit-code
    rules, in the order the original checks them; split up, that order would be scattered."""
    args = list(argv)
    if not args:  # as the original: help on stdout, exit 1 (a subcommand is required)
        sys.stdout.write(with_examples(HELP, DATABASE))
        return int(ExitCode.GENERIC)
    at = _subcommand_at(args)
    before = [a for a in args[:at] if a != "--"]
    if any(a in _HELP_WORDS for a in before):
        sys.stdout.write(with_examples(HELP, DATABASE))
        return 0
    if "--version" in before:
        return print_version("database")
    if at >= len(args):
        if before:  # the original: options but no subcommand is exit 1
            try:
                parse(DATABASE, before, max_positional=0)  # `database -u`: a missing value, 3
            except MissingError:
                raise
            except UsageError:
                pass
            raise Error(f"no subcommand specified (only {before[0]}); use '--help' for usage "
                        "information")
        sys.stdout.write(with_examples(HELP, DATABASE))
        return int(ExitCode.GENERIC)
    glob, _ = parse(DATABASE, before, max_positional=0)
    sub, rest = args[at], args[at + 1:]
    if sub in ("help", "?"):
        if rest and rest[0] in DATABASE.subs:
            sys.stdout.write(sub_help(rest[0]))
            return 0
        if rest and rest[0] in _HELP_WORDS:  # `database help --help`
            sys.stdout.write(sub_help("help"))
            return 0
        if rest:
            raise UsageError(f"help: {rest[0]!r} is no subcommand; see database --help")
        sys.stdout.write(with_examples(HELP, DATABASE))
        return 0
    if sub not in DATABASE.subs:
        import difflib

        close = difflib.get_close_matches(sub, list(DATABASE.subs), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        # exit 1 as the original's (its words first): an unknown word is no subcommand there
        raise Error(f"no subcommand specified: {sub!r} is not one; {hint}use '--help' for "
                    "usage information")
    spec = DATABASE.sub(sub)
    if spec.passthrough is not None:
        return _passthrough(sub, rest, glob, env)
    level, action = spec, None
    if spec.subs and rest and rest[0] in spec.subs:  # branch create ...
        action, rest = rest[0], rest[1:]
        level = spec.sub(action)
    if wants_help(rest):
        sys.stdout.write(sub_help(sub) if action is None else with_examples(
            _strip_examples(sub_help(sub)), level))
        return 0
    values, pos = parse(level, rest, extra_opts=DB_GLOBALS)
    more = _global_values(values)
    url = more["url"] or glob["url"]
    if more["quiet"] or glob["quiet"]:
        from db_tool import output

        output.set_quiet()
    from db_tool.cli.context import Context
    from db_tool.project_settings import ProjectSettings

    settings = ProjectSettings.from_env(env_dict(env), url=url)
    ctx = Context(settings=settings, inherits=[*glob["inherits"], *more["inherits"]],
                  url_given=url is not None, no_pager=bool(more["no_pager"] or glob["no_pager"]))
    _check_inherits(ctx)
    if sub == "branch":
        from db_tool.cli import db_branch

        return db_branch.dispatch(ctx, action, values, pos)
    return dispatch(ctx, sub, values, pos)


def _strip_examples(text: str) -> str:
    return text.split("\n\nExamples:\n", 1)[0]


def _passthrough(sub: str, rest: list[str], glob: Opts, env: Mapping[str, str] | None) -> int:
    """`database migrator|postgres-init|psql ...`: the rest is that command's argv."""
    from db_tool.project_settings import ProjectSettings

    url = glob["url"]
    if sub == "migrator" and "--url" in rest[:rest.index("--") if "--" in rest else None]:
        # The original's `database` takes --url from anywhere, also after `migrator`.
        i = rest.index("--url")
        if i + 1 >= len(rest):
            raise MissingError("database migrator: --url needs a value")
        url, rest = rest[i + 1], rest[:i] + rest[i + 2:]
    for i, arg in enumerate(rest):
        if sub == "migrator" and arg.startswith("--url="):
            url = arg.partition("=")[2]
            rest = rest[:i] + rest[i + 1:]
            break
    if glob["quiet"]:
        from db_tool import output

        output.set_quiet()
    from db_tool.cli.context import Context

    settings = ProjectSettings.from_env(env_dict(env), url=url)
    ctx = Context(settings=settings, inherits=list(glob["inherits"]), url_given=url is not None,
                  no_pager=bool(glob["no_pager"]))
    if sub == "psql" and rest[:1] == ["--help"]:  # -h is psql's --host
        sys.stdout.write(sub_help("psql"))
        return 0
    if sub != "postgres-init" and not wants_help(rest):
        _check_inherits(ctx)
    if sub == "postgres-init":
        from db_tool.cli import postgres_init

        return postgres_init.run(rest, settings.child_env)
    if sub == "psql":
        from db_tool.cli import db_pg

        return db_pg.psql(ctx, rest)
    return _migrator(ctx, rest)


def print_version(prog: str) -> int:
    from db_tool import __version__

    sys.stdout.write(f"{prog} (db-tool {__version__})\n")
    return 0


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    from db_tool import output

    # The postgres-init shim calls `db-tool postgres-init`: speak as postgres-init then; else
    # as the command typed (`db-tool` is `database` under its other name).
    typed = "db-tool" if output.invoked() == "db-tool" else "database"
    prog = "postgres-init" if args[:1] == ["postgres-init"] else typed
    return guarded(prog, lambda: run(args, env))


def entry() -> None:
    raise SystemExit(main())
