"""`migrator`: apply, roll back, create and inspect migrations.

argv parsing and printing only; discovery/planning live in db_tool.migrations (pure) and the
database side in db_tool.history. Options of a subcommand may stand anywhere, also before the
subcommand (`migrator -u URL --force migrate up`), as the original passes them through.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from db_tool import __version__
from db_tool.errors import Error, ExitCode, MissingError, UsageError

PROG = "migrator"
COMMANDS = ("init", "migrate", "create", "list", "status", "fetch")
DIRECTIONS = ("up", "down", "to")

# option → (dest, takes a value)
_OPTIONS: dict[str, tuple[str, bool]] = {
    "--db-url": ("db_url", True), "-u": ("db_url", True),
    "--migration-dir": ("migration_dir", True), "-d": ("migration_dir", True),
    "--inherits": ("inherits", True),
    "--dry-run": ("dry_run", False),
    "--set": ("set", True), "-v": ("set", True),
    "--force": ("force", False), "-f": ("force", False),
    "--name": ("name", True), "-n": ("name", True),
    "--raw": ("raw", False), "-r": ("raw", False),
    "--json": ("json", False),
    "--exit-code": ("exit_code", False),
}
_GLOBAL = {"db_url", "migration_dir", "inherits"}
_ALLOWED: dict[str, set[str]] = {
    "init": {"dry_run", "set"},
    "migrate": {"force", "set"},
    "create": {"name"},
    "list": {"raw"},
    "status": {"json", "exit_code"},
    "fetch": {"json", "exit_code"},
}

HELP = f"""\
usage: migrator [global options] <init|migrate|create|list|status|fetch> [options]

Global options:
  -u, --db-url URL          database URL (default: $DB_URL, else $PGURL); PostgreSQL,
                            or SQLite via sqlite://PATH or a path ending in .db, .sqlite, .sqlite3
  -d, --migration-dir DIR   migrations (default: $MIGRATION_DIR, else ./migration)
      --inherits TABLE      deprecated, accepted and ignored
  -V, --version             print the version
  -h, --help, help          this help

Commands:
  init [--dry-run] [--set VAR=VAL]
        apply the hectic bundle; --dry-run prints its SQL and needs no database
  migrate up [N|all|latest|head]     apply N (default: all) pending migrations
  migrate down [N]                   roll back the N (default: 1) latest migrations
  migrate to <name>|latest|head|last go to exactly that migration (up or down)
        -f, --force         proceed despite a history mismatch or a modified migration
        -v, --set VAR=VAL   psql variable for the migration files (repeatable)
        runs init first; all steps run in one psql session under an advisory lock,
        each migration with its history row in one transaction
  create [-n, --name NAME]
        new <dir>/<YYYYMMDDHHMMSS>-<name>.sql with -- migrate:up / -- migrate:down sections
  list [-r, --raw]
        migration names in order; without --raw, missing up/down files are shown
  status [--json] [--exit-code]      (alias: fetch)
        applied / pending / missing (applied, not on disk) / modified (hash differs);
        --exit-code exits 1 when anything is pending

Migration layouts under the migration dir (names ^[0-9]{{14}}-.+):
  <name>/up.sql + down.sql, <name>/up/entrypoint.sql + down/entrypoint.sql (\\ir siblings),
  <name>.sql with -- migrate:up / -- migrate:down sections.

Environment: DB_URL (else PGURL), MIGRATION_DIR, MIGRATOR_LOCK_TIMEOUT (seconds to wait for another
migrator, default 60).
Exit codes: 1 error, 2 ambiguous arguments or history mismatch, 3 missing argument,
4 a migration failed, 9 unknown argument, 13 bug, 127 psql/sqlite3 not found.
version {__version__}
"""


@dataclass
class Args:
    command: str | None = None
    positional: list[str] = field(default_factory=list)  # after the command
    options: dict[str, Any] = field(default_factory=dict)
    help: bool = False
    version: bool = False


def parse_args(argv: Sequence[str]) -> Args:
    """Split argv into command, its positionals and options (wherever they stand)."""
    args = Args()
    unknown: list[str] = []
    typed: dict[str, str] = {}  # dest → the option name as the user wrote it
    words: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        arg = items[i]
        i += 1
        if arg == "--":
            words += items[i:]
            break
        if arg in ("-h", "--help"):
            args.help = True
            continue
        if arg in ("-V", "--version"):
            args.version = True
            continue
        if not arg.startswith("-") or arg == "-":
            words.append(arg)
            continue
        name, eq, inline = arg.partition("=")
        attached = None
        if name not in _OPTIONS and not arg.startswith("--") and _OPTIONS.get(arg[:2], ("", 0))[1]:
            # -uURL
            name, attached, eq, inline = arg[:2], arg[2:], "", ""
        spec = _OPTIONS.get(name)
        if spec is None:
            unknown.append(name)
            continue
        dest, takes_value = spec
        typed.setdefault(dest, name)
        if takes_value:
            if attached is not None:
                value = attached
            elif eq:
                value = inline
            elif i < len(items):
                value = items[i]
                i += 1
            else:
                raise MissingError(f"option {name} needs a value")
            if dest == "set":
                args.options.setdefault("set", []).append(value)
            else:
                args.options[dest] = value
        else:
            if eq or attached:
                raise UsageError(f"option {name} takes no value")
            args.options[dest] = True
    if words and words[0] == "help":
        args.help = True
        words = words[1:]
    if words:
        if words[0] not in COMMANDS:
            raise UsageError(
                f"unknown subcommand {words[0]!r}; expected one of {', '.join(COMMANDS)}"
            )
        args.command = words[0]
        args.positional = words[1:]
        others = [w for w in args.positional if w in COMMANDS]
        if others:
            raise Error(
                f"ambiguous subcommand: {args.command} and {others[0]}; give one",
                ExitCode.AMBIGUOUS,
            )
        if args.command == "migrate":
            directions = [w for w in args.positional if w in DIRECTIONS]
            if len(directions) > 1:
                raise Error(
                    f"ambiguous migrate subcommand: {' and '.join(directions)}; give one of "
                    "up, down or to", ExitCode.AMBIGUOUS,
                )
    if args.help or args.version:
        return args
    where = f"{args.command} argument" if args.command else "argument"
    if unknown:
        raise UsageError(f"{where} {unknown[0]} does not exist; see migrator --help")
    if args.command:
        allowed = _GLOBAL | _ALLOWED[args.command]
        for dest, opt_name in typed.items():
            if dest not in allowed:
                raise UsageError(f"{where} {opt_name} does not exist; see migrator --help")
    return args


def _variables(pairs: Sequence[str]) -> dict[str, str]:
    import re

    out: dict[str, str] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise Error(f"--set {pair!r}: expected VAR=VALUE with VAR made of letters, digits, _")
        out[name] = value
    return out


def _say(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")


def _lock_timeout(env: Mapping[str, str]) -> float:
    raw = env.get("MIGRATOR_LOCK_TIMEOUT")
    if not raw:
        from db_tool.history import DEFAULT_LOCK_TIMEOUT

        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1
    if value <= 0:
        raise Error(f"MIGRATOR_LOCK_TIMEOUT={raw!r}: expected a positive number of seconds")
    return value


def _given_url(args: Args, env: Mapping[str, str]) -> str | None:
    """--db-url, DB_URL, then PGURL (what `. postgres-init` exports)."""
    url = args.options.get("db_url") or env.get("DB_URL") or env.get("PGURL")
    return str(url) if url else None


def _url(args: Args, env: Mapping[str, str]) -> str:
    url = _given_url(args, env)
    if not url:
        raise MissingError(
            "no DB_URL or --db-url specified (tried --db-url, DB_URL and PGURL: all unset); "
            "pass --db-url URL or export DB_URL (`. postgres-init` exports PGURL)"
        )
    return url


def _migration_dir(args: Args, env: Mapping[str, str]) -> str:
    return str(args.options.get("migration_dir") or env.get("MIGRATION_DIR") or "migration")


def _no_positional(args: Args) -> None:
    if args.positional:
        raise UsageError(f"{args.command} argument {args.positional[0]} does not exist")


# --------------------------------------------------------------------------- commands


def cmd_init(args: Args, env: Mapping[str, str]) -> int:
    _no_positional(args)
    variables = _variables(args.options.get("set", []))
    if args.options.get("dry_run"):
        url = _given_url(args, env)
        from db_tool import history

        if url and history.sqlite_path(str(url)) is not None:
            sys.stdout.write(history.sqlite_init_sql(__version__))
        else:
            from db_tool import bundle

            sys.stdout.write(bundle.render())
        return 0
    from db_tool import history

    history.for_url(_url(args, env), env).init(variables)
    _say("hectic bundle applied")
    return 0


def cmd_migrate(args: Args, env: Mapping[str, str]) -> int:
    from db_tool import history, migrations

    if not args.positional:
        raise MissingError("migrate needs a direction: migrate up [N], down [N] or to <name>")
    direction, rest = args.positional[0], args.positional[1:]
    if direction not in DIRECTIONS:
        raise UsageError(f"unknown migrate subcommand {direction!r}; use up, down or to")
    if len(rest) > 1:
        raise UsageError(f"migrate {direction}: unexpected argument {rest[1]!r}")
    target = migrations.Target.parse(direction, rest[0] if rest else None)
    url = _url(args, env)
    variables = _variables(args.options.get("set", []))
    force = bool(args.options.get("force"))
    lock_timeout = _lock_timeout(env)
    backend = history.for_url(url, env)
    if isinstance(backend, history.SqliteHistory):
        backend.cli()  # fail with 127 before touching anything
    available = migrations.discover(_migration_dir(args, env))
    # The session holds the migration lock from before the history is read until the last
    # step, so the plan below cannot be invalidated by a concurrent migrator.
    with backend.migrate_session(variables, lock_timeout) as session:
        plan = migrations.plan(available, session.applied, target, force=force)
        for notice in plan.notices:
            _say(f"warning: {notice}")
        if plan.already is not None:
            print(plan.already)
            return 0
        try:
            results = session.apply(plan.steps)
        except history.MigrationFailed as exc:
            _print_results(exc.completed)
            raise
    _print_results(results)
    return 0


def _print_results(results: Sequence[Any]) -> None:
    for r in results:
        name = r.step.migration.name
        if r.step.direction == "up":
            print(f"applied {name}")
        else:
            print(f"rolled back {name}")


_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def random_word() -> str:
    import secrets

    return "".join(
        secrets.choice(_CONSONANTS if i % 2 == 0 else _VOWELS) for i in range(6)
    )


def create_migration(directory: str, name: str | None, now: float | None = None) -> str:
    """Create <dir>/<UTC YYYYMMDDHHMMSS>-<name>.sql; the timestamp is bumped past any taken one
    (under flock on the directory), so two creates in one second never collide."""
    import fcntl
    import os
    import time
    from pathlib import Path

    from db_tool.migrations import NAME_RE

    name = (name if name is not None else "").strip() or random_word()
    if "/" in name or "\0" in name or name in (".", ".."):
        raise Error(f"migration name {name!r} may not contain '/' or NUL")
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    stamp = int(time.time() if now is None else now)
    content = "-- migrate:up\n\n\n-- migrate:down\n\n"
    dir_fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        taken = {e[:14] for e in os.listdir(root) if NAME_RE.match(e)}
        while True:
            prefix = time.strftime("%Y%m%d%H%M%S", time.gmtime(stamp))
            if prefix not in taken:
                path = root / f"{prefix}-{name}.sql"
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    taken.add(prefix)
                    continue
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(content)
                return str(path)
            stamp += 1
    finally:
        os.close(dir_fd)


def cmd_create(args: Args, env: Mapping[str, str]) -> int:
    _no_positional(args)
    print(create_migration(_migration_dir(args, env), args.options.get("name")))
    return 0


def cmd_list(args: Args, env: Mapping[str, str]) -> int:
    from db_tool import migrations

    _no_positional(args)
    raw = bool(args.options.get("raw"))
    for m in migrations.discover(_migration_dir(args, env)):
        if raw or not m.missing:
            print(m.name)
        else:
            print(f"{m.name}: missing {' '.join(m.missing)}")
    return 0


def cmd_status(args: Args, env: Mapping[str, str]) -> int:
    import json

    from db_tool import history, migrations

    _no_positional(args)
    url = _url(args, env)
    available = migrations.discover(_migration_dir(args, env))
    rows = migrations.status(available, history.for_url(url, env).read_applied())
    counts = {s: sum(1 for r in rows if r.state == s)
              for s in ("applied", "pending", "missing", "modified")}
    if args.options.get("json"):
        print(json.dumps({
            "migrations": [
                {"name": r.name, "state": r.state, "applied_at": r.applied_at,
                 "hash": r.disk_hash, "applied_hash": r.db_hash}
                for r in rows
            ],
            "summary": counts,
        }, indent=2))
    else:
        for r in rows:
            print(f"{r.state:<8}  {r.applied_at or '-':<20}  {r.name}")
        print(", ".join(f"{n} {s}" for s, n in counts.items()))
    if args.options.get("exit_code") and counts["pending"]:
        return 1
    return 0


def _dispatch(argv: Sequence[str], env: Mapping[str, str]) -> int:
    args = parse_args(argv)
    if args.version:
        print(f"migrator version {__version__}")
        return 0
    if args.help or args.command is None:
        sys.stdout.write(HELP)
        return 0
    if "inherits" in args.options:
        _say("warning: --inherits is deprecated and ignored")
    command = args.command
    if command == "init":
        return cmd_init(args, env)
    if command == "migrate":
        return cmd_migrate(args, env)
    if command == "create":
        return cmd_create(args, env)
    if command == "list":
        return cmd_list(args, env)
    return cmd_status(args, env)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    from db_tool.cli.common import env_dict, guarded

    arguments = list(sys.argv[1:] if argv is None else argv)
    environ = env_dict(env)
    return guarded(PROG, lambda: _dispatch(arguments, environ))


def run(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Entry for `database migrator ...` (cli/database.py passes -d/-u first)."""
    return main(argv, env)


def entry() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
