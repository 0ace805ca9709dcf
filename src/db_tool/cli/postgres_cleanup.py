"""postgres-cleanup: stop the project's cluster. Forgiving and safe inside traps."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from db_tool.cli.common import env_dict, guarded
from db_tool.errors import UsageError

HELP = """\
usage: postgres-cleanup [-h|--help]

Stop this project's PostgreSQL cluster (fast shutdown, waited). Never deletes anything.
Working dir: PG_WORKING_DIR, else $LOCAL_DIR/focus/postgresql. Nothing to resolve, no
postmaster.pid, or a stale one: exit 0 — safe in `trap postgres-cleanup EXIT`.
NO_TTY=1: quiet (only errors are printed).
"""


def run(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    for arg in argv:
        if arg in ("-h", "--help"):
            sys.stdout.write(HELP)
            return 0
        raise UsageError(f"unknown argument {arg!r}; see postgres-cleanup --help")
    from db_tool import output
    from db_tool.cluster import Cluster
    from db_tool.settings import ClusterConfig, working_dir_from

    environ = env_dict(env)
    wd = working_dir_from(environ)
    if wd is None or not (wd / "data").is_dir():
        return 0
    config = ClusterConfig(working_dir=wd.absolute())
    stopped = Cluster(config).stop()
    if stopped and environ.get("NO_TTY", "0") in ("", "0"):
        output.info(f"stopped the cluster in {wd}")
    return 0


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return guarded("postgres-cleanup", lambda: run(args, env))


def entry() -> None:
    raise SystemExit(main())
