"""database diff / diff log: backup + migrations against the sources (issue 4).

One development cluster and one backup for the module (sources v1: item(id, name) and the
immutable color table with red/green). Each test edits the sources or migrations and diffs.
"""

from __future__ import annotations

import io
import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from db_tool.cli import db_backup
from db_tool.cli.context import Context
from db_tool.commands import diff as d
from db_tool.project_settings import ProjectSettings
from tests.dbproject import ENTRYPOINT, TABLES, Project, project
from tests.helpers import run_cmd, script, tree_snapshot

ADD_PRICE = "ALTER TABLE public.item ADD COLUMN price int;\n"
MIGRATION = "db/migration/20240101000000-add-price.sql"


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with project(tmp_path_factory.getbasetemp() / "cache") as p:
        assert p.db("backup") == 0
        yield p


@pytest.fixture
def proj(backed_up: Project, request: pytest.FixtureRequest) -> Iterator[Project]:
    """The module's project with sources and migrations reset to v1 after each test; what the
    module fixture printed is dropped from the test's capture (capsys, or capfd if it uses that)."""
    capture = "capfd" if "capfd" in request.fixturenames else "capsys"
    request.getfixturevalue(capture).readouterr()
    yield backed_up
    backed_up.write("db/src/entrypoint.sql", ENTRYPOINT)
    backed_up.write("db/src/tables.sql", TABLES)
    for m in (backed_up.root / "db" / "migration").iterdir():
        m.unlink()


def diff(p: Project, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = p.db("diff", *args)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def no_temp_clusters(p: Project) -> bool:
    if (p.focus / "postgresql-diff-tmp").exists():
        return False
    wanted = str(p.focus / "postgresql-diff-tmp").encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if wanted in cmdline:
                return False
    return True


def test_equal_when_migrations_bring_the_backup_to_the_sources(
    proj: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    pid = proj.postmaster_pid()
    proj.psql("INSERT INTO public.item (id, name) VALUES (7, 'dev data')")
    data = proj.psql("SELECT string_agg(id || name, ',' ORDER BY id) FROM public.item")
    proj.write("db/src/tables.sql", TABLES.replace("name text)", "name text, price int)", 1))
    proj.write(MIGRATION, f"-- migrate:up\n{ADD_PRICE}\n-- migrate:down\n"
                          "ALTER TABLE public.item DROP COLUMN price;\n")
    rc, out, err = diff(proj, capsys)
    assert rc == 0, out + err
    assert "(no schema differences)" in out
    assert "--- IMMUTABLE TABLE DATA ---\n== public.color ==\n(no differences)" in out
    # The development cluster was not touched: same server, same data, no migration applied.
    assert proj.postmaster_pid() == pid
    assert proj.psql("SELECT string_agg(id || name, ',' ORDER BY id) FROM public.item") == data
    assert proj.psql("SELECT count(*) FROM information_schema.columns "
                     "WHERE table_name = 'item' AND column_name = 'price'") == "0"
    assert no_temp_clusters(proj)
    assert "applied 20240101000000-add-price" in (
        proj.focus / "postgresql-diff-log" / "db1" / "migrator.log").read_text()


def test_schema_drift_is_a_readable_diff(
    proj: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    proj.write("db/src/tables.sql", TABLES.replace("name text)", "name text, price int)", 1))
    rc, out, _ = diff(proj, capsys)
    assert rc == 1
    assert "--- db1 (backup + migrations)\n+++ db2 (sources)\n" in out
    assert "-    name text\n+    name text,\n+    price integer\n" in out
    assert "\\restrict" not in out
    assert "== public.color ==\n(no differences)" in out
    assert no_temp_clusters(proj)


def test_immutable_data_drift(proj: Project, capsys: pytest.CaptureFixture[str]) -> None:
    proj.write("db/src/entrypoint.sql", ENTRYPOINT.replace("'green'", "'blue'"))
    rc, out, _ = diff(proj, capsys)
    assert rc == 1
    assert "(no schema differences)" in out
    section = out.split("--- IMMUTABLE TABLE DATA ---\n", 1)[1]
    assert section.startswith("== public.color ==\n--- db1/public.color\n+++ db2/public.color\n")
    assert " INSERT INTO public.color (id, name) VALUES ('1', 'red');" in section
    assert "-INSERT INTO public.color (id, name) VALUES ('2', 'green');" in section
    assert "+INSERT INTO public.color (id, name) VALUES ('2', 'blue');" in section
    # created_at / updated_at hold build times: not compared
    assert "created_at" not in section and "updated_at" not in section


def test_output_file_tables_and_diff_log(
    proj: Project, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "drift.diff"
    proj.write("db/src/entrypoint.sql", ENTRYPOINT.replace("'one'", "'uno'"))
    rc, out, err = diff(proj, capsys, "--tables", "public.item", "-o", str(target))
    assert rc == 1
    assert out == ""
    assert "differences found" in err
    text = target.read_text()
    assert "COPY public.item" in text and "+" in text and "uno" in text
    assert "CREATE TABLE public.color" not in text  # only the named table

    assert proj.db("diff", "log") == 0
    logs = capsys.readouterr().out
    assert "==> db1/postgres-init.log <==" in logs
    assert "==> db2/hydrate.log <==" in logs
    assert "database system is ready to accept connections" in logs

    rc, _, err = diff(proj, capsys, "--tables", "public.nope")
    assert rc == 5
    assert no_temp_clusters(proj)


def test_migration_failure_stops_the_diff_unless_ignored(
    proj: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    proj.write(MIGRATION, "-- migrate:up\nALTER TABLE public.nope ADD COLUMN x int;\n"
                          "-- migrate:down\nSELECT 1;\n")
    rc, out, err = diff(proj, capsys)
    assert rc == 4  # an error is never 1 (that means "differences")
    assert out == ""
    assert "migrations failed on the backup" in err and "public.nope" in err
    lines = err.splitlines()
    assert sum(line.startswith("database: error:") for line in lines) == 1
    assert "done in" not in err.split("migrate up all ...")[-1]  # no done after the failure
    assert no_temp_clusters(proj)
    rc, out, _ = diff(proj, capsys, "--ignore-migration-fail")
    assert rc == 0
    assert "migrations FAILED on db1" in out


def test_refusals_and_the_console_script(
    proj: Project, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    before = tree_snapshot(tmp_path)
    rc, _, err = diff(proj, capsys, str(empty))
    assert rc == 2 and "not a backup" in err  # trouble is 2, as diff(1)'s
    assert tree_snapshot(tmp_path) == before
    assert diff(proj, capsys, "--tables")[0] == 3  # needs a value
    assert diff(proj, capsys, "log", "extra")[0] == 9
    # A real process, through the installed script; a backup archive instead of a dir.
    backup = tree_snapshot(proj.backup_dir)
    result = run_cmd([script("database"), "diff", "--no-cron", str(proj.backup_dir)],
                     {**proj.env, "PAGER": "false"})
    assert result.returncode == 0, result.stderr
    assert "(no schema differences)" in result.stdout and "--no-cron" in result.stdout
    assert not (proj.focus / "postgresql-diff-tmp.lock").exists()
    assert tree_snapshot(proj.backup_dir) == backup


def test_diff_log_without_a_run(tmp_path_factory: pytest.TempPathFactory,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from db_tool.cli import database

    root = tmp_path_factory.mktemp("nolog")
    assert database.main(["diff", "log"], env={"LOCAL_DIR": str(root)}) == 2
    assert "run `database diff` first" in capsys.readouterr().err
    # `log` after options too, as the original's parser takes it anywhere
    assert database.main(["diff", "-m", "log"], env={"LOCAL_DIR": str(root)}) == 2
    assert "run `database diff` first" in capsys.readouterr().err


def test_ctrl_c_tears_both_clusters_down(proj: Project) -> None:
    import signal
    import subprocess
    import time

    from tests.helpers import base_env

    # A slow entrypoint keeps the diff busy in db2 while we interrupt it.
    proj.write("db/src/entrypoint.sql", ENTRYPOINT + "SELECT pg_sleep(30);\n")
    child = subprocess.Popen([script("database"), "diff"], env=base_env(**proj.env),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        ready = proj.focus / "postgresql-diff-tmp" / "db2" / "data" / "postmaster.pid"
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert ready.exists()
        time.sleep(0.5)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, err
    assert no_temp_clusters(proj)


def test_no_cron_leaves_out_every_line_naming_cron() -> None:
    from db_tool.commands.diff import without_cron

    lines = ["CREATE EXTENSION pg_cron;", "SELECT cron.schedule('x');", "CREATE TABLE t ();"]
    assert without_cron(lines) == ["CREATE EXTENSION pg_cron;", "CREATE TABLE t ();"]


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


@pytest.mark.slow
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
