"""sqlsplit.one_query: where psql ends a statement, and what is never inlined (pure, no database).

The equivalence of the rewrite with `\\i` against real psql is in test_migrator_inline_pg.py.
"""

from __future__ import annotations

import pytest

from db_tool import sqlscript
from db_tool.sqlsplit import MAX_CHARS, NotInlinable, OneQuery, neutral_value, one_query

S = "\\;"  # what a statement-ending `;` becomes

# (sql, rewritten text). Every `;` not replaced is one psql does not end a statement at.
INLINED = [
    ("ALTER TABLE t ADD COLUMN c1 int;\n", f"ALTER TABLE t ADD COLUMN c1 int{S}\n"),
    ("SELECT 1;;", f"SELECT 1{S}{S}"),
    # strings
    ("SELECT 'a;b';", f"SELECT 'a;b'{S}"),
    ("SELECT 'it''s; ok', '';", f"SELECT 'it''s; ok', ''{S}"),
    ("SELECT E'\\';' ;", f"SELECT E'\\';' {S}"),  # E'\'' : the backslash escapes the quote
    ("SELECT e'a\\\\';", f"SELECT e'a\\\\'{S}"),  # E'a\\' ends after the escaped backslash
    ("SELECT E'x''; y';", f"SELECT E'x''; y'{S}"),
    ("SELECT U&'d\\0061t;', U&'!0061;' UESCAPE '!';",
     f"SELECT U&'d\\0061t;', U&'!0061;' UESCAPE '!'{S}"),
    ("SELECT B'01;'; SELECT X'1F';", f"SELECT B'01;'{S} SELECT X'1F'{S}"),
    ("SELECT B'01''x;';", f"SELECT B'01''x;'{S}"),  # B'01' then a plain 'x;'
    ("SELECT N'na;t';", f"SELECT N'na;t'{S}"),
    ("SELECT 'a'\n'b;';", f"SELECT 'a'\n'b;'{S}"),  # a string continued on the next line
    ("SELECT name'x;';", f"SELECT name'x;'{S}"),  # an identifier ending in n/e/u is no prefix
    # identifiers
    ('SELECT 1 AS "x;y", 2 AS "a"";b";', f'SELECT 1 AS "x;y", 2 AS "a"";b"{S}'),
    ('SELECT 1 AS U&"d\\0061t;";', f'SELECT 1 AS U&"d\\0061t;"{S}'),
    ('CREATE TABLE "begin" ("commit" int);', f'CREATE TABLE "begin" ("commit" int){S}'),
    ("SELECT a$$b, c$d$ FROM t;", f"SELECT a$$b, c$d$ FROM t{S}"),  # `$` inside identifiers
    ("SELECT é$$x FROM t;", f"SELECT é$$x FROM t{S}"),
    # dollar quotes
    ("SELECT $$a;b$$;", f"SELECT $$a;b$${S}"),
    ("SELECT $fn$ $$ ; $fn$;", f"SELECT $fn$ $$ ; $fn${S}"),
    ("SELECT $q$ $Q$ ; $q$;", f"SELECT $q$ $Q$ ; $q${S}"),  # tags are case-sensitive
    ("SELECT $a$ $$a$ ;", f"SELECT $a$ $$a$ {S}"),
    ("SELECT $_x1$;$_x1$;", f"SELECT $_x1$;$_x1${S}"),
    ("PREPARE p(int) AS SELECT $1; EXECUTE p(1);",
     f"PREPARE p(int) AS SELECT $1{S} EXECUTE p(1){S}"),  # $1 is a parameter, not a quote
    ("SELECT $1 + $12;", f"SELECT $1 + $12{S}"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n  RETURN 1;\nEND;\n$$;",
     f"CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n  RETURN 1;\nEND;\n$${S}"),
    ("DO $do$ BEGIN PERFORM 1; COMMIT; END $do$;",
     f"DO $do$ BEGIN PERFORM 1; COMMIT; END $do${S}"),
    # comments
    ("SELECT 1 -- c; d\n;", f"SELECT 1 -- c; d\n{S}"),
    ("SELECT 1 --; \\gset\r\n;", f"SELECT 1 --; \\gset\r\n{S}"),  # -- ends at \r too
    ("SELECT /* a /* b; */ c; */ 1;", f"SELECT /* a /* b; */ c; */ 1{S}"),
    ("SELECT /**/ 1 /*/ ; */;", f"SELECT /**/ 1 /*/ ; */{S}"),
    ("SELECT 2 */* ; */ 1;", f"SELECT 2 */* ; */ 1{S}"),  # a comment starts inside `*/*`
    ("SELECT 1 /* \\i x; 'q */;", f"SELECT 1 /* \\i x; 'q */{S}"),
    # parentheses: psql does not end a statement inside them
    ("CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); DELETE FROM b);",
     f"CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); DELETE FROM b){S}"),
    ("SELECT (1)) ; SELECT 2;", f"SELECT (1)) {S} SELECT 2{S}"),  # psql clamps depth at 0
    # casts, quoted psql variables (psql substitutes them as quoted values)
    ("SELECT x::int, '1'::text FROM t;", f"SELECT x::int, '1'::text FROM t{S}"),
    ("SELECT :'v', :\"w\", :{?v};", f"SELECT :'v', :\"w\", :{{?v}}{S}"),
    ("SELECT 1 :=2;", f"SELECT 1 :=2{S}"),
    # numbers
    ("SELECT 1e5, 1.5e-3, 0x1F, 1_000, .5;", f"SELECT 1e5, 1.5e-3, 0x1F, 1_000, .5{S}"),
    # an empty line outside quotes gets a space (psql would drop it); inside quotes it stays
    ("A;\n\nB;\n", f"A{S}\n \nB{S}\n"),
    ("SELECT '\n\n';\n\n", f"SELECT '\n\n'{S}\n \n"),
    ("SELECT $$\n\n$$ /*\n\n*/;", f"SELECT $$\n\n$$ /*\n\n*/{S}"),
    ("\n\nA;", f"\n \nA{S}"),
    ("A;\r\n\r\nB;", f"A{S}\r\n\r\nB{S}"),  # psql keeps a line holding \r
    # statements that are fine as they are
    ("SET LOCAL hectic.migration_mode = 'on';\nSET search_path = app;",
     f"SET LOCAL hectic.migration_mode = 'on'{S}\nSET search_path = app{S}"),
    ("", ""),
    ("-- nothing\n", "-- nothing\n"),
]


@pytest.mark.parametrize(("sql", "text"), INLINED)
def test_inlined(sql: str, text: str) -> None:
    got = one_query(sql)
    assert isinstance(got, OneQuery), got
    assert got.text == text
    assert got.terminated


@pytest.mark.parametrize(("sql", "text", "terminated", "statements"), [
    ("SELECT 1;\nSELECT 2", f"SELECT 1{S}\nSELECT 2", False, 2),
    ("SELECT 1 -- no semicolon", "SELECT 1 -- no semicolon", False, 1),
    ("SELECT 1; -- done\n/* really; */\n", f"SELECT 1{S} -- done\n/* really; */\n", True, 1),
    ("SELECT 1;\n\n", f"SELECT 1{S}\n \n", True, 1),
    ("", "", True, 0),
])
def test_terminated_and_count(sql: str, text: str, terminated: bool, statements: int) -> None:
    got = one_query(sql)
    assert got == OneQuery(text, terminated, statements)


@pytest.mark.parametrize(("sql", "reason"), [
    # psql meta-commands
    ("\\i other.sql\n", "meta-command"),
    ("SELECT 1 \\gset\n", "meta-command"),
    ("SELECT 1 \\; SELECT 2;", "meta-command"),
    ("\\set x 1\nSELECT :x;", "meta-command"),
    # how psql and the server read a backslash in '...' depends on standard_conforming_strings
    ("SELECT 'a\\b';", "backslash"),
    ("SELECT N'a\\';", "backslash"),
    ("SELECT E'a'\n'b\\';", "backslash"),  # a continued E'' string
    # transaction control and BEGIN ATOMIC
    ("BEGIN;\nSELECT 1;\nCOMMIT;", "BEGIN"),
    ("begin transaction isolation level serializable;", "BEGIN"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\nEND;", "BEGIN"),
    ("CREATE PROCEDURE p() BEGIN ATOMIC SELECT 1; END;", "BEGIN"),
    ("START TRANSACTION;", "transaction control (START)"),
    ("SELECT 1; COMMIT;", "transaction control (COMMIT)"),
    ("SELECT 1;\n  end ;", "transaction control (END)"),
    ("ROLLBACK;", "transaction control (ROLLBACK)"),
    ("ROLLBACK TO SAVEPOINT s;", "transaction control (ROLLBACK)"),
    ("ABORT;", "transaction control (ABORT)"),
    ("SAVEPOINT s;", "transaction control (SAVEPOINT)"),
    ("/* c */ RELEASE SAVEPOINT s;", "transaction control (RELEASE)"),
    ("PREPARE TRANSACTION 'x';", "PREPARE TRANSACTION"),
    ("COMMIT PREPARED 'x';", "transaction control (COMMIT)"),
    # COPY reads the lines after it from the input
    ("COPY t FROM STDIN;\n1\n\\.\n", "COPY"),
    ("copy t (a) to stdout;", "COPY"),
    # settings that change how the rest of one message is read
    ("SET client_encoding = 'LATIN1';", "client_encoding"),
    ("SET NAMES 'LATIN1';", "SET NAMES"),
    ("SET SESSION names 'LATIN1';", "SET NAMES"),
    ("SET standard_conforming_strings = off;", "standard_conforming_strings"),
    ("SELECT set_config('backslash_quote', 'on', false);", "backslash_quote"),
    ("RESET ALL;", "RESET ALL"),
    # unterminated
    ("SELECT 'open;", "unterminated '"),
    ("SELECT E'a\\';", "unterminated '"),
    ('SELECT "x;', 'unterminated "'),
    ("SELECT $$ x;", "unterminated dollar quote $$"),
    ("SELECT $a$ x $A$;", "unterminated dollar quote $a$"),
    ("SELECT $1$$ ;", "unterminated dollar quote $$"),  # $1 then $$ opens a quote
    ("SELECT /* /* */ 1;", "unterminated /* comment"),
    ("SELECT (1;", "unbalanced parentheses"),
    # unquoted psql variables: psql lexes their value again
    ("SELECT :x;", "unquoted psql variable :x"),
    ("SELECT arr[1:2] FROM t;", "unquoted psql variable :2"),
    # lexed differently by psql versions
    ("SELECT 1e$$ x $$;", "glued"),
    ("SELECT 1x'a';", "glued"),
    # others
    ("SELECT 'a\0';", "NUL"),
])
def test_not_inlinable(sql: str, reason: str) -> None:
    got = one_query(sql)
    assert isinstance(got, NotInlinable), got
    assert reason in got.reason


def test_bytes_must_be_utf8() -> None:
    assert isinstance(one_query("SELECT 'é';".encode()), OneQuery)
    got = one_query(b"SELECT '\xe9';")
    assert isinstance(got, NotInlinable) and got.reason == "not UTF-8"


def test_non_ascii_only_when_the_encoding_is_certain() -> None:
    assert isinstance(one_query("SELECT 'é';"), OneQuery)
    got = one_query("SELECT 'é';", non_ascii=False)
    assert isinstance(got, NotInlinable) and "encoding" in got.reason
    assert isinstance(one_query("SELECT 'e';", non_ascii=False), OneQuery)


@pytest.mark.slow
def test_size_limit() -> None:
    statement = "SELECT 1;\n"
    big = statement * (MAX_CHARS // len(statement) + 1)
    got = one_query(big)
    assert isinstance(got, NotInlinable) and "larger" in got.reason
    fits = one_query(statement * (MAX_CHARS // len(statement)))
    assert isinstance(fits, OneQuery) and fits.statements == MAX_CHARS // len(statement)


@pytest.mark.parametrize(("variables", "ok"), [
    ({"factor": "7"}, True),
    ({"factor": "t.col + 1"}, True),
    ({"factor": ""}, True),
    ({"factor": "1; DROP TABLE t"}, False),
    ({"factor": "'x"}, False),
    ({"factor": "(1"}, False),
    ({"factor": "1-"}, False),  # glued to a following `-`, the server would see `--`
    ({"factor": "$"}, False),
    ({"factor": ":other"}, False),
    ({"other": "7"}, False),
    ({}, False),
])
def test_unquoted_variables_need_a_certain_neutral_value(
    variables: dict[str, str], ok: bool
) -> None:
    got = one_query("SELECT :factor * 2;", variables=variables)
    assert isinstance(got, OneQuery) is ok, got
    if ok:
        assert isinstance(got, OneQuery) and got.text == f"SELECT :factor * 2{S}"


def test_psql_owned_variables_are_never_vouched_for() -> None:
    got = one_query("SELECT :DBNAME;", variables={"DBNAME": "x"})
    assert isinstance(got, NotInlinable)


@pytest.mark.parametrize(("value", "neutral"), [
    ("abc_1", True), ("1.5", True), ("a b", True), ("é", True),
    ("a'b", False), ('a"b', False), ("a;b", False), ("a\\b", False), ("a/b", False),
    ("a*b", False), ("a-b", False), ("a(b", False), ("a)b", False), ("a$b", False),
    ("a:b", False), ("a\nb", False),
])
def test_neutral_value(value: str, neutral: bool) -> None:
    assert neutral_value(value) is neutral


@pytest.mark.parametrize(("sql", "ends", "wrapper"), [
    ("CREATE TABLE a ();\nCOMMIT;\nSELECT 1;\n", ("COMMIT",), False),
    ("BEGIN;\nCREATE TABLE a ();\n-- done\nCOMMIT;\n-- trailing comment\n", ("COMMIT",), True),
    ("START TRANSACTION;\nSELECT 1;\nEND;\n", ("END",), True),
    ("begin; select 1; commit; select 2;", ("COMMIT",), False),
    ("SAVEPOINT s; SELECT 1; ROLLBACK TO SAVEPOINT s; ROLLBACK WORK TO s; RELEASE s;", (), False),
    ("SELECT 1; rollback transaction;", ("ROLLBACK",), False),
    ("SELECT 'commit;'; /* commit; */ -- commit;\n", (), False),
    ("DO $$ BEGIN COMMIT; END $$;\n", (), False),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;\n", (), False),
    ("BEGIN;\nCREATE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC SELECT 1; END;\n"
     "COMMIT;\n", ("COMMIT",), True),
    ("SELECT 1;\n\\c other\nSELECT 2;\n", ("\\c",), False),
    ("BEGIN;\n\\connect other\nCOMMIT;\n", ("\\connect", "COMMIT"), False),
    ("SELECT 1 \\gset\nABORT;\n", ("ABORT",), False),  # not lexable: line starts
    ("PREPARE TRANSACTION 'x';", ("PREPARE TRANSACTION",), False),
])
def test_transaction_control(sql: str, ends: tuple[str, ...], wrapper: bool) -> None:
    from db_tool.sqlsplit import TxControl, transaction_control

    assert transaction_control(sql) == TxControl(ends, wrapper)


# ------------------------------------------------------------------- script_pieces: psql's view


def test_script_pieces_understands_quotes_comments_and_meta_commands() -> None:
    from db_tool.commands.testing import classify

    text = (
        "-- COMMIT;\nBEGIN;\nSELECT 'a;COMMIT', E'it\\'s;', \"x;y\", $$ ; COMMIT; $$;\n"
        "/* COMMIT; /* nested; */ */ SELECT $f$ ; $f$;\n\\echo ; COMMIT\n"
        "DO $body$ BEGIN COMMIT; END $body$;\nSELECT 1 \\gset\nROLLBACK;\n"
    )
    pieces = sqlscript.script_pieces(text)
    kinds = [classify(p.text) if not p.meta else "meta" for p in pieces]
    assert kinds == ["begin", "other", "other", "meta", "other", "other", "meta", "rollback"]
    assert [p.line for p in pieces] == [2, 3, 4, 5, 6, 7, 7, 8]
    assert pieces[2].text == "SELECT $f$ ; $f$"  # the comment before it is not part of it
    assert [p.text for p in pieces if p.meta] == ["\\echo ; COMMIT", "\\gset"]


def test_script_pieces_follow_psql_where_the_one_query_rewrite_refuses() -> None:
    """A `;` inside parentheses does not end a statement; a meta-command mid-statement runs at
    once and the statement goes on; backslashes in '...' are plain; an unterminated string
    runs to the end."""
    text = "SELECT (1;2) /* c */ + 3 \\i other.sql\n;SELECT 'a\\' AS b;\nSELECT 'open"
    assert [(p.line, p.text) for p in sqlscript.script_pieces(text)] == [
        (1, "\\i other.sql"), (1, "SELECT (1;2)   + 3"), (2, "SELECT 'a\\' AS b"),
        (3, "SELECT 'open"),
    ]
    assert sqlscript.script_pieces("") == []
    assert sqlscript.script_pieces("-- only\n/* comments */\n") == []

