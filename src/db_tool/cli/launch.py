"""`db-tool-run PROG [ARGS...]`: the one Python entry point behind the sh launchers
(`database`, `db-tool`, `migrator`, `postgres-cleanup`, `db-ops`, `postgres-init`).

The launchers start it with SIGINT blocked (GNU `env --block-signal`), so a Ctrl-C during the
interpreter's own start-up waits, pending, until db_tool/__init__.py unblocks it and turns it
into exit 130 without a traceback. Only the module of PROG is imported.
"""

from __future__ import annotations

import sys

PROGS = {
    "database": "db_tool.cli.database",
    "db-tool": "db_tool.cli.database",
    "migrator": "db_tool.cli.migrator",
    "postgres-cleanup": "db_tool.cli.postgres_cleanup",
    "db-ops": "db_tool.cli.db_ops",
    "postgres-init": "db_tool.cli.postgres_init",
}


def entry() -> None:
    import importlib

    args = sys.argv[1:]
    if not args or args[0] not in PROGS:
        sys.stderr.write(f"db-tool-run: error: the first argument names the command: "
                         f"{', '.join(PROGS)}\n")
        raise SystemExit(9)
    module = importlib.import_module(PROGS[args[0]])
    raise SystemExit(module.main(args[1:]))
