"""db-ops: the hectic bundle and secrets for a deployment target (no dev workflow)."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from db_tool.cli import args as a
from db_tool.cli.common import env_dict, guarded
from db_tool.errors import MissingError, UsageError

PROG = "db-ops"

HELP = """\
usage: db-ops [-u/--url URL] secrets load [-f/--dotenv-file PATH]

Apply the hectic SQL bundle to a target database and load its secrets.

commands:
  secrets load    apply the bundle, then replace hectic.secret with the dotenv's pairs

options:
  -u, --url URL            database URL (default: $PGURL, else $DB_URL)
  -f, --dotenv-file PATH   dotenv file to load (default: $HECTIC_DOTENV_FILE)
  -h, --help               show this help

environment:
  PGURL, DB_URL            database URL when --url is not given (PGURL first)
  HECTIC_DOTENV_CONTENT    dotenv content itself; wins over any file
  HECTIC_DOTENV_FILE       dotenv file when --dotenv-file is not given
  LOCAL_DIR, ENVIRONMENT   fallback dotenv file $LOCAL_DIR/.env.$ENVIRONMENT

exit codes: 0 ok, 1 failure, 3 missing URL or dotenv, 9 unknown argument, 127 psql missing
"""

OPTIONS = [
    a.Opt(("-u", "--url"), "url", value=True),
    a.Opt(("-f", "--dotenv-file"), "dotenv_file", value=True),
    a.Opt(("-h", "--help"), "help"),
]


def secrets_load(*, url: str, env: Mapping[str, str], dotenv_file: str | None) -> tuple[int, str]:
    """Apply the bundle and load the secrets; returns (count, where the dotenv came from)."""
    from db_tool import bundle

    found = bundle.resolve_dotenv(env, dotenv_file, strict=True)
    if found is None:
        raise MissingError(
            "dotenv source is required: set HECTIC_DOTENV_CONTENT or HECTIC_DOTENV_FILE, "
            "pass --dotenv-file, or provide $LOCAL_DIR/.env.$ENVIRONMENT"
        )
    content, where = found
    bundle.apply(url)
    return bundle.load_secrets(url, content), where


def _run(argv: Sequence[str], env: Mapping[str, str]) -> int:
    opts, pos = a.parse(argv, OPTIONS, cmd=PROG, max_positional=2)
    if opts["help"] or not pos:
        sys.stdout.write(HELP)
        return 0
    if pos[0] != "secrets":
        raise UsageError(f"{PROG}: unknown command {pos[0]!r}; see {PROG} --help")
    if len(pos) < 2:
        raise MissingError(f"{PROG} secrets: a subcommand is required: load")
    if pos[1] != "load":
        raise UsageError(f"{PROG} secrets: unknown subcommand {pos[1]!r}; use load")
    url = opts["url"] or env.get("PGURL") or env.get("DB_URL")
    if not url:
        raise MissingError("PGURL or DB_URL is required (or pass --url)")
    count, where = secrets_load(url=url, env=env, dotenv_file=opts["dotenv_file"])
    from db_tool.bundle import VERSION

    sys.stdout.write(
        f"{PROG}: hectic bundle {VERSION} applied; {count} secret{'s' if count != 1 else ''} "
        f"loaded from {where}\n"
    )
    return 0


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return guarded(PROG, lambda: _run(args, env_dict(env)))


def entry() -> None:
    raise SystemExit(main())
