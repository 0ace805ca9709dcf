"""`database diff`: what production will look like (backup + migrations) against what the sources
build, as schema dumps and immutable-table rows. Also `database diff log`.

Both sides are temporary clusters under $LOCAL_DIR/focus/postgresql-diff-tmp/{db1,db2} (their own
sockets, so the development cluster is never touched). They are always stopped and removed; before
that their server logs, and the migrator/hydrate output, are copied to
$LOCAL_DIR/focus/postgresql-diff-log/{db1,db2}/ — that is what `diff log` shows.
"""

from __future__ import annotations

import contextlib
import difflib
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from db_tool import fslock, output, proc, progress, psql
from db_tool.backupdir import (
    default_backup_dir,
    opened,
    recorded_database,
    require_backup,
)
from db_tool.cluster import Cluster
from db_tool.commands.restore import restore_into
from db_tool.errors import Error, ExitCode
from db_tool.project_settings import ProjectSettings
from db_tool.scratch import interrupt_on_signals, tear_down, teardown

if TYPE_CHECKING:
    from db_tool.settings import MigratorSettings

DIFF_TMP = "postgresql-diff-tmp"
DIFF_LOG = "postgresql-diff-log"
SIDES = ("db1", "db2")
IMMUTABLE_HEADER = "--- IMMUTABLE TABLE DATA ---"
NO_DIFFERENCES = "(no differences)"
TROUBLE = 2  # the exit code of a diff that could not compare (1 is "differences")

_IMMUTABLE_TABLES = """\
WITH RECURSIVE sub(oid) AS (
    SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass('hectic.immutable')
    UNION
    SELECT i.inhrelid FROM pg_inherits i JOIN sub ON i.inhparent = sub.oid
)
SELECT format('%I.%I', n.nspname, c.relname)
  FROM sub JOIN pg_class c ON c.oid = sub.oid JOIN pg_namespace n ON n.oid = c.relnamespace
"""
# Columns a table got from hectic.created_at / hectic.updated_at (through any depth of
# inheritance) hold build times, not data: left out of the immutable rows and of --tables data.
_STAMPED = """\
WITH RECURSIVE anc(oid) AS (
    SELECT inhparent FROM pg_inherits WHERE inhrelid = CAST(:'tbl' AS regclass)
    UNION
    SELECT i.inhparent FROM pg_inherits i JOIN anc ON i.inhrelid = anc.oid
), stamped AS (
    SELECT pa.attname FROM pg_attribute pa JOIN anc ON pa.attrelid = anc.oid
     WHERE anc.oid IN (to_regclass('hectic.created_at'), to_regclass('hectic.updated_at'))
       AND pa.attnum > 0 AND NOT pa.attisdropped
)
"""
_COMPARED_COLUMNS = _STAMPED + """\
SELECT quote_ident(a.attname) FROM pg_attribute a
 WHERE a.attrelid = CAST(:'tbl' AS regclass) AND a.attnum > 0 AND NOT a.attisdropped
   AND NOT (a.attinhcount > 0 AND a.attname IN (SELECT attname FROM stamped))
 ORDER BY a.attnum
"""
_STAMPED_COLUMNS = _STAMPED + """\
SELECT a.attname FROM pg_attribute a
 WHERE a.attrelid = CAST(:'tbl' AS regclass) AND a.attnum > 0 AND NOT a.attisdropped
   AND a.attinhcount > 0 AND a.attname IN (SELECT attname FROM stamped)
"""
_COPY_HEADER = re.compile(r"^COPY (.+) \((.*)\) FROM stdin;$")
STAMPED_NOTE = ("--tables: columns inherited from hectic.created_at / hectic.updated_at are left "
                "out of the data")


@dataclass(frozen=True)
class TableDiff:
    table: str
    lines: list[str]  # unified diff lines; empty when equal
    note: str = ""  # e.g. "only in db2"


@dataclass(frozen=True)
class DiffResult:
    schema: list[str]  # unified diff lines of the dumps
    tables: list[TableDiff] | None  # None: no hectic schema on either side
    backup: Path
    log_dir: Path
    notes: list[str] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return bool(self.schema) or any(t.lines for t in self.tables or [])

    def render(self) -> str:
        out = [f"# database diff: db1 = {self.backup} + migrations, db2 = the sources"]
        out += [f"# {n}" for n in self.notes]
        out += self.schema or ["(no schema differences)"]
        if self.tables is not None:
            out += ["", IMMUTABLE_HEADER]
            if not self.tables:
                out.append("(no tables inherit hectic.immutable)")
            for t in self.tables:
                out.append(f"== {t.table}" + (f" ({t.note})" if t.note else "") + " ==")
                out += t.lines or [NO_DIFFERENCES]
        return "\n".join(out) + "\n"


def log_root(settings: ProjectSettings) -> Path:
    return settings.focus_dir / DIFF_LOG


def diff(
    *,
    settings: ProjectSettings,
    backup_path: Path | None,
    tables: Sequence[str] = (),
    ignore_migration_fail: bool = False,
    mock: bool = False,
    no_cron: bool = False,
    branch: str | None = None,
) -> DiffResult:
    """Compare the backup, migrated (db1), with the sources hydrated (db2), in two temporary
    clusters under focus/; both are torn down afterwards, their logs kept for `diff log`.

    One piece (~70 lines): the steps share the lock, both clusters and the one teardown that
    must cover each of them; split apart, every part would take all of them as arguments."""
    started = time.time()
    focus = settings.focus_dir
    path = (backup_path or default_backup_dir(settings)).absolute()
    tmp_root, logs = focus / DIFF_TMP, log_root(settings)
    if not path.is_file():
        require_backup(path)  # before anything is created
    logs.mkdir(parents=True, exist_ok=True)
    # The lock lives in the log dir, which stays anyway: no lock file of ours lies around.
    with _exclusive(logs / ".lock"), interrupt_on_signals(), progress.watch("diff"), opened(
        path, archive=path.is_file(), scratch_parent=focus
    ) as backup_dir:
        _remove_stale(tmp_root, settings)
        with contextlib.suppress(FileNotFoundError):  # written by older versions
            (focus / f"{DIFF_TMP}.lock").unlink()
        for side in SIDES:
            shutil.rmtree(logs / side, ignore_errors=True)
            (logs / side).mkdir(parents=True)
        # --branch: that database of the backup (a `database branch`), not the recorded one.
        database = branch or recorded_database(backup_dir, settings.cluster_config().database)
        db1, db2 = (
            Cluster(settings.cluster_config(
                working_dir=tmp_root / side, database=database, ephemeral=True, reuse=False,
                log_path=None,
            ))
            for side in SIDES
        )
        try:
            notes = [STAMPED_NOTE] if tables else []
            with output.step("db1: restore the backup into a temporary cluster"):
                restore_into(db1, backup_dir)
            failed = _migrate(settings, db1.url, logs / "db1" / "migrator.log")
            if failed:
                if not ignore_migration_fail:
                    raise Error(
                        "migrations failed on the backup (db1); see `database diff log`, or "
                        "pass --ignore-migration-fail to compare anyway",
                        ExitCode.MIGRATION_FAILED, detail=failed,
                    )
                output.warn("migrations failed on db1; comparing anyway")
                notes.append("migrations FAILED on db1 (--ignore-migration-fail)")
            with output.step("db2: a fresh temporary cluster hydrated from the sources"):
                db2.init()
                _hydrate(settings, db2.url, mock=mock, log=logs / "db2" / "hydrate.log")
                _init_db2(settings, db2.url, logs / "db2" / "migrator.log")
            with output.step("compare"):
                schema = _schema_diff(db1, db2, tables, no_cron=no_cron)
                if no_cron:
                    notes.append("--no-cron: lines naming cron. left out of the dumps")
                immutable = _immutable_diff(db1.url, db2.url)
            return DiffResult(schema, immutable, path, logs, notes)
        finally:
            tear_down("tear down both temporary clusters", [db1, db2],
                      keep=lambda i, cluster: _keep_logs(cluster, logs / SIDES[i], started))
            shutil.rmtree(tmp_root, ignore_errors=True)


# ---- the two clusters ------------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    lock.parent.mkdir(parents=True, exist_ok=True)
    busy = f"another `database diff` is running in this project ({lock})"
    with fslock.exclusive(lock, busy=busy):
        yield


def _remove_stale(tmp_root: Path, settings: ProjectSettings) -> None:
    """A diff killed with SIGKILL leaves its clusters behind: stop and remove them."""
    if not tmp_root.exists():
        return
    for side in SIDES:
        if (tmp_root / side).is_dir():
            teardown(Cluster(settings.cluster_config(working_dir=tmp_root / side)))
    shutil.rmtree(tmp_root, ignore_errors=True)
    output.info(f"removed {tmp_root}, left by a `database diff` that was killed")


def _keep_logs(cluster: Cluster, target: Path, since: float) -> None:
    """Copy the server logs written during this run (a restored data dir also brings the
    logs of the cluster the backup was taken from: those are left out)."""
    logs = [cluster.server_log]
    with contextlib.suppress(OSError):
        logs += sorted(cluster.log_dir.iterdir())
    for log in logs:
        with contextlib.suppress(OSError):
            if log.is_file() and log.stat().st_mtime >= since - 1:
                shutil.copy2(log, target / log.name)


def _migrator_settings(settings: ProjectSettings) -> MigratorSettings:
    found = settings.migrator
    if settings.migration_dir is not None:
        found = found.replace(migration_dir=str(settings.migration_dir))
    return found


def _migrate(settings: ProjectSettings, url: str, log: Path) -> str:
    """`migrator migrate up all` on db1, its output in `log`; '' on success, else that output
    (and the step is marked failed)."""
    from db_tool import planning
    from db_tool.commands import migrate

    if settings.migration_dir is None or not settings.migration_dir.is_dir():
        output.info(f"no migration dir ({settings.migration_dir}): db1 is the backup as is")
        return ""
    lines: list[str] = []
    with output.step("db1: migrator migrate up all") as step:
        try:
            mset = _migrator_settings(settings)
            outcome = migrate.migrate(
                url, mset.migration_dir, planning.Target.parse("up", "all"), mset,
                lambda w: lines.append(f"migrator: warning: {w}"),
            )
        except Error as exc:
            from db_tool.history import MigrationFailed

            if isinstance(exc, MigrationFailed):
                lines += migrate.result_lines(exc.completed)
            lines += _error_lines(exc)
            step.fail(f"migrator: exit {int(exc.exit_code)}")
            log.write_text("".join(f"{line}\n" for line in lines))
            return "\n".join(lines).strip()
        if outcome.already is not None:
            lines.append(outcome.already)
        lines += migrate.result_lines(outcome.results)
        if outcome.summary:
            lines.append(f"migrator: {outcome.summary}")
    log.write_text("".join(f"{line}\n" for line in lines))
    return ""


def _init_db2(settings: ProjectSettings, url: str, log: Path) -> None:
    """`migrator init` on db2 (after hydrate), its output in `log`."""
    from db_tool.commands import migrate

    try:
        migrate.init(url, {}, _migrator_settings(settings))
    except Error as exc:
        text = "\n".join(_error_lines(exc))
        log.write_text(text + "\n")
        raise Error("migrator init failed on db2", detail=text) from None
    log.write_text("migrator: hectic bundle applied\n")


def _error_lines(exc: Error) -> list[str]:
    """An Error as the migrator prints it."""
    lines = [f"migrator: error: {exc.message}"]
    if exc.detail:
        lines.append(exc.detail.rstrip("\n"))
    return lines


def _hydrate(settings: ProjectSettings, url: str, *, mock: bool, log: Path) -> None:
    """`database hydrate` against db2, its psql output into the diff log."""
    from db_tool.commands.hydrate import hydrate

    hydrate(settings.replace(hydrate_log=log), url, mock=mock)


# ---- comparing ------------------------------------------------------------------------------


def _dump(cluster: Cluster, tables: Sequence[str]) -> list[str] | None:
    argv = [cluster.install.tool("pg_dump"), "--no-owner", "--no-privileges", "-d", cluster.url]
    if tables:
        argv += [a for t in tables for a in ("-t", t)]
    else:
        argv.append("--schema-only")
    result = proc.run(argv, env=cluster.client_env(), check=False, what="pg_dump")
    if not result.ok:
        if tables and "no matching tables" in result.err:
            return None
        raise Error(f"pg_dump of {cluster.working_dir.name} failed", detail=result.err.strip())
    text = result.out
    if tables:
        text = without_stamped_columns(text, lambda table: _stamped_columns(cluster.url, table))
    return clean_dump(text)


def _stamped_columns(url: str, table: str) -> set[str]:
    return {r[0] for r in psql.query(url, _STAMPED_COLUMNS, variables={"tbl": table})}


def _split_columns(columns: str) -> list[str]:
    """`a, "b, c", d` -> ['a', '"b, c"', 'd'] (pg_dump's quoted identifiers kept as written)."""
    parts, current, quoted = [], "", False
    for ch in columns:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return parts


def _unquote(ident: str) -> str:
    if len(ident) >= 2 and ident[0] == ident[-1] == '"':
        return ident[1:-1].replace('""', '"')
    return ident


def without_stamped_columns(text: str, stamped: Callable[[str], set[str]]) -> str:
    """pg_dump output with the columns `stamped(table)` names (created_at/updated_at values:
    the time each side was built) removed from every COPY block, header and rows."""
    out: list[str] = []
    drop: set[int] | None = None  # column positions to leave out in the current COPY block
    for line in text.split("\n"):
        if drop is not None:
            if line == "\\.":
                drop = None
            elif drop:
                fields = line.split("\t")  # COPY text format escapes tabs inside values
                line = "\t".join(f for i, f in enumerate(fields) if i not in drop)
            out.append(line)
            continue
        match = _COPY_HEADER.match(line)
        if match:
            table, columns = match.group(1), _split_columns(match.group(2))
            names = stamped(table)
            drop = {i for i, c in enumerate(columns) if _unquote(c) in names}
            if drop:
                kept = ", ".join(c for i, c in enumerate(columns) if i not in drop)
                line = f"COPY {table} ({kept}) FROM stdin;"
        out.append(line)
    return "\n".join(out)


def clean_dump(text: str) -> list[str]:
    """Dump lines without what differs between equal databases: pg_dump's random
    \\restrict keys, version banners, row order inside COPY blocks, runs of blank lines."""
    out: list[str] = []
    block: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(("\\restrict", "\\unrestrict", "-- Dumped from", "-- Dumped by")):
            continue
        if block is not None:
            if line == "\\.":
                out += sorted(block)
                block = None
            else:
                block.append(line)
                continue
        elif line.startswith("COPY ") and line.endswith("FROM stdin;"):
            block = []
        if line == "" and out and out[-1] == "":
            continue
        out.append(line)
    return out


def without_cron(lines: list[str]) -> list[str]:
    """--no-cron, as the original's: every dump line naming `cron.` is left out."""
    return [line for line in lines if "cron." not in line]


def _schema_diff(db1: Cluster, db2: Cluster, tables: Sequence[str], *,
                 no_cron: bool = False) -> list[str]:
    left, right = _dump(db1, tables), _dump(db2, tables)
    if left is None and right is None:
        raise Error(f"no table matches {', '.join(tables)} on either side", ExitCode.NO_TABLE)
    if no_cron:
        left, right = without_cron(left or []), without_cron(right or [])
    return _unified(left or [], right or [], "db1 (backup + migrations)", "db2 (sources)")


def _unified(a: list[str], b: list[str], left: str, right: str) -> list[str]:
    return list(difflib.unified_diff(a, b, left, right, lineterm=""))


def _has_hectic(url: str) -> bool:
    return psql.query(url, "SELECT to_regnamespace('hectic') IS NOT NULL")[0][0] == "t"


def immutable_rows(url: str, table: str) -> list[str]:
    """The rows of `table` itself (ONLY: a child table inheriting it is compared on its own)
    as INSERT statements, in a stable (C-collated) order."""
    columns = [r[0] for r in psql.query(url, _COMPARED_COLUMNS, variables={"tbl": table})]
    if not columns:
        sql = f"SELECT 'INSERT INTO ' || :'tbl' || ' DEFAULT VALUES;' FROM ONLY {table}"
    else:
        values = ", ".join(f"quote_nullable({c})" for c in columns)
        sql = (
            "SELECT line FROM (SELECT format('INSERT INTO %s (%s) VALUES (%s);', :'tbl', "
            f":'cols', array_to_string(ARRAY[{values}], ', ')) AS line FROM ONLY {table}) AS r "
            'ORDER BY line COLLATE "C"'
        )
    rows = psql.query(url, sql, variables={"tbl": table, "cols": ", ".join(columns)})
    return [r[0] for r in rows]


def _immutable_diff(url1: str, url2: str) -> list[TableDiff] | None:
    present = [_has_hectic(url1), _has_hectic(url2)]
    if not any(present):
        return None
    sides = [
        {r[0] for r in psql.query(url, _IMMUTABLE_TABLES)} if has else set[str]()
        for url, has in zip((url1, url2), present, strict=True)
    ]
    result = []
    for table in sorted(sides[0] | sides[1]):
        in1, in2 = table in sides[0], table in sides[1]
        rows1 = immutable_rows(url1, table) if in1 else []
        rows2 = immutable_rows(url2, table) if in2 else []
        note = "" if in1 and in2 else ("only in db1" if in1 else "only in db2")
        lines = _unified(rows1, rows2, f"db1/{table}", f"db2/{table}")
        result.append(TableDiff(table, lines, note))
    return result


def read_logs(settings: ProjectSettings) -> str:
    """The logs of the last diff run, each file under a header."""
    root = log_root(settings)
    files = [p for side in SIDES if (root / side).is_dir()
             for p in sorted((root / side).iterdir()) if p.is_file()]
    if not files:
        raise Error(f"no diff logs in {root}: run `database diff` first")
    parts = []
    for path in files:
        parts.append(f"==> {path.parent.name}/{path.name} <==\n")
        parts.append(path.read_text(errors="replace").rstrip("\n") + "\n\n")
    return "".join(parts)

