"""`migrator`: apply, roll back, create and inspect migrations.

argv parsing and printing only; discovery/planning live in db_tool.migrations (pure) and the
database side in db_tool.history. Options of a subcommand may stand anywhere, also before the
subcommand (`migrator -u URL --force migrate up`), as the original passes them through.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from db_tool import __version__
from db_tool.errors import Error, ExitCode, MissingError, UsageError

PROG = "migrator"
DEFAULT_LOCK_TIMEOUT = 60.0  # seconds to wait for another migrator (MIGRATOR_LOCK_TIMEOUT)
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
    "--strict": ("strict", False),
}
_GLOBAL = {"db_url", "migration_dir", "inherits"}
_ALLOWED: dict[str, set[str]] = {
    "init": {"dry_run", "set"},
    "migrate": {"force", "set", "strict"},
    "create": {"name"},
    "list": {"raw"},
    "status": {"json", "exit_code", "strict"},
    "fetch": {"json", "exit_code", "strict"},
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


class Args:
    """Parsed argv (a plain class: dataclasses cost more to import than a no-op run)."""

    def __init__(self) -> None:
        self.command: str | None = None
        self.positional: list[str] = []  # every word but the command
        self.options: dict[str, Any] = {}
        # Every option as written, in order: (dest or None when unknown, the name as typed).
        self.seen: list[tuple[str | None, str]] = []
        self.help = False
        self.version = False


def parse_args(argv: Sequence[str]) -> Args:
    """Split argv into command, the other words and options (wherever they stand), as the
    original does: the command is the first word naming one, a second is ambiguous (exit 2);
    whether the rest fits that command is checked by check_args()."""
    args = Args()
    items = list(argv)
    i = 0
    while i < len(items):
        arg = items[i]
        i += 1
        if arg == "--":
            args.positional += items[i:]
            break
        if arg in ("-h", "--help", "help"):
            args.help = True
            continue
        if arg in ("-V", "--version"):
            args.version = True
            continue
        if not arg.startswith("-") or arg == "-":
            if arg in COMMANDS:
                if args.command is not None:
                    raise Error(
                        f"ambiguous subcommand, decide {args.command} or {arg}; give one",
                        ExitCode.AMBIGUOUS,
                    )
                args.command = arg
            else:
                args.positional.append(arg)
            continue
        name, eq, inline = arg.partition("=")
        attached = None
        if name not in _OPTIONS and not arg.startswith("--") and _OPTIONS.get(arg[:2], ("", 0))[1]:
            # -uURL
            name, attached, eq, inline = arg[:2], arg[2:], "", ""
        spec = _OPTIONS.get(name)
        if spec is None:
            args.seen.append((None, name))
            continue
        dest, takes_value = spec
        args.seen.append((dest, name))
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
    return args


def check_args(args: Args) -> None:
    """The original's answer to words and options that do not fit the command."""
    if args.command is None:
        raise Error("no subcommand specified. Use 'migrator help' for usage information.")
    command = args.command
    allowed = _GLOBAL | _ALLOWED[command]
    bad = [typed for dest, typed in args.seen if dest not in allowed]
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


# --------------------------------------------------------------------------- commands


def cmd_init(args: Args, env: Mapping[str, str]) -> int:
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


def _strict(args: Args, env: Mapping[str, str]) -> bool:
    return bool(args.options.get("strict")) or env.get("MIGRATOR_STRICT", "") not in ("", "0")


def cmd_migrate(args: Args, env: Mapping[str, str]) -> int:
    from db_tool import history_wire, migrations

    direction = next(w for w in args.positional if w in DIRECTIONS)
    rest = [w for w in args.positional if w not in DIRECTIONS]
    target = migrations.Target.parse(direction, rest[0] if rest else None)
    url = _url(args, env)
    variables = _variables(args.options.get("set", []))
    force = bool(args.options.get("force"))
    lock_timeout = _lock_timeout(env)  # checked before any database work
    warnings: list[str] = []
    available = migrations.discover(_migration_dir(args, env), warnings)
    for warning in warnings:
        _say(f"warning: {warning}")
    # Nothing to do is answered from one consistent read over the wire client when our bundle
    # at this version is in place (no psql, no bundle, no lock: the answer is that of a
    # migrator that ran just before any concurrent one). Anything else: the locked session.
    quick = history_wire.quick_state(url, env)
    if quick is not None and quick.bundle_current and quick.applied is not None:
        early = migrations.plan(
            available, quick.applied, target, force=force, strict=_strict(args, env)
        )
        if early.already is not None:
            for notice in early.notices:
                _say(f"warning: {notice}")
            print(early.already)
            return 0
    from db_tool import history

    backend = history.for_url(url, env)
    if isinstance(backend, history.SqliteHistory):
        backend.cli()  # fail with 127 before touching anything
    # The session holds the migration lock from before the history is read until the last
    # step, so the plan below cannot be invalidated by a concurrent migrator.
    with backend.migrate_session(variables, lock_timeout) as session:
        plan = migrations.plan(
            available, session.applied, target, force=force, strict=_strict(args, env)
        )
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
    last = plan.steps[-1]
    if last.direction == "up":
        _say(f"successfully migrated to {last.migration.name}")
    else:
        names = [m.name for m in available]
        position = names.index(last.migration.name)
        _say("successfully migrated down to "
             + (names[position - 1] if position > 0 else "clean state"))
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
    """Create <dir>/<local YYYYMMDDHHMMSS>-<name>.sql (local time, as the original's `date`);
    the timestamp is bumped past any taken one (under flock on the directory), so two creates
    in one second never collide."""
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
            prefix = time.strftime("%Y%m%d%H%M%S", time.localtime(stamp))
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
    path = create_migration(_migration_dir(args, env), args.options.get("name"))
    _say(f"created migration: {path}")
    print(path)
    return 0


def cmd_list(args: Args, env: Mapping[str, str]) -> int:
    """One line per migration; without --raw, `<name>: missing up.sql down.sql` as the original
    prints it for both of its layouts (it looks for up.sql or up/entrypoint.sql)."""
    from db_tool import migrations

    raw = bool(args.options.get("raw"))
    warnings: list[str] = []
    found = migrations.discover(_migration_dir(args, env), warnings)
    for warning in warnings:
        _say(f"warning: {warning}")
    for m in found:
        missing = [f"{d}.sql" for d, f in (("up", m.up), ("down", m.down)) if f is None]
        if m.layout == migrations.FILE:
            missing = [f"-- migrate:{d}" for d, f in (("up", m.up), ("down", m.down)) if f is None]
        if raw or not missing:
            print(m.name)
        else:
            print(f"{m.name}: missing {' '.join(missing)}")
    return 0


def cmd_status(args: Args, env: Mapping[str, str]) -> int:
    from db_tool import history_wire, migrations

    url = _url(args, env)
    warnings: list[str] = []
    available = migrations.discover(_migration_dir(args, env), warnings)
    for warning in warnings:
        _say(f"warning: {warning}")
    quick = history_wire.quick_state(url, env)
    if quick is not None:
        applied = quick.applied or []
    else:
        from db_tool import history

        applied = history.for_url(url, env).read_applied()
    rows = migrations.status(available, applied)
    counts = {s: sum(1 for r in rows if r.state == s)
              for s in ("applied", "pending", "missing", "modified")}
    if args.options.get("json"):
        import json

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
    if counts["modified"] and _strict(args, env):
        raise Error(
            f"{counts['modified']} applied migration(s) modified since they were applied; "
            "refusing because of --strict / MIGRATOR_STRICT=1", ExitCode.AMBIGUOUS,
        )
    if args.options.get("exit_code") and counts["pending"]:
        return 1
    return 0


# The original migrator's version: printed by -V and written to SQLite's hectic_version.
MIGRATOR_VERSION = "0.0.1"


def _dispatch(argv: Sequence[str], env: Mapping[str, str]) -> int:
    if not argv:
        sys.stdout.write(HELP)
        return 0
    args = parse_args(argv)
    if args.version:
        print(f"migrator version {MIGRATOR_VERSION} (db-tool {__version__})")
        return 0
    if args.help:
        sys.stdout.write(HELP)
        return 0
    check_args(args)
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
