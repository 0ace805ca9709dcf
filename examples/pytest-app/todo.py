"""The example application: a to-do list kept in PostgreSQL (psycopg 3)."""

from __future__ import annotations

from typing import Any


def add(conn: Any, title: str) -> int:
    with conn.cursor() as cur:
        cur.execute("INSERT INTO todo.task (title) VALUES (%s) RETURNING id", (title,))
        (task_id,) = cur.fetchone()
    conn.commit()
    return int(task_id)


def finish(conn: Any, task_id: int) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT todo.finish(%s)", (task_id,))
        (done,) = cur.fetchone()
    conn.commit()
    return bool(done)


def open_tasks(conn: Any) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT title FROM todo.task WHERE NOT done ORDER BY id")
        return [title for (title,) in cur.fetchall()]
