"""postgres-cleanup: stop the project's cluster. Forgiving and safe inside traps."""

from __future__ import annotations

import sys

from db_tool.cli.common import env_dict, guarded
from db_tool.errors import Error

TYPE_CHECKING = False
if TYPE_CHECKING:  # collections (collections.abc's package) is not loaded on the hook paths
    from collections.abc import Mapping, Sequence

HELP = """\
usage: postgres-cleanup [-h|--help] [--version]

Stop this project's PostgreSQL cluster (fast shutdown, waited). Never deletes anything.
Working dir: PG_WORKING_DIR, else $LOCAL_DIR/focus/postgresql. Nothing to resolve, no
postmaster.pid, or a stale one (its pid is not this cluster's server): says so and exits 0.
A problem while stopping (a read-only working dir, say) is printed as a warning, still exit 0:
safe in `trap postgres-cleanup EXIT`. Only a cluster db-tool or postgres-init made is stopped.
NO_TTY=1: quiet (only problems are printed).
"""


def run(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    if argv:  # no argument is the hook path (traps): it imports no parser
        from db_tool.cli.parser import parse, wants_help, with_examples
        from db_tool.cli.spec import POSTGRES_CLEANUP, VERSION

        if wants_help(argv):
            sys.stdout.write(with_examples(HELP, POSTGRES_CLEANUP))
            return 0
        opts, _ = parse(POSTGRES_CLEANUP, argv, extra_opts=[VERSION])
        if opts["version"]:
            from db_tool.cli.database import print_version

            return print_version("postgres-cleanup")
    from db_tool import output

    environ = env_dict(env)
    quiet = environ.get("NO_TTY", "0") not in ("", "0")
    try:
        message = _stop(environ)
    except Error as exc:
        # Trap-safe: never mask the caller's real exit status.
        output.warn(f"postgres-cleanup: {exc.message}")
        return 0
    except OSError as exc:
        output.warn(f"postgres-cleanup: {exc.filename or ''}: {exc.strerror}")
        return 0
    if not quiet:
        output.info(message)
    return 0


def _stop(environ: Mapping[str, str]) -> str:
    from db_tool.cluster import Cluster
    from db_tool.settings import ClusterConfig, working_dir_from

    wd = working_dir_from(environ)
    if wd is None:
        return "neither PG_WORKING_DIR nor LOCAL_DIR is set; nothing to stop"
    if not (wd / "data").is_dir():
        return f"no cluster in {wd}; nothing to stop"
    cluster = Cluster(ClusterConfig(working_dir=wd.absolute()))
    stopped = cluster.running_pid() is not None and cluster.stop()
    # Not in a finally: an interrupted or failed stop does not wait for the background worker.
    from db_tool import cachedir
    from db_tool.settings import runtime

    cachedir.settle_near(wd.absolute(), runtime().cache_locations.tmpdir)
    if stopped:
        return f"stopped the cluster in {wd}"
    return f"no server running in {wd}; nothing to stop"


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return guarded("postgres-cleanup", lambda: run(args, env))


def entry() -> None:
    raise SystemExit(main())
