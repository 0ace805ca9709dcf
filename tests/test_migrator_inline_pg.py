"""Inlined migrations (one query each) against a real PostgreSQL.

The same corpus applied with inlining (the default) and with MIGRATOR_INLINE=0 (every file
through `\\i`) leaves the same database, up and down; a failing inlined migration leaves
nothing of itself behind.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from db_tool import history_pg
from db_tool.cli.migrator import main
from db_tool.migrations import Step
from db_tool.sqlsplit import OneQuery, one_query


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


def t(i: int) -> str:
    return f"2024010100{i:04d}-m{i}"


VARIABLES = ["--set", "greeting=it's \"quoted\" ; $$ \\ é", "--set", "factor=3",
             "--set", "alias=x;y"]

# name → (layout, up, down). Comments say whether the step is inlined in `migrate up` (all).
CORPUS: dict[str, tuple[str, str, str]] = {
    t(1): ("dir",  # inlined: every kind of quote, comment and a non-ASCII string
           "CREATE TABLE item (id serial PRIMARY KEY, label text, note text, n int)\n"
           "  INHERITS (hectic.created_at);\n"
           "INSERT INTO item (label, note) VALUES ('semi;colon', 'it''s; fine'),\n"
           "  (E'esc\\';aped', E'tab\\there;'), (U&'d\\0061t\\+000061;', $$dollar; 'q'$$),\n"
           "  ($tag$ $$ ; $tag$, 'x' /* c; /* nested; */ */ || 'y'), ('é; ü', current_user);\n"
           "-- a comment; with a semicolon\n\n"
           "INSERT INTO item (label) VALUES ('a' -- trailing; comment\n  || 'b');;\n"
           "COMMENT ON TABLE item IS 'items; the table';\n",
           "DROP TABLE item;\n"),
    t(2): ("dir",  # inlined: a plpgsql body and a rule with `;` inside
           "CREATE FUNCTION bump(x int) RETURNS int LANGUAGE plpgsql AS $fn$\n"
           "BEGIN\n  UPDATE item SET n = coalesce(n, 0) + x;  -- ; inside\n  RETURN x;\nEND;\n"
           "$fn$;\nSELECT bump(2);\n"
           "CREATE TABLE log (msg text) INHERITS (hectic.created_at);\n"
           "CREATE RULE item_log AS ON UPDATE TO item DO ALSO\n"
           "  (INSERT INTO log (msg) VALUES ('one;'); INSERT INTO log (msg) VALUES ('two'));\n"
           "UPDATE item SET label = label || '!' WHERE id = 1;\n",
           "DROP RULE item_log ON item;\nDROP TABLE log;\nDROP FUNCTION bump(int);\n"),
    t(3): ("dir",  # inlined: quoted psql variables and a neutral unquoted one
           "CREATE VIEW v AS SELECT label AS :\"alias\", n * :factor AS scaled FROM item;\n"
           "INSERT INTO item (label) VALUES (:'greeting');\n",
           "DROP VIEW v;\nDELETE FROM item WHERE label = :'greeting';\n"),
    t(4): ("file",  # inlined: casts, $1, nested comments, a last statement without `;`
           "/* outer /* inner; */ still; comment */\n"
           "PREPARE ins(text) AS INSERT INTO item (label) VALUES ($1::text);\n"
           "EXECUTE ins('prepared;');\nDEALLOCATE ins;\n"
           "ALTER TABLE item ADD COLUMN extra text DEFAULT 'x;y';\n\n\n"
           "INSERT INTO item (label, n) VALUES ('last, no semicolon', (SELECT count(*)::int\n"
           "  FROM log))",
           "ALTER TABLE item DROP COLUMN extra;\n"),
    t(5): ("entrypoint",  # \i: psql meta-commands
           "\\ir part.sql\n",
           "DELETE FROM item WHERE label = 'from ir';\n"),
    t(6): ("dir",  # \i: an unquoted variable after a \i step (which may have \set it)
           "INSERT INTO item (label, n) VALUES ('after', :factor);\n",
           "DELETE FROM item WHERE label = 'after';\n"),
    t(7): ("dir",  # inlined: quoted variables only, CRLF line ends
           "INSERT INTO item (label) VALUES (:'greeting' || ';2');\r\n"
           "CREATE INDEX item_label ON item (label);\r\n",
           "DROP INDEX item_label;\r\nDELETE FROM item WHERE label LIKE '%;2';\r\n"),
    t(8): ("dir",  # inlined: SET LOCAL stays inside the migration's transaction
           "CREATE TABLE frozen (v text) INHERITS (hectic.created_at, hectic.immutable);\n"
           "SET LOCAL hectic.migration_mode = 'on';\nINSERT INTO frozen (v) VALUES ('ice;');\n",
           "SET LOCAL hectic.migration_mode = 'on';\nDROP TABLE frozen;\n"),
}
INLINED_UP = [t(i) for i in (1, 2, 3, 4, 7, 8)]


def make_corpus(mdir: Path) -> None:
    for name, (layout, up, down) in CORPUS.items():
        if layout == "dir":
            write(mdir / name / "up.sql", up)
            write(mdir / name / "down.sql", down)
        elif layout == "entrypoint":
            write(mdir / name / "up" / "entrypoint.sql", up)
            write(mdir / name / "up" / "part.sql",
                  "\\set local_n 5\nINSERT INTO item (label, n) VALUES ('from ir', :local_n);\n")
            write(mdir / name / "down" / "entrypoint.sql", down)
        else:
            write(mdir / f"{name}.sql", f"-- migrate:up\n{up}\n-- migrate:down\n{down}")


@pytest.fixture
def second_db(make_db: Callable[[], str]) -> str:
    return make_db()


@pytest.fixture
def inlined(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, bool]]:
    """(direction, name, inlined?) of every step the driver was built for."""
    seen: list[tuple[str, str, bool]] = []
    real = history_pg.PgSession._inline

    def spy(self: history_pg.PgSession, step: Step, certain: bool) -> Any:
        got = real(self, step, certain)
        seen.append((step.direction, step.migration.name, got is not None))
        return got

    monkeypatch.setattr(history_pg.PgSession, "_inline", spy)
    return seen


def migrate(url: str, mdir: Path, *argv: str, inline: bool = True) -> tuple[int, str]:
    env = {**os.environ, "DB_URL": url, "MIGRATION_DIR": str(mdir)}
    if not inline:
        env["MIGRATOR_INLINE"] = "0"
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["migrate", *argv, *VARIABLES], env)
    said = err.getvalue().splitlines(keepends=True)
    return rc, "".join(x for x in said if not x.startswith("migrator: successfully migrated"))


def dump(pg: Any, url: str) -> str:
    """pg_dump of the whole database, timestamps (created_at, applied_at) blanked."""
    out = subprocess.run(
        [pg.install.tool("pg_dump"), "--no-owner", "--no-privileges", "-d", url],
        capture_output=True, text=True, check=True,
    ).stdout
    out = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?[+-]\d\d(:\d\d)?", "<ts>", out)
    return "\n".join(
        line for line in out.splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped"))
    )


@pytest.mark.slow
def test_inlined_and_included_runs_leave_the_same_database(
    pg: Any, db_url: str, second_db: str, tmp_path: Path,
    inlined: list[tuple[str, str, bool]],
) -> None:
    mdir = tmp_path / "migration"
    make_corpus(mdir)
    rc, err = migrate(db_url, mdir, "up", "all")
    assert (rc, err) == (0, ""), err
    assert [name for d, name, yes in inlined if yes] == INLINED_UP
    inlined.clear()
    assert migrate(second_db, mdir, "up", "all", inline=False) == (0, "")
    assert not any(yes for *_, yes in inlined)
    up = dump(pg, db_url)
    assert up == dump(pg, second_db)
    # the corpus did what it says (so the comparison compares something)
    labels = pg.psql("SELECT string_agg(label, '|' ORDER BY id) FROM item", db_url)
    assert labels == ("semi;colon!|esc';aped|data;| $$ ; |é; ü|ab|"
                      "it's \"quoted\" ; $$ \\ é|prepared;|last, no semicolon|from ir|after|"
                      "it's \"quoted\" ; $$ \\ é;2")
    notes = pg.psql("SELECT string_agg(note, '|' ORDER BY id) FROM item", db_url)
    assert notes == f"it's; fine|tab\there;|dollar; 'q'|xy|{pg.user}"
    assert pg.psql("SELECT string_agg(msg, '|') FROM log", db_url) == "one;|two"
    assert pg.psql("SELECT v FROM frozen", db_url) == "ice;"
    assert pg.psql("SELECT count(*) FROM hectic.migration", db_url) == "8"

    for n in ("4", "4"):
        inlined.clear()
        assert migrate(db_url, mdir, "down", n) == (0, "")
        assert all(yes for *_, yes in inlined)  # nothing sets a variable before them here
        assert migrate(second_db, mdir, "down", n, inline=False) == (0, "")
        assert dump(pg, db_url) == dump(pg, second_db)
    assert pg.psql("SELECT count(*) FROM hectic.migration", db_url) == "0"
    assert pg.psql("SELECT to_regclass('item') IS NULL", db_url) == "t"


@pytest.mark.slow
def test_failing_inlined_migration_leaves_nothing_behind(
    pg: Any, db_url: str, tmp_path: Path, inlined: list[tuple[str, str, bool]],
) -> None:
    mdir = tmp_path / "migration"
    write(mdir / t(1) / "up.sql", "CREATE TABLE ok1 (v text) INHERITS (hectic.created_at);\n")
    failing = ("CREATE TABLE half () INHERITS (hectic.created_at);\n"
               "ALTER TABLE ok1 ADD COLUMN z int;\n"
               "INSERT INTO ok1 (v) VALUES ('x;y');\n"
               "SET LOCAL hectic.inheritance_extra_excluded_schemas = 'public';\n"
               "SELECT 1/0;\n"
               "CREATE TABLE after_the_error () INHERITS (hectic.created_at);\n")
    assert isinstance(one_query(failing), OneQuery)
    write(mdir / t(2) / "up.sql", failing)
    write(mdir / t(3) / "up.sql", "CREATE TABLE never () INHERITS (hectic.created_at);\n")
    rc, err = migrate(db_url, mdir, "up", "all")
    assert rc == 4
    assert [name for _, name, yes in inlined if yes] == [t(1), t(2), t(3)]
    assert f"migration {t(2)} (up) failed; it was rolled back, 1 step applied before it" in err
    assert f"psql:{mdir / t(2) / 'up.sql'}: ERROR:  division by zero" in err
    assert pg.psql("SELECT name FROM hectic.migration", db_url) == t(1)
    q = ("SELECT to_regclass('ok1') IS NOT NULL, to_regclass('half') IS NULL, "
         "to_regclass('after_the_error') IS NULL, to_regclass('never') IS NULL, "
         "(SELECT count(*) FROM ok1), (SELECT count(*) FROM pg_attribute "
         "WHERE attrelid = 'ok1'::regclass AND attname = 'z')")
    assert pg.psql(q, db_url) == "t|t|t|t|0|0"

    # A syntax error: the server rejects the whole message; its LINE is the file's line.
    write(mdir / t(2) / "up.sql", "SELECT 1;\n\n-- two blank lines above\nSELEC 2;\n")
    rc, err = migrate(db_url, mdir, "up", "all")
    assert rc == 4 and "LINE 4: SELEC 2;" in err
    assert pg.psql("SELECT count(*) FROM hectic.migration", db_url) == "1"
    # MIGRATOR_INLINE=0: through \i, psql names the file and the line
    rc, err = migrate(db_url, mdir, "up", "all", inline=False)
    assert rc == 4 and f"psql:{mdir / t(2) / 'up.sql'}:4: ERROR:  syntax error" in err


@pytest.mark.parametrize("inline", [True, False])
def test_a_failure_past_the_first_driver_is_named_and_keeps_the_steps_before_it(
    pg: Any, db_url: str, tmp_path: Path, inline: bool,
) -> None:
    """The plan goes to psql as drivers of 4, 16, 64 … steps: step 25 runs in the third."""
    mdir = tmp_path / "migration"
    for i in range(1, 31):
        create = f"CREATE TABLE s{i} () INHERITS (hectic.created_at);\n"
        write(mdir / t(i) / "up.sql", "SELECT 1/0;\n" if i == 25 else create)
        write(mdir / t(i) / "down.sql", f"DROP TABLE s{i};\n")
    rc, err = migrate(db_url, mdir, "up", "all", inline=inline)
    assert rc == 4
    assert f"migration {t(25)} (up) failed; it was rolled back, 24 steps applied before it" in err
    assert f"psql:{mdir / t(25) / 'up.sql'}:" + ("" if inline else "1:") in err
    assert "division by zero" in err
    assert pg.psql("SELECT count(*), max(name) FROM hectic.migration", db_url) == f"24|{t(24)}"
    assert pg.psql("SELECT to_regclass('s24') IS NOT NULL, to_regclass('s26') IS NULL",
                   db_url) == "t|t"
    write(mdir / t(25) / "up.sql", "CREATE TABLE s25 () INHERITS (hectic.created_at);\n")
    assert migrate(db_url, mdir, "up", "all", inline=inline)[0] == 0
    assert migrate(db_url, mdir, "down", "30", inline=inline)[0] == 0
    assert pg.psql("SELECT count(*) FROM hectic.migration", db_url) == "0"


def test_file_layout_error_lines_count_in_the_file(
    pg: Any, db_url: str, tmp_path: Path
) -> None:
    mdir = tmp_path / "migration"
    write(mdir / f"{t(1)}.sql",
          "-- header\n\n-- migrate:up\nSELECT 1;\n\nSELECT nope;\n-- migrate:down\nSELECT 1;\n")
    rc, err = migrate(db_url, mdir, "up", "all")
    assert rc == 4
    assert f"psql:{mdir / t(1)}.sql: ERROR:  column \"nope\" does not exist" in err
    assert "LINE 6: SELECT nope;" in err


@pytest.mark.parametrize("inline", [True, False])
def test_a_failure_in_the_first_driver_while_the_next_is_prepared_is_psqls_error(
    pg: Any, db_url: str, tmp_path: Path, inline: bool,
) -> None:
    """psql quits at the first step's error while the next driver (large files: slow to read
    and scan) is still being written: the migrator must not trip over the closed pipe."""
    mdir = tmp_path / "migration"
    filler = "-- filler; with a semicolon\n" * 40_000  # ~1 MB a file
    for i in range(1, 21):
        body = "SELECT 1/0;\n" if i == 1 else f"CREATE TABLE s{i} ();\n{filler}"
        write(mdir / t(i) / "up.sql", body)
        write(mdir / t(i) / "down.sql", f"DROP TABLE s{i};\n")
    rc, err = migrate(db_url, mdir, "up", "all", inline=inline)
    assert rc == 4, err
    assert f"migration {t(1)} (up) failed" in err
    assert "division by zero" in err
    assert pg.psql("SELECT count(*) FROM hectic.migration", db_url) == "0"
