"""db-ops: the hectic bundle and secrets for a deployment target (no dev workflow).

The grammar is the original db-ops.sh's: global options, then `secrets`, then `load` and its
options; each level has its own help, and `db-ops` / `db-ops secrets` alone print help and
exit 0. Messages start with the original's words (scripts may match them); `--opt=value` is
accepted as well.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence

from db_tool import output
from db_tool.cli.common import env_dict, guarded
from db_tool.errors import MissingError, UsageError

PROG = "db-ops"

HELP = """\
usage: db-ops [-u/--url URL] secrets load [options]

PostgreSQL operations for a deployment target: apply the hectic SQL bundle and load secrets.

global options:
  -h, --help          show this help
  --version           db-tool's version
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


def _run(args: list[str], environment: Callable[[], dict[str, str]]) -> int:
    from db_tool.cli.parser import parse, wants_help, with_examples
    from db_tool.cli.spec import DB_OPS

    if not args:  # as the original: the help on stdout, exit 0
        sys.stdout.write(with_examples(HELP, DB_OPS))
        return 0
    at = 0  # the subcommand: the first word that is no option and no --url's value
    while at < len(args) and args[at].startswith("-"):
        at += 2 if args[at] in ("-u", "--url") else 1
    before, rest = args[:at], args[at:]
    if wants_help(before):
        sys.stdout.write(with_examples(HELP, DB_OPS))
        return 0
    if "--version" in before:
        from db_tool.cli.database import print_version

        return print_version(PROG)
    glob, _ = parse(DB_OPS, before)
    env = environment()
    if glob["url"] is not None:
        env["PGURL"] = env["DB_URL"] = glob["url"]
    if not rest:
        sys.stdout.write(with_examples(HELP, DB_OPS))
        return 0
    if rest[0] != "secrets":
        raise UsageError(f"subcommand {rest[0]} does not exist; see {PROG} --help")
    load = DB_OPS.sub("secrets", "load")
    if len(rest) == 1 or rest[1] in ("-h", "--help"):  # as the original: exit 0
        sys.stdout.write(with_examples(HELP_SECRETS_LOAD, load))
        return 0
    if rest[1] != "load":
        raise UsageError(f"secrets subcommand {rest[1]} does not exist; the one there is: load")
    if wants_help(rest[2:]):
        sys.stdout.write(with_examples(HELP_SECRETS_LOAD, load))
        return 0
    opts, _ = parse(load, rest[2:])
    if opts["url"] is not None:
        env["PGURL"] = env["DB_URL"] = opts["url"]
    dotenv_file = opts["dotenv_file"] or env.get("HECTIC_DOTENV_FILE") or None
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
    # the environment (settings, ~10 ms of imports) only once help and --version are answered
    return guarded(PROG, lambda: _run(args, lambda: env_dict(env)))


def entry() -> None:
    raise SystemExit(main())
