"""Audit of issue 4 (backup / restore / normalize-backup / diff): the acceptance points the
other test modules did not show. Real clusters only (tests/dbproject.py)."""

from __future__ import annotations

import io
import itertools
import os
import pty
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from db_tool.cli import db_backup
from db_tool.cli.context import Context
from db_tool.commands import diff as d
from db_tool.settings import ProjectSettings
from tests.dbproject import ENTRYPOINT, TABLES, Project, project, short_dir
from tests.helpers import script, tree_snapshot

LEFTOVERS = ("standby.signal", "recovery.signal", "postmaster.pid", "postmaster.opts")


def add_to_base(backup_dir: Path, extra: dict[str, bytes]) -> None:
    """Repack backup_dir/base.tar.gz with extra top-level files (as a standby's data has)."""
    base = backup_dir / "base.tar.gz"
    new = backup_dir / "base.new.tar.gz"
    with tarfile.open(base, "r:gz") as src, tarfile.open(new, "w:gz", compresslevel=1) as dst:
        for member in src:
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        for name, data in extra.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            dst.addfile(info, io.BytesIO(data))
    new.replace(base)


def leftovers() -> dict[str, bytes]:
    return {name: b"99999\n" if name == "postmaster.pid" else b"" for name in LEFTOVERS}


def processes_with(fragment: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if fragment.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


@pytest.fixture
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with project(tmp_path_factory.getbasetemp() / "cache", PG_DATABASE="appdb") as p:
        yield p


# ------------------------------------------------------------------------- backup / restore


def test_backup_progress_on_a_terminal_replaces_the_old_one_and_restore_drops_signals(
    fresh: Project, tmp_path: Path
) -> None:
    p = fresh
    assert p.db("backup") == 0
    first = tree_snapshot(p.backup_dir)
    p.psql("INSERT INTO public.item (id, name) VALUES (2, 'second backup')")

    # stderr on a terminal: pg_basebackup's own progress (-P) is shown.
    master, slave = pty.openpty()
    try:
        child = subprocess.Popen([script("database"), "backup"], env=p.env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        child.wait(timeout=120)
    finally:
        os.close(master)
    terminal = b"".join(chunks).decode(errors="replace")
    assert child.returncode == 0, terminal
    assert "100%" in terminal and "kB" in terminal, terminal  # "... kB (100%), 1/1 tablespace"

    # The second backup replaced the first, and nothing of the swap is left behind.
    assert tree_snapshot(p.backup_dir) != first
    assert not [e for e in p.focus.iterdir() if ".tmp-" in e.name or ".old-" in e.name]

    # A backup whose data carries standby/recovery signals (as one of a standby would):
    # restore removes them, so the server comes up as a primary, not as a standby.
    copy = tmp_path / "standby-backup"
    shutil.copytree(p.backup_dir, copy)
    add_to_base(copy, {"standby.signal": b"", "recovery.signal": b""})
    assert p.db("restore", str(copy)) == 0
    assert p.psql("SELECT pg_is_in_recovery()") == "f"
    assert p.psql("SELECT string_agg(name, ',' ORDER BY id) FROM public.item") == \
        "one,second backup"  # the data of the second backup


# --------------------------------------------------------------------------- normalize-backup


def test_normalize_defaults_fallback_database_leftovers_and_collations(
    fresh: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """Input and output default to the backup dirs; no non-system database -> testdb; the
    standby/runtime leftovers of the source are not in the output; stale collation versions
    are refreshed."""
    p = fresh
    stale = "UPDATE pg_collation SET collversion = '0.stale' WHERE collname = 'und-x-icu'"
    if p.psql("SELECT count(*) FROM pg_collation WHERE collname = 'und-x-icu'", "postgres") != "1":
        pytest.fail("this PostgreSQL has no ICU collation und-x-icu to make stale")
    p.psql(stale, "postgres")
    p.psql("DROP DATABASE appdb WITH (FORCE)", "postgres")  # only system databases remain
    # A preload library this machine lacks (ALTER SYSTEM, in postgresql.auto.conf): the
    # temporary cluster must not inherit it, or it would not start.
    p.psql("ALTER SYSTEM SET shared_preload_libraries = 'no_such_library'", "postgres")
    assert p.db("backup") == 0
    assert (p.backup_dir / "database_name").read_text().strip() == "appdb"
    add_to_base(p.backup_dir, leftovers())
    before = tree_snapshot(p.backup_dir)

    assert p.db("normalize-backup") == 0
    out = p.focus / "postgresql-backup-normalized"
    assert sorted(e.name for e in out.iterdir()) == ["base.tar.gz", "database_name"]
    assert (out / "database_name").read_text().strip() == "testdb"
    with tarfile.open(out / "base.tar.gz") as tf:
        names = set(tf.getnames())
    assert "PG_VERSION" in names
    assert not names & set(LEFTOVERS)
    assert tree_snapshot(p.backup_dir) == before  # the input is only read
    assert not [e for e in p.focus.iterdir() if e.name.startswith(".norm-")]

    capsys.readouterr()
    assert p.db("restore", str(out)) == 0
    assert "/testdb?" in capsys.readouterr().out
    assert p.psql("SELECT current_database(), pg_is_in_recovery()", "testdb") == "testdb|f"
    assert p.psql("SELECT collversion = pg_collation_actual_version(oid) FROM pg_collation "
                  "WHERE collname = 'und-x-icu'", "postgres") == "t"
    assert p.psql("SHOW listen_addresses", "testdb") == ""
    assert "no_such_library" not in p.psql("SHOW shared_preload_libraries", "testdb")


def test_normalize_failure_stops_and_removes_the_temporary_cluster(fresh: Project) -> None:
    p = fresh
    assert p.db("backup") == 0
    before = tree_snapshot(p.backup_dir)
    target_parent = short_dir("dbt-o-")
    try:
        # ALTER ROLE on a reserved role fails once the temporary server is up.
        argv = ["normalize-backup", "--role", "pg_monitor", "-o", str(target_parent / "out")]
        assert p.db(*argv) == 1
        assert list(target_parent.iterdir()) == []  # no .norm-* dir, no output
        assert processes_with(f"{target_parent}/.norm-") == []
    finally:
        shutil.rmtree(target_parent, ignore_errors=True)
    assert tree_snapshot(p.backup_dir) == before


# -------------------------------------------------------------------------------------- diff


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with project(tmp_path_factory.getbasetemp() / "cache") as p:
        assert p.db("backup") == 0
        yield p


@pytest.fixture
def proj(backed_up: Project) -> Iterator[Project]:
    """The module's project, sources and migrations reset to those of the backup afterwards."""
    yield backed_up
    backed_up.write("db/src/entrypoint.sql", ENTRYPOINT)
    backed_up.write("db/src/tables.sql", TABLES)
    for m in (backed_up.root / "db" / "migration").iterdir():
        m.unlink()


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_tables_leave_out_build_times_equal_sources_exit_0_through_the_pager(
    proj: Project, capfd: pytest.CaptureFixture[str]
) -> None:
    """--tables on tables inheriting created_at (item) and created_at + updated_at (color):
    equal sources -> exit 0 although every row was stamped at another time. Privileges are
    not compared (--no-privileges). On a terminal the output goes through $PAGER."""
    proj.write("db/src/tables.sql", TABLES + "GRANT SELECT ON public.item TO PUBLIC;\n")
    env = {**proj.env, "PAGER": "sed s/^/PAGER:/"}
    ctx = Context(settings=ProjectSettings.from_env(env), stdout=_Tty())
    from db_tool.cli.parser import parse
    from db_tool.cli.spec import DATABASE

    opts, pos = parse(DATABASE.sub("diff"), ["--tables", "public.item,public.color"])
    rc = db_backup.dispatch(ctx, "diff", opts, pos)
    out = capfd.readouterr().out
    assert rc == 0, out
    assert f"PAGER:# {d.STAMPED_NOTE}" in out
    assert "PAGER:(no schema differences)" in out
    assert "PAGER:== public.color ==\nPAGER:(no differences)" in out


def test_tables_real_data_difference_is_still_exit_1(
    proj: Project, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    proj.write("db/src/entrypoint.sql",
               ENTRYPOINT.replace("'one'", "'uno'").replace("'green'", "'verde'"))
    target = tmp_path / "out.diff"
    assert proj.db("diff", "--tables", "public.item,public.color", "-o", str(target)) == 1
    text = target.read_text()
    schema = text.split(d.IMMUTABLE_HEADER)[0]
    assert " COPY public.item (id, name) FROM stdin;" in schema
    assert "-1\tone\n+1\tuno\n" in schema
    assert " COPY public.color (id, name) FROM stdin;" in schema
    assert "-2\tgreen\n+2\tverde\n" in schema
    assert "created_at" not in schema.split("COPY public.color")[1]
    assert "updated_at" not in schema.split("COPY public.color")[1]


def test_mock_option_reaches_db2_and_immutable_tables_at_any_depth(
    proj: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """-m hydrates db2 with USE_MOCK=1; an immutable table only the sources have is shown as
    such, and so is one inheriting hectic.immutable through another table; a parent's
    comparison holds its own rows only."""
    capsys.readouterr()
    proj.write("db/src/entrypoint.sql", ENTRYPOINT + (
        "\\if :{?USE_MOCK}\n"
        "CREATE TABLE public.size (id int PRIMARY KEY, label text)\n"
        "    INHERITS (hectic.created_at, hectic.immutable);\n"
        "CREATE TABLE public.shade (depth int) INHERITS (public.color);\n"
        "BEGIN;\nSET LOCAL hectic.migration_mode = 'on';\n"
        "INSERT INTO public.size (id, label) VALUES (1, 'small');\n"
        "INSERT INTO public.shade (id, name, depth) VALUES (3, 'dark red', 2);\n"
        "COMMIT;\n"
        "\\endif\n"
    ))
    stale = proj.focus / "postgresql-diff-log" / "db1" / "stale-from-an-old-run.log"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("old\n")
    rc = proj.db("diff")
    out = capsys.readouterr().out
    assert rc == 0, out  # without -m the mock part is not built
    assert "public.size" not in out
    # `diff log`: both clusters' server logs of this run, nothing of an earlier one
    assert proj.db("diff", "log") == 0
    logs = capsys.readouterr().out
    for side in ("db1", "db2"):
        assert f"==> {side}/postgres-init.log <==" in logs
        assert f"==> {side}/migrator.log <==" in logs
    assert re.search(r"==> db2/postgresql-.*\.log <==", logs)
    assert "stale-from-an-old-run" not in logs and not stale.exists()

    rc = proj.db("diff", "--mock")
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "+CREATE TABLE public.size (" in out
    section = out.split(d.IMMUTABLE_HEADER + "\n", 1)[1]
    assert "== public.size (only in db2) ==" in section
    assert "+INSERT INTO public.size (id, label) VALUES ('1', 'small');" in section
    assert "== public.shade (only in db2) ==" in section
    assert "+INSERT INTO public.shade (id, name, depth) VALUES ('3', 'dark red', '2');" in section
    assert "== public.color ==\n(no differences)" in section


# ---------------------------------------------------------------------- pure pieces of diff


def test_clean_dump_removes_noise_and_sorts_copy_rows() -> None:
    text = (
        "--\n-- PostgreSQL database dump\n--\n\n\\restrict AbC123\n\n"
        "-- Dumped from database version 15.18\n-- Dumped by pg_dump version 15.18\n\n\n\n"
        "CREATE TABLE t (x int);\n\nCOPY t (x) FROM stdin;\n3\n1\n2\n\\.\n\n"
        "\\unrestrict AbC123\n"
    )
    lines = d.clean_dump(text)
    assert not [ln for ln in lines if ln.startswith(("\\restrict", "\\unrestrict", "-- Dumped"))]
    assert lines[lines.index("COPY t (x) FROM stdin;") + 1:][:4] == ["1", "2", "3", "\\."]
    assert all(not (a == b == "") for a, b in itertools.pairwise(lines))
    other_key = text.replace("AbC123", "ZzZ999").replace("15.18", "15.19")
    assert d.clean_dump(other_key) == lines


def test_without_stamped_columns_handles_quoted_names() -> None:
    text = (
        'COPY "My Schema"."T" (id, "a, b", created_at, "Up""d") FROM stdin;\n'
        "1\tx\\ty\t2025-01-01 00:00:00+00\tq\n\\.\n"
        "COPY public.plain (id) FROM stdin;\n7\n\\.\n"
    )
    stamped = {'"My Schema"."T"': {"created_at", 'Up"d'}, "public.plain": set()}
    asked: list[str] = []

    def lookup(table: str) -> set[str]:
        asked.append(table)
        return stamped[table]

    assert d.without_stamped_columns(text, lookup) == (
        'COPY "My Schema"."T" (id, "a, b") FROM stdin;\n1\tx\\ty\n\\.\n'
        "COPY public.plain (id) FROM stdin;\n7\n\\.\n"
    )
    assert asked == ['"My Schema"."T"', "public.plain"]


def test_without_local_dir_diff_restore_and_normalize_look_in_pwd_and_touch_nothing(
    tmp_path: Path,
) -> None:
    import subprocess

    from tests.helpers import base_env

    # As the original's ${LOCAL_DIR:-$PWD}: the backup is looked for in $PWD/focus; a missing
    # one is refused before anything is created (diff: 2, restore: 1, normalize-backup: 3).
    env = {k: v for k, v in base_env().items() if k not in ("LOCAL_DIR", "PG_WORKING_DIR")}
    env["PG_WORKING_DIR"] = str(tmp_path / "wd")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for argv, rc, words in ((["diff"], 2, "not a backup"), (["diff", "log"], 2, "no diff logs"),
                            (["restore"], 1, "not a backup"),
                            (["normalize-backup"], 3, "input backup directory not found")):
        result = subprocess.run([script("database"), *argv], env=env, cwd=cwd, text=True,
                                capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
                                check=False)
        assert result.returncode == rc, (argv, result.stderr)
        assert words in result.stderr and str(cwd / "focus") in result.stderr
    assert list(cwd.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd"]
