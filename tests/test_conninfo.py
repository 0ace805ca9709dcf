"""Passwords never reach a child's argv (issue 9 item 5): the URL is split, the password goes
to PGPASSWORD. Unit cases for the splitter and the psql argv builder, then real commands
against a cluster that demands a password, with every psql argv recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from db_tool import conninfo, psql
from db_tool.conninfo import build_url, without_password
from db_tool.settings import login_name
from tests.conftest import PG
from tests.helpers import run_cmd, script

SECRET = "s3:cr@t/pw"  # characters that must be percent-encoded in a URL


@pytest.mark.parametrize(("url", "cleaned", "password"), [
    ("postgresql://u:pw@host:5432/db", "postgresql://u@host:5432/db", "pw"),
    ("postgres://u:p%40ss%3A%2F@h/db?sslmode=require", "postgres://u@h/db?sslmode=require",
     "p@ss:/"),
    ("postgresql://u:@h/db", "postgresql://u@h/db", ""),
    ("postgresql://u@h/db?password=x%26y&sslmode=disable", "postgresql://u@h/db?sslmode=disable",
     "x&y"),
    ("postgresql://u@h/db?password=x", "postgresql://u@h/db", "x"),
    ("postgresql://u:pw@h1:1,h2:2/db", "postgresql://u@h1:1,h2:2/db", "pw"),
    ("postgresql://u:pw@/db?host=/tmp/sock", "postgresql://u@/db?host=/tmp/sock", "pw"),
    ("postgresql://u@h/db", "postgresql://u@h/db", None),
    ("postgresql:///db?host=/s&port=5", "postgresql:///db?host=/s&port=5", None),
    ("host=/tmp dbname=x password=secret user=u", "host=/tmp dbname=x user=u", "secret"),
    ("host=/tmp password='it\\'s a \\\\pw' dbname=x", "host=/tmp dbname=x", "it's a \\pw"),
    ("dbname=x", "dbname=x", None),
    ("sqlite:///tmp/x.db", "sqlite:///tmp/x.db", None),
])
def test_without_password_splits_every_form(url: str, cleaned: str,
                                             password: str | None) -> None:
    assert without_password(url) == (cleaned, password)


def test_psql_argv_has_no_password_and_env_carries_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    url = "postgresql://me:hunter2@db.example/app?password=hunter3&sslmode=require"
    argv = psql.base_argv(url)
    assert not any("hunter" in a for a in argv)
    assert "postgresql://me@db.example/app?sslmode=require" in argv
    # The query parameter comes last, so libpq would have used it: so do we.
    assert psql.env(url=url)["PGPASSWORD"] == "hunter3"
    assert "PGPASSWORD" not in psql.env(url="postgresql://me@db.example/app")


@pytest.fixture
def password_cluster(cluster_env: dict[str, str]) -> tuple[dict[str, str], str]:
    """A cluster whose socket asks for a password (scram), and a URL carrying it."""
    from urllib.parse import quote

    r = run_cmd([script("postgres-init")], cluster_env)
    assert r.returncode == 0, r.stderr
    wd = Path(cluster_env["PG_WORKING_DIR"])
    trust_url = build_url(login_name(), "testdb", wd / "sock", int(cluster_env["PG_PORT"]))
    psql.run_sql(trust_url, f"ALTER ROLE CURRENT_USER PASSWORD '{SECRET}'")
    hba = wd / "data" / "pg_hba.conf"
    hba.write_text("local all all scram-sha-256\n")
    psql.run_sql(trust_url, "SELECT pg_reload_conf()")
    url = trust_url.replace(f"{quote(login_name())}@", f"{quote(login_name())}:"
                            f"{quote(SECRET, safe='')}@", 1)
    assert SECRET not in url and quote(SECRET, safe="") in url
    return cluster_env, url


def _recording_psql(tmp_path: Path, real_psql: str) -> tuple[Path, Path]:
    """A psql on PATH that appends its argv (one line per call) to a log, then runs the real
    one: every psql any of our commands starts is seen."""
    bindir = tmp_path / "recbin"
    bindir.mkdir()
    log = tmp_path / "argv.log"
    wrapper = bindir / "psql"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" >> "{log}"; printf "\\n" >> "{log}"\n'
                       f'exec "{real_psql}" "$@"\n')
    wrapper.chmod(0o755)
    return bindir, log


def test_no_password_in_any_psql_argv_of_database_and_migrator(
    password_cluster: tuple[dict[str, str], str], tmp_path: Path, pg: PG,
) -> None:
    env, url = password_cluster
    from urllib.parse import quote

    bindir, log = _recording_psql(tmp_path, pg.install.tool("psql"))
    proj = tmp_path / "proj"
    (proj / "db" / "src").mkdir(parents=True)
    (proj / "db" / "test").mkdir()
    (proj / "db" / "migration" / "20260101000000-one").mkdir(parents=True)
    (proj / "db" / "src" / "entrypoint.sql").write_text("SELECT 1;\n")
    (proj / "db" / "test" / "test.sql").write_text(
        "\\! tr '\\0' ' ' < /proc/$PPID/cmdline; echo; printenv PGPASSWORD\n"
    )
    (proj / "db" / "migration" / "20260101000000-one" / "up.sql").write_text(
        "CREATE TABLE hectic_t () INHERITS (hectic.created_at);\n")
    (proj / "db" / "migration" / "20260101000000-one" / "down.sql").write_text(
        "DROP TABLE hectic_t;\n")
    run_env = {k: v for k, v in env.items() if k not in ("PG_BIN_DIR", "PGPASSWORD")}
    run_env.update(PATH=f"{bindir}:{env['PATH']}", LOCAL_DIR=str(proj),
                   MIGRATION_DIR=str(proj / "db" / "migration"))
    steps = [
        [script("database"), "--url", url, "hydrate", "-H"],
        [script("database"), "--url", url, "hydrate"],
        [script("migrator"), "--db-url", url, "init"],
        [script("database"), "migrator", "--url", url, "migrate", "up"],
        [script("database"), "-i", "hectic.migration", "--url", url, "test"],
    ]
    outputs = []
    for argv in steps:
        r = run_cmd(argv, run_env)
        assert r.returncode == 0, (argv, r.stdout, r.stderr)
        outputs.append(r.stdout + r.stderr)
    r = run_cmd([script("migrator"), "status"], {**run_env, "DB_URL": url})
    assert r.returncode == 0, r.stderr
    calls = [c for c in log.read_text().split("\n") if c]
    assert len(calls) >= len(steps)
    for call in calls:
        assert SECRET not in call and quote(SECRET, safe="") not in call, call
    # test.sql printed psql's own command line (no password) and the env it was given.
    test_out = outputs[-1]
    assert "-X --no-psqlrc -d postgresql://" in test_out
    assert quote(SECRET, safe="") not in test_out
    assert SECRET in test_out  # printenv PGPASSWORD: the password travelled by environment


@pytest.mark.parametrize(
    "text", ["a%20b", "%zz", "%E2%82%AC", "%ff", "x%2", "%41%42", "é%C3%A9", ""]
)
def test_unpct_decodes_as_urllib_unquote_without_importing_it(text: str) -> None:
    from urllib.parse import unquote

    assert conninfo.unpct(text) == unquote(text)


def test_unpct_strict_refuses_bytes_that_are_no_utf8() -> None:
    with pytest.raises(UnicodeDecodeError):
        conninfo.unpct("%ff", errors="strict")
