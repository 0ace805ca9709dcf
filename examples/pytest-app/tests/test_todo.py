"""Every test gets its own copy of the database: bundle + db/src + test-data.sql."""

import psycopg
import pytest

import todo


def test_the_test_data_is_there(db_conn):
    assert todo.open_tasks(db_conn) == ["write the tests", "ship it"]


def test_add_then_finish(db_conn):
    task = todo.add(db_conn, "buy milk")
    assert todo.open_tasks(db_conn)[-1] == "buy milk"
    assert todo.finish(db_conn, task) is True
    assert todo.finish(db_conn, task) is False


def test_what_the_previous_test_added_is_gone(db_conn):
    assert "buy milk" not in todo.open_tasks(db_conn)


def test_empty_titles_are_refused(db_conn):
    with pytest.raises(psycopg.errors.CheckViolation):
        todo.add(db_conn, "")


def test_a_second_connection_sees_committed_work(db_url, db_conn):
    todo.add(db_conn, "shared")
    with psycopg.connect(db_url) as other:
        assert "shared" in todo.open_tasks(other)


@pytest.mark.db_tool(share="class")
class TestOneDatabaseForTheClass:
    """Tests in this class share one database (so the order matters)."""

    def test_first_adds(self, db_tool_database):
        db_tool_database.query("INSERT INTO todo.task (title) VALUES ('from the first')")

    def test_second_sees_it(self, db_tool_database):
        rows = db_tool_database.query("SELECT count(*) FROM todo.task")
        assert rows == [["3"]]
