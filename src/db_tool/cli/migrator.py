"""`migrator`: apply, roll back, create and inspect migrations.

argv parsing and printing only; discovery/planning live in db_tool.migrations (pure) and the
database side in db_tool.history. Options of a subcommand may stand anywhere, also before the
subcommand (`migrator -u URL --force migrate up`), as the original passes them through.
"""

from __future__ import annotations

import sys

from db_tool import __version__
from db_tool.errors import Error, ExitCode, MissingError, UsageError

TYPE_CHECKING = False  # typing is not imported at run time (a no-op migrate starts fast)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    from db_tool.settings import MigratorSettings

PROG = "migrator"
COMMANDS = ("init", "migrate", "create", "list", "status", "fetch")
DIRECTIONS = ("up", "down", "to")

HELP = f"""\
usage: migrator [global options] <init|migrate|create|list|status|fetch> [options]

Global options:
  -u, --db-url URL          database URL (default: $DB_URL, else $PGURL); PostgreSQL,
                            or SQLite via sqlite://PATH or a path ending in .db, .sqlite, .sqlite3
  -d, --migration-dir DIR   migrations (default: $MIGRATION_DIR, else ./migration)
      --inherits TABLE      deprecated, accepted and ignored
  -V, --version             print the version
  -h, --help, help          this help (`migrator COMMAND --help`: that command's)

Commands:
  init [--dry-run] [--set VAR=VAL]
        apply the hectic bundle; --dry-run prints its SQL and needs no database
  migrate up [N|all|latest|head]     apply the next N (default: 1) or all pending migrations
  migrate down [N]                   roll back the N (default: 1) latest migrations
  migrate to <name>|latest|head|last go to exactly that migration (up or down)
        -f, --force         proceed despite a history mismatch
        --strict            refuse when an applied migration was modified (MIGRATOR_STRICT=1)
        -v, --set VAR=VAL   psql variable for the migration files (repeatable)
        runs init first; all steps run in one psql session under an advisory lock,
        each migration with its history row in one transaction
  create [-n, --name NAME]
        new <dir>/<YYYYMMDDHHMMSS local time>-<name>.sql with -- migrate:up / -- migrate:down
  list [-r, --raw]
        migration names in order; without --raw, missing up/down files are shown
  status [--json] [--exit-code] [--strict]      (alias: fetch)
        applied / pending / missing (applied, not on disk) / modified (hash differs);
        --exit-code exits 1 when anything is pending, --strict exits 2 when modified

Migration layouts under the migration dir (names ^[0-9]{{14}}-):
  <name>/up.sql + down.sql, <name>/up/entrypoint.sql + down/entrypoint.sql (\\ir siblings),
  <name>.sql with -- migrate:up / -- migrate:down sections (without -- migrate:up: skipped).

Environment: DB_URL (else PGURL), MIGRATION_DIR, MIGRATOR_STRICT, MIGRATOR_LOCK_TIMEOUT (seconds
to wait for another migrator, default 60).
Exit codes: 1 error, 2 ambiguous arguments, history mismatch or --strict refusal, 3 missing
argument, 4 a migration failed, 9 unknown argument, 13 bug, 127 psql/sqlite3 not found.
version {__version__}
"""


SUB_HELPS = {
    "init": """\
usage: migrator [global options] init [--dry-run] [-v|--set VAR=VAL]...

Apply the hectic bundle (schema hectic, its migration history table and helpers) to the
database; safe to run again. --dry-run prints the SQL instead and needs no database.

  --dry-run           print the SQL; connect to nothing
  -v, --set VAR=VAL   psql variable (repeatable)
""",
    "migrate": """\
usage: migrator [global options] migrate up [N|all|latest|head] [options]
       migrator [global options] migrate down [N] [options]
       migrator [global options] migrate to <name>|latest|head|last [options]

Apply the next N (default 1) or all pending migrations, roll back the N (default 1) latest,
or go to exactly one migration. Runs init first; all steps run in one psql session under an
advisory lock, each migration with its history row in one transaction.

  -f, --force         proceed despite a history mismatch
      --strict        refuse when an applied migration was modified (MIGRATOR_STRICT=1)
  -v, --set VAR=VAL   psql variable for the migration files (repeatable)
""",
    "create": """\
usage: migrator [global options] create [-n|--name NAME]

Create <migration dir>/<YYYYMMDDHHMMSS local time>-<NAME>.sql with `-- migrate:up` and
`-- migrate:down` sections and print its path (NAME: a random word when not given).

  -n, --name NAME   the name after the timestamp
""",
    "list": """\
usage: migrator [global options] list [-r|--raw]

The migrations of the migration dir in order; without --raw, a migration missing its up or
down part says so.

  -r, --raw   names only
""",
    "status": """\
usage: migrator [global options] status [--json] [--exit-code] [--strict]
       migrator [global options] fetch ...          (the same)

Every migration with its state: applied, pending, missing (applied, not on disk) or
modified (its hash differs from the applied one), then the counts.

  --json        one JSON object
  --exit-code   exit 1 when anything is pending
  --strict      exit 2 when an applied migration was modified (MIGRATOR_STRICT=1)
""",
}
SUB_HELPS["fetch"] = SUB_HELPS["status"]


class Args:
    """Parsed argv (a plain class: dataclasses cost more to import than a no-op run)."""

    def __init__(self) -> None:
        self.command: str | None = None
        self.positional: list[str] = []  # every word but the command
        self.options: dict[str, Any] = {}
        self.unknown: list[str] = []  # options the command does not take, as typed
        self.help = False
        self.version = False


def parse_args(argv: Sequence[str]) -> Args:
    """The command is the first word naming one, wherever it stands (a second one is
    ambiguous, exit 2), as the original's; the rest, options before or after it, is parsed
    with that command's options (db_tool.cli.spec.MIGRATOR); whether it fits is checked by
    check_args()."""
    from db_tool.cli.parser import scan
    from db_tool.cli.spec import MIGRATOR

    args = Args()
    items = list(argv)
    head = items[:items.index("--")] if "--" in items else items
    args.help = any(a in ("-h", "--help", "help") for a in head)
    args.version = any(a in ("-V", "--version") for a in head)
    takes_value = {n for c in (MIGRATOR, *MIGRATOR.subs.values()) for o in c.opts
                   if o.takes_value for n in o.names}
    at = None
    i = 0
    while i < len(head):
        word = head[i]
        if word.startswith("-") and word != "-":
            i += 2 if word in takes_value else 1
            continue
        if word in COMMANDS:
            if at is not None:
                raise Error(f"ambiguous subcommand, decide {head[at]} or {word}; give one",
                            ExitCode.AMBIGUOUS)
            at = i
        i += 1
    if at is not None:
        args.command = head[at]
        items = items[:at] + items[at + 1:]
    if args.help or args.version:
        return args
    cmd = MIGRATOR.sub(args.command) if args.command else MIGRATOR
    given, args.positional, args.unknown = scan(
        cmd, items, extra_opts=MIGRATOR.opts if args.command else ())
    args.options = {k: v for k, v in given.items() if v not in (None, False, [])}
    return args


def check_args(args: Args) -> None:
    """The original's answer to words and options that do not fit the command."""
    if args.command is None:
        raise Error("no subcommand specified. Use 'migrator help' for usage information.")
    command = args.command
    bad = [typed.partition("=")[0] for typed in args.unknown]
    if command == "migrate":
        directions = [w for w in args.positional if w in DIRECTIONS]
        if len(directions) > 1:
            raise Error(
                f"ambiguous migrate subcommand, decide {directions[0]} or {directions[1]}; "
                "give one of up, down or to", ExitCode.AMBIGUOUS,
            )
        label = f"`migrate {directions[0]}`" if directions else "`migrate`"
        if bad:
            raise Error(f"{label} argument {bad[0]} does not exists; see migrator --help")
        if not directions:
            raise MissingError(
                "no migrate subcommand specified; give migrate up [N|all], down [N] or to <name>"
            )
        rest = [w for w in args.positional if w not in DIRECTIONS]
        if len(rest) > 1:
            raise Error(f"{label} too many arguments; give at most one, got {' '.join(rest)}")
        return
    if bad:
        raise UsageError(f"{command} argument {bad[0]} does not exists; see migrator --help")
    if args.positional:
        raise UsageError(
            f"{command} subcommand {args.positional[0]} does not exists; see migrator --help"
        )


_IDENT_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_IDENT = _IDENT_START | frozenset("0123456789")


def _variables(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        # r"[A-Za-z_][A-Za-z0-9_]*" (no `re`: a no-op migrate does without it)
        if not eq or not name or name[0] not in _IDENT_START or not _IDENT.issuperset(name):
            raise Error(f"--set {pair!r}: expected VAR=VALUE with VAR made of letters, digits, _")
        out[name] = value
    return out


def _say(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")


def _warn(message: str) -> None:
    _say(f"warning: {message}")


def _given_url(args: Args, settings: MigratorSettings) -> str | None:
    """--db-url, DB_URL, then PGURL (what `. postgres-init` exports)."""
    url = args.options.get("db_url") or settings.db_url
    return str(url) if url else None


def _url(args: Args, settings: MigratorSettings) -> str:
    url = _given_url(args, settings)
    if not url:
        raise MissingError(
            "no DB_URL or --db-url specified (tried --db-url, DB_URL and PGURL: all unset); "
            "pass --db-url URL or export DB_URL (`. postgres-init` exports PGURL)"
        )
    return url


def _migration_dir(args: Args, settings: MigratorSettings) -> str:
    return str(args.options.get("migration_dir") or settings.migration_dir)


# --------------------------------------------------------------------------- commands
# Each runs one verb of db_tool.commands.migrate and prints what it returns.


def cmd_init(args: Args, settings: MigratorSettings) -> int:
    from db_tool.commands import migrate

    variables = _variables(args.options.get("set", []))
    if args.options.get("dry_run"):
        sys.stdout.write(migrate.init_sql(_given_url(args, settings)))
        return 0
    migrate.init(_url(args, settings), variables, settings)
    _say("hectic bundle applied")
    return 0


def cmd_migrate(args: Args, settings: MigratorSettings) -> int:
    from db_tool import planning
    from db_tool.commands import migrate

    direction = next(w for w in args.positional if w in DIRECTIONS)
    rest = [w for w in args.positional if w not in DIRECTIONS]
    target = planning.Target.parse(direction, rest[0] if rest else None)
    url = _url(args, settings)
    variables = _variables(args.options.get("set", []))
    try:
        outcome = migrate.migrate(
            url, _migration_dir(args, settings), target, settings, _warn, variables=variables,
            force=bool(args.options.get("force")), strict=bool(args.options.get("strict")),
        )
    except Error as exc:
        from db_tool.history import MigrationFailed

        if isinstance(exc, MigrationFailed):
            _print_lines(migrate.result_lines(exc.completed))
        raise
    if outcome.already is not None:
        print(outcome.already)
        return 0
    _print_lines(migrate.result_lines(outcome.results))
    if outcome.summary:
        _say(outcome.summary)
    return 0


def _print_lines(lines: Sequence[str]) -> None:
    # One write for all of them (500 migrations: not 1000 system calls when unbuffered).
    sys.stdout.write("".join(f"{line}\n" for line in lines))


def cmd_create(args: Args, settings: MigratorSettings) -> int:
    from db_tool.commands import migrate

    path = migrate.create(_migration_dir(args, settings), args.options.get("name"))
    _say(f"created migration: {path}")
    print(path)
    return 0


def cmd_list(args: Args, settings: MigratorSettings) -> int:
    from db_tool.commands import migrate

    available = migrate.discover(_migration_dir(args, settings), _warn)
    _print_lines(migrate.listing(available, raw=bool(args.options.get("raw"))))
    return 0


def cmd_status(args: Args, settings: MigratorSettings) -> int:
    from db_tool.commands import migrate

    url = _url(args, settings)
    report = migrate.status_of_dir(url, _migration_dir(args, settings), settings, _warn)
    if args.options.get("json"):
        print(json_text({
            "migrations": [
                {"name": r.name, "state": r.state, "applied_at": r.applied_at,
                 "hash": r.disk_hash, "applied_hash": r.db_hash}
                for r in report.rows
            ],
            "summary": report.counts,
        }))
    else:
        _print_lines([*(f"{r.state:<8}  {r.applied_at or '-':<20}  {r.name}" for r in report.rows),
                      ", ".join(f"{n} {s}" for s, n in report.counts.items())])
    migrate.refuse_modified(report, settings, strict=bool(args.options.get("strict")))
    if args.options.get("exit_code") and report.counts["pending"]:
        return 1
    return 0


def json_text(value: object, indent: str = "") -> str:
    """json.dumps(value, indent=2) for the dicts, lists, strings, numbers, booleans and None
    of `status --json`, without importing json (its decoder imports re: a tenth of a status
    run). The strings go through the same C encoder json uses."""
    try:
        from _json import encode_basestring_ascii as quote
    except ImportError:  # an interpreter without the accelerator
        import json

        return json.dumps(value, indent=2)
    inner = indent + "  "
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{quote(str(k))}: {json_text(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return ("[\n" + ",\n".join(f"{inner}{json_text(v, inner)}" for v in value)
                + f"\n{indent}]")
    if isinstance(value, str):
        return str(quote(value))
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    raise TypeError(f"not JSON for status: {value!r}")


# The original migrator's version: printed by -V and written to SQLite's hectic_version.
MIGRATOR_VERSION = "0.0.1"


def _dispatch(argv: Sequence[str], environment: Callable[[], Mapping[str, str]]) -> int:
    from db_tool.cli.parser import with_examples
    from db_tool.cli.spec import MIGRATOR

    if not argv:  # as the original: the help on stdout, exit 0
        sys.stdout.write(with_examples(HELP, MIGRATOR))
        return 0
    args = parse_args(argv)
    if args.version:
        print(f"migrator version {MIGRATOR_VERSION} (db-tool {__version__})")
        return 0
    if args.help:
        if args.command is None:
            sys.stdout.write(with_examples(HELP, MIGRATOR))
        else:
            sys.stdout.write(with_examples(SUB_HELPS[args.command],
                                           MIGRATOR.sub(args.command)))
        return 0
    check_args(args)
    if args.options.get("inherits"):
        _say("warning: --inherits is deprecated and ignored")
    command = args.command
    from db_tool.settings import MigratorSettings  # not before: --help needs no settings

    settings = MigratorSettings.from_env(environment())
    if command == "init":
        return cmd_init(args, settings)
    if command == "migrate":
        return cmd_migrate(args, settings)
    if command == "create":
        return cmd_create(args, settings)
    if command == "list":
        return cmd_list(args, settings)
    return cmd_status(args, settings)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    from db_tool.cli.common import env_dict, guarded

    arguments = list(sys.argv[1:] if argv is None else argv)
    # the environment (settings, ~10 ms of imports) only once help and --version are answered
    return guarded(PROG, lambda: _dispatch(arguments, lambda: env_dict(env)))


def run(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Entry for `database migrator ...` (cli/database.py passes -d/-u first)."""
    return main(argv, env)


def entry() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
