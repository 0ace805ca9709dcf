"""pg_script: the text the PostgreSQL backend feeds psql, built from in-memory inputs (no
database, no psql); running it is tested in test_migrator_pg.py / test_migrator_inline_pg.py."""

from __future__ import annotations

from pathlib import Path

from db_tool.history import GUARD
from db_tool.migrations import DIR, Migration, Step
from db_tool.pg_script import FRESH, LOCK_KEY, Inline, driver_script, marker, start_script
from db_tool.sqlsplit import OneQuery, TxControl


def step(name: str, direction: str = "up") -> Step:
    m = Migration(name, DIR, f"/m/{name}", f"/m/{name}/up.sql", f"/m/{name}/down.sql", "ab" * 32)
    return Step(direction, m)


def test_start_script_locks_then_skips_a_current_bundle_then_reads_the_history() -> None:
    text = start_script("tok", 2.5, Path("/tmp/b dir/bundle.sql"), version="1.2", comment="c'x")
    lines = text.splitlines()
    assert lines.index("SET lock_timeout = 2500;") < lines.index(
        f"SELECT pg_advisory_lock({LOCK_KEY}) \\g /dev/null")
    assert "\\set __migrator_version '1.2'" in lines
    assert "\\set __migrator_comment 'c''x'" in lines
    assert "\\i '/tmp/b dir/bundle.sql'" in lines
    assert lines[-1] == f"SELECT '{marker('tok', 'end')}';"


def test_an_inlined_step_is_one_query_with_its_history_row() -> None:
    one = Inline(OneQuery("SELECT 1\\;", True, 1), Path("/m/a/up.sql"), 1)
    text, sources = driver_script([step("20240101000000-a")], [one], [TxControl()], [None],
                                  "tok")
    lines = text.splitlines()
    assert f"{FRESH} \\; BEGIN \\; SELECT 1\\;" in lines
    insert = next(i for i, line in enumerate(lines) if line.startswith("INSERT INTO hectic"))
    assert lines[insert].endswith(" \\; COMMIT;")
    # psql names the line of the final `;` (the INSERT line, 1-based): that maps to the file.
    assert sources == {insert + 1: Path("/m/a/up.sql")}
    assert lines[-1] == f"\\echo {marker('tok', 'done 0')}"


def test_file_steps_share_the_commit_and_next_begin_under_the_guard() -> None:
    steps = [step("20240101000000-a"), step("20240101000001-b", "down")]
    files = [Path("/m/a/up.sql"), Path("/m/b/down.sql")]
    text, sources = driver_script(steps, [None, None], [TxControl(), TxControl()], files, "t")
    assert sources == {}
    assert text.count(f"BEGIN \\; SAVEPOINT {GUARD};") == 2  # first step, then shared
    assert f"COMMIT \\; {FRESH} \\; BEGIN \\; SAVEPOINT {GUARD};" in text
    assert "DELETE FROM hectic.migration WHERE name = :'__migrator_name_1' \\; COMMIT;" in text
    assert text.index("\\i '/m/a/up.sql'") < text.index(f"{marker('t', 'guard 0')}")


def test_a_wrapper_file_commits_itself_and_the_row_follows() -> None:
    text, _ = driver_script([step("20240101000000-a")], [None], [TxControl(("COMMIT",), True)],
                            [Path("/m/a/up.sql")], "t")
    lines = text.splitlines()
    i = lines.index("\\i '/m/a/up.sql'")
    assert lines[i - 1] == f"{FRESH};" and lines[i + 2].startswith("INSERT INTO hectic")
    assert GUARD not in text


def test_a_later_driver_carries_the_plans_step_numbers_and_opens_its_own_transaction() -> None:
    steps = [step("20240101000004-e"), step("20240101000005-f")]
    text, _ = driver_script(steps, [None, None], [TxControl(), TxControl()],
                            ["/m/e/up.sql", "/m/f/up.sql"], "t", start=4)
    assert text.startswith("\\set ON_ERROR_STOP 1\n")
    for word in ("begin 4", "guard 4", "done 4", "begin 5", "done 5"):
        assert f"\\echo {marker('t', word)}" in text
    assert "\\set __migrator_name_5 '20240101000005-f'" in text
    assert "__migrator_name_0" not in text
    assert text.index(f"{FRESH} \\; BEGIN \\; SAVEPOINT {GUARD};") < text.index("\\i '/m/e/up.sql'")
    assert text.rstrip().endswith(f"\\echo {marker('t', 'done 5')}")
    assert text.count("COMMIT;") == 1  # the last step's COMMIT ends this driver's transaction
