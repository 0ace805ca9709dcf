"""`database branch create|list|switch|drop|reset|current`: argv → commands/branch → print."""

from __future__ import annotations

import time

from db_tool.errors import MissingError, UsageError

TYPE_CHECKING = False  # no typing at run time: `branch create` is a hot path
if TYPE_CHECKING:  # --help imports this module for its text only
    from typing import Any

    from db_tool.cli.context import Context

HELP = """\
usage: database branch create NAME [--from DB]
       database branch list [--json]
       database branch switch NAME
       database branch drop NAME
       database branch reset NAME
       database branch current

Branches are databases of the project's cluster made as template copies of another one, so
each is a full, independent database that survives PG_REUSE like any other.

  create NAME [--from DB]   copy DB (default: the current branch) to a new branch NAME
  list                      the main database (PG_DATABASE) and every branch: size, created,
                            parent; * marks the current one
  switch NAME               use NAME from now on: postgres-init (`. postgres-init`) exports its
                            URL; `switch <PG_DATABASE>` goes back to the main database. Kept in
                            <working dir>/db-tool.branch
  drop NAME                 drop the branch (the main database is current again if it was)
  reset NAME                drop NAME and copy its parent again
  current                   print the name of the current branch

With PG_BRANCH_FROM_GIT=1, postgres-init uses the branch named after the current git branch of
LOCAL_DIR (main/master: the main database), copying the main database on first use.

PostgreSQL copies a database only while no other session is connected to it. pg_cron's
scheduler (connected to PG_DATABASE) is ended for the copy and the server restarted so it comes
back; any other session makes the command fail with the list of sessions.
"""

ACTIONS = ("create", "list", "switch", "drop", "reset", "current")


def _when(created: float | None) -> str:
    if created is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(created))


def dispatch(ctx: Context, action: str | None, opts: dict[str, Any], pos: list[str]) -> int:
    """`database branch ACTION` with ACTION's options parsed (db_tool.cli.spec)."""
    if action is None:
        if pos:
            raise UsageError(f"branch: unknown action {pos[0]!r}; use one of "
                             f"{', '.join(ACTIONS)}")
        ctx.stdout.write(HELP)  # no arguments: the help on stdout, exit 1 (as `database`)
        return 1
    from db_tool import output
    from db_tool.commands import branch

    cmd = f"database branch {action}"
    cluster = branch.Where(ctx.settings.cluster_config(reuse=True))
    if action in ("list", "current"):
        if action == "current":
            ctx.stdout.write(branch.current(cluster) + "\n")
            return 0
        rows = branch.list_branches(cluster)
        if opts["json"]:
            import json

            ctx.stdout.write(json.dumps([{n: getattr(r, n) for n in r._fields} for r in rows],
                                        indent=2) + "\n")
            return 0
        width = max([len(r.name) for r in rows] + [6])
        ctx.stdout.write(f"  {'BRANCH':<{width}}  {'SIZE':>9}  {'CREATED':<16}  PARENT\n")
        for r in rows:
            mark = "*" if r.current else " "
            parent = r.parent or ("(main)" if r.main else "-")
            ctx.stdout.write(f"{mark} {r.name:<{width}}  {output.human_size(r.size_bytes):>9}  "
                             f"{_when(r.created):<16}  {parent}\n")
        return 0
    if not pos:
        raise MissingError(f"{cmd} needs a branch name: {cmd} NAME")
    name = pos[0]
    if action == "create":
        made = branch.create(cluster, name, opts.get("source"))
        output.info(f"created branch {name} from {made.source} in {made.seconds * 1000:.0f} ms")
    elif action == "reset":
        made = branch.reset(cluster, name)
        output.info(f"reset branch {name} to a fresh copy of {made.source}")
    elif action == "drop":
        was_current = branch.drop(cluster, name)
        output.info(f"dropped branch {name}"
                    + (f"; {cluster.database} is the current branch again" if was_current else ""))
    else:
        url = branch.switch(cluster, name)
        output.info(f"switched to branch {name}; `. postgres-init` exports its URL")
        ctx.stdout.write(url + "\n")
    return 0
