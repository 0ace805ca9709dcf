"""db-ops: the hectic bundle and secrets for a deployment target (no dev workflow).

The grammar is the original db-ops.sh's: global options, then `secrets`, then `load` and its
options; each level has its own help, and `db-ops` / `db-ops secrets` alone print help and
exit 0. Messages start with the original's words (scripts may match them); `--opt=value` is
accepted as well.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from db_tool import output
from db_tool.cli.common import env_dict, guarded
from db_tool.errors import MissingError, UsageError

PROG = "db-ops"

HELP = """\
usage: db-ops [-u/--url URL] secrets load [options]

PostgreSQL operations for a deployment target: apply the hectic SQL bundle and load secrets.

global options:
  -h, --help          show this help
  -u, --url URL       PostgreSQL connection string (default: $PGURL, else $DB_URL)

subcommands:
  secrets load        apply the hectic bundle, then load the dotenv's pairs into hectic.secret
                      (see db-ops secrets load --help)

environment:
  PGURL, DB_URL          connection string when --url is not given (PGURL first)
  HECTIC_DOTENV_CONTENT  dotenv content itself
  HECTIC_DOTENV_FILE     dotenv file when --dotenv-file is not given
  LOCAL_DIR, ENVIRONMENT fallback dotenv file $LOCAL_DIR/.env.$ENVIRONMENT
"""

HELP_SECRETS_LOAD = """\
usage: db-ops secrets load [options]

Apply the hectic SQL bundle, then replace the rows of hectic.secret with the pairs of a
dotenv file (KEY=value lines; `export KEY=value`, CRLF line ends and a UTF-8 BOM are fine; a
later line wins over an earlier one with the same key).

options:
  -h, --help               show this help
  -u, --url URL            PostgreSQL connection string (default: $PGURL, else $DB_URL)
  -f, --dotenv-file PATH   dotenv file (default: $HECTIC_DOTENV_FILE)

where the dotenv comes from, first found wins:
  1. HECTIC_DOTENV_CONTENT
  2. --dotenv-file / HECTIC_DOTENV_FILE (must be readable when given)
  3. $LOCAL_DIR/.env.$ENVIRONMENT (when readable)
An empty dotenv applies the bundle and leaves hectic.secret as it is.

exit codes: 0 ok; 1 the bundle or the load failed; 3 no URL, no dotenv source, an unreadable
dotenv file or a missing option value; 9 unknown argument or subcommand; 127 psql missing
"""

_URL = ("-u", "--url")
_FILE = ("-f", "--dotenv-file")
_HELP = ("-h", "--help")


def secrets_load(*, url: str, env: Mapping[str, str],
                 dotenv_file: str | None) -> tuple[int | None, str]:
    """Apply the bundle and load the secrets; returns (how many are stored, or None when the
    dotenv is empty and nothing was loaded; where the dotenv came from)."""
    from db_tool import bundle

    found = bundle.resolve_dotenv(env, dotenv_file, strict=True)
    if found is None:
        raise MissingError(
            "dotenv source is required (HECTIC_DOTENV_CONTENT, readable dotenv file, or "
            "$LOCAL_DIR/.env.$ENVIRONMENT); pass --dotenv-file or set one of them"
        )
    content, where = found
    output.info("apply hectic bundle and load secrets")
    bundle.apply(url)
    if bundle.dotenv_is_empty(content):
        return None, where
    return bundle.load_secrets(url, content), where


def _option(args: list[str], i: int, names: tuple[str, ...]) -> tuple[str, int] | None:
    """(value, next index) when args[i] is one of `names` (as `-u X` or `--url=X`)."""
    arg = args[i]
    if arg in names:
        if i + 1 >= len(args):
            raise MissingError(f"missing value for {arg}")
        return args[i + 1], i + 2
    name, eq, value = arg.partition("=")
    if eq and name in names and name.startswith("--"):
        return value, i + 1
    return None


def _run(args: list[str], env: dict[str, str]) -> int:
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] in _HELP:
            sys.stdout.write(HELP)
            return 0
        found = _option(args, i, _URL)
        if found is None:
            raise UsageError(f"argument {args[i]} does not exist; see {PROG} --help")
        env["PGURL"] = env["DB_URL"] = found[0]
        i = found[1]
    if i == len(args):
        sys.stdout.write(HELP)
        return 0
    if args[i] != "secrets":
        raise UsageError(f"subcommand {args[i]} does not exist; see {PROG} --help")
    i += 1
    if i == len(args) or args[i] in _HELP:
        sys.stdout.write(HELP_SECRETS_LOAD)
        return 0
    if args[i] != "load":
        raise UsageError(f"secrets subcommand {args[i]} does not exist; the one there is: load")
    i += 1
    dotenv_file = env.get("HECTIC_DOTENV_FILE") or None
    while i < len(args):
        if args[i] in _HELP:
            sys.stdout.write(HELP_SECRETS_LOAD)
            return 0
        url_opt = _option(args, i, _URL)
        file_opt = None if url_opt else _option(args, i, _FILE)
        if url_opt is not None:
            env["PGURL"] = env["DB_URL"] = url_opt[0]
            i = url_opt[1]
        elif file_opt is not None:
            dotenv_file, i = file_opt
        else:
            kind = "argument" if args[i].startswith("-") else "subcommand"
            raise UsageError(f"secrets load {kind} {args[i]} does not exist; "
                             f"see {PROG} secrets load --help")
    url = env.get("PGURL") or env.get("DB_URL")
    if not url:
        raise MissingError("PGURL or DB_URL is required; export one or pass --url")
    count, where = secrets_load(url=url, env=env, dotenv_file=dotenv_file)
    from db_tool.bundle import VERSION

    if count is None:
        loaded = f"the dotenv from {where} is empty, hectic.secret left as it was"
    else:
        loaded = f"{count} secret{'s' if count != 1 else ''} loaded from {where}"
    sys.stdout.write(f"{PROG}: hectic bundle {VERSION} applied; {loaded}\n")
    return 0


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return guarded(PROG, lambda: _run(args, env_dict(env)))


def entry() -> None:
    raise SystemExit(main())
