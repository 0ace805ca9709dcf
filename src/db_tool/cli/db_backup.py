"""`database diff | backup | restore | normalize-backup`: argv parsing and printing only."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db_tool.errors import Error, ExitCode

if TYPE_CHECKING:  # --help imports this module for its text only
    from db_tool.cli.context import Context

BACKUP_HELP = """\
usage: database backup [--branch NAME]

Physical backup of the running development cluster (pg_basebackup, tar, gzip, WAL streamed)
into $LOCAL_DIR/focus/postgresql-backup: base.tar.gz, pg_wal.tar.gz, backup_manifest and
database_name (the project database). Progress is shown on a terminal. The new backup is
written next to the old one and replaces it only when complete: a failed backup leaves the
previous one as it was.

  --branch NAME   record NAME (a `database branch`) as the database `restore` brings up; the
                  backup holds every database of the cluster (branches too) either way
"""

RESTORE_HELP = """\
usage: database restore [--archive] [PATH]
       database restore --previous

Replace the development cluster's data with a backup and start it, using the database name
recorded in the backup. PATH defaults to $LOCAL_DIR/focus/postgresql-backup; with --archive,
PATH is a .tar.gz of such a directory. A PATH without base.tar.gz is refused before the cluster
is touched. The current data is kept until the restored cluster has started, and put back if it
does not start.

--previous swaps in the cluster a fresh postgres-init replaced (kept in <wd>/data.previous when
it held data); the current data becomes data.previous, so running it again undoes it.
"""

NORMALIZE_HELP = """\
usage: database normalize-backup [-o|--output DIR] [--role NAME] [--database NAME]
                                 [--admin-role NAME] [PATH]

Turn a physical backup taken elsewhere (e.g. production) into one `database restore` can use
here. The input (PATH, default $LOCAL_DIR/focus/postgresql-backup) is only read; the output
(default $LOCAL_DIR/focus/postgresql-backup-normalized) must not be, be inside, or contain it.

In a temporary cluster: access and server configuration are replaced by local ones (unix socket
only, trust, preload settings as postgres-init would use), standby/recovery/runtime leftovers
removed, the WAL replayed, collation versions refreshed, the role and database ensured; then the
cluster stops cleanly and its data is packed as base.tar.gz + database_name.

  -o, --output DIR     where to write the normalized backup
      --role NAME      superuser to ensure (default: your login, as postgres-init uses)
      --database NAME  database to ensure and record (default: the first non-system database
                       in the backup, else testdb)
      --admin-role NAME
                       a superuser of the backup to work as (default: the backup's bootstrap
                       superuser, found by itself)
"""

DIFF_HELP = """\
usage: database diff [--tables a,b] [--no-cron] [--ignore-migration-fail] [-m|--mock]
                     [-o|--output FILE] [--branch NAME] [BACKUP_PATH]
       database diff log

Compare what production will be (db1: the backup restored into a temporary cluster, then
`migrator migrate up all`) with what the sources build (db2: a fresh temporary cluster hydrated
from $DATABASE_SOURCE, then `migrator init`):
  - schema dumps (pg_dump --schema-only --no-owner --no-privileges) as a unified diff;
    with --tables, those tables' schema and data (data without the columns from
    hectic.created_at / hectic.updated_at);
  - when a hectic schema exists on either side, an --- IMMUTABLE TABLE DATA --- section: per
    table inheriting hectic.immutable, a unified diff of its rows as INSERTs (columns from
    hectic.created_at / hectic.updated_at left out), or (no differences).
The development cluster is never touched; both temporary clusters are always removed. Their
logs are kept in $LOCAL_DIR/focus/postgresql-diff-log/{db1,db2}/: `database diff log` shows them.

  BACKUP_PATH               backup dir (default $LOCAL_DIR/focus/postgresql-backup) or a .tar.gz
      --tables a,b          compare only these tables (schema and data)
      --no-cron             leave every line naming `cron.` (pg_cron's objects) out of the
                            schema dumps
      --ignore-migration-fail
                            compare even when migrations fail on db1 (else exit 4)
  -m, --mock                hydrate db2 with -v USE_MOCK=1
  -o, --output FILE         write the diff to FILE instead of stdout / the pager ($PAGER,
                            default less -FRX, on a terminal)
      --branch NAME         db1 is that database of the backup (a `database branch`), not
                            the one the backup recorded

Exit codes (as diff(1): an error never exits 1): 0 no differences, 1 differences, 2 trouble
(a backup that cannot be restored, a failed hydrate, pg_dump ...), 3 a missing value,
4 migrations failed on db1, 5 no --tables table on either side, 9 unknown argument.
"""


Opts = dict[str, Any]


def dispatch(ctx: Context, sub: str, opts: Opts, pos: list[str]) -> int:
    """`database SUB` with its options parsed (db_tool.cli.spec.DATABASE)."""
    if sub == "backup":
        return _backup(ctx, opts)
    if sub == "restore":
        return _restore(ctx, opts, pos)
    if sub == "normalize-backup":
        return _normalize(ctx, opts, pos)
    if sub == "diff":
        return _diff(ctx, opts, pos)
    raise AssertionError(sub)


def _backup(ctx: Context, opts: Opts) -> int:
    from db_tool import output
    from db_tool.commands.backup import backup

    ctx.settings.require_local_dir()
    result = backup(settings=ctx.settings, progress=_stderr_is_tty(), branch=opts["branch"])
    output.ok(f"backup of database {result.database} written to {result.path} "
              f"({output.human_size(result.size)})")
    return 0


def _restore(ctx: Context, opts: Opts, pos: list[str]) -> int:
    from db_tool import output
    from db_tool.commands.restore import restore, restore_previous

    if opts["previous"]:
        if pos or opts["archive"]:
            raise Error("database restore: --previous takes no PATH and no --archive: run "
                        "`database restore --previous` alone", ExitCode.UNKNOWN)
        kept = restore_previous(settings=ctx.settings)
        output.ok(f"the previous cluster is back; database {kept.database} is up (the data "
                  f"it replaced is now in {kept.source})")
        ctx.stdout.write(kept.url + "\n")
        return 0

    if not pos:
        ctx.settings.require_local_dir()
    result = restore(settings=ctx.settings, path=Path(pos[0]) if pos else None,
                     archive=bool(opts["archive"]))
    output.ok(f"restored {result.source}; database {result.database} is up")
    ctx.stdout.write(result.url + "\n")
    return 0


def _normalize(ctx: Context, opts: Opts, pos: list[str]) -> int:
    from db_tool import output
    from db_tool.commands.normalize import normalize

    if not pos or not opts["output"]:
        ctx.settings.require_local_dir()
    for name in ("role", "database", "admin_role"):
        if opts[name] == "":
            raise Error(f"database normalize-backup: --{name.replace('_', '-')} needs a "
                        "non-empty value", ExitCode.MISSING)
    result = normalize(
        settings=ctx.settings,
        source=Path(pos[0]) if pos else None,
        target=Path(opts["output"]) if opts["output"] else None,
        role=opts["role"], database=opts["database"], admin_role=opts["admin_role"],
    )
    output.ok(f"normalized backup (database {result.database}, superuser {result.role}) "
              f"written to {result.path}; restore it with `database restore {result.path}`")
    return 0


def _diff(ctx: Context, opts: Opts, pos: list[str]) -> int:
    from db_tool.commands import diff as d

    try:
        return _diff_or_log(ctx, opts, pos)
    except Error as exc:
        # 1 means "differences" (as diff(1)); trouble is 2, as diff(1)'s, so CI tells them apart.
        if exc.exit_code == ExitCode.GENERIC:
            exc.exit_code = d.TROUBLE
        raise


def _diff_or_log(ctx: Context, opts: Opts, pos: list[str]) -> int:
    from db_tool.commands import diff as d

    ctx.settings.require_local_dir()
    if pos == ["log"]:  # `diff log`, also after options (`diff -m log`), as the original
        _show(ctx, d.read_logs(ctx.settings))
        return 0
    tables = [t.strip() for t in (opts["tables"] or "").split(",") if t.strip()]
    if opts["tables"] is not None and not tables:
        raise Error("database diff: --tables needs at least one table name", ExitCode.MISSING)
    result = d.diff(
        settings=ctx.settings, backup_path=Path(pos[0]) if pos else None, tables=tables,
        ignore_migration_fail=bool(opts["ignore"]), mock=bool(opts["mock"]),
        no_cron=bool(opts["no_cron"]), branch=opts["branch"],
    )
    text = result.render()
    if opts["output"]:
        from db_tool import output

        target = Path(opts["output"])
        target.write_text(text)
        verdict = "differences found" if result.differs else "no differences"
        output.info(f"{verdict}; the diff is in {target}")
    else:
        _show(ctx, text)
    return 1 if result.differs else 0


def _show(ctx: Context, text: str) -> None:
    """Through $PAGER (default less -FRX) on a terminal, plain otherwise."""
    if ctx.is_tty:
        from db_tool import proc

        pager = ctx.pager()
        if pager:
            ctx.stdout.flush()
            try:
                proc.run(pager, input=text, stdout=None, stderr=None, check=False,
                         env=ctx.settings.child_env)
                return
            except Error:
                pass  # pager missing: print instead
    ctx.stdout.write(text)


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
