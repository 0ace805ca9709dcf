"""`database deploy|hydrate|patch|test|check|status|log|pull_staging`: options, errors, exit codes,
and the pure pieces behind them. Runs in-process (main(argv, env=...)); SQL against the
session cluster (db_url), no cluster of its own."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from db_tool.cli import db_workflow
from db_tool.cli.context import Context
from db_tool.cli.database import main
from db_tool.commands import logs, staging, testing
from db_tool.errors import Error
from db_tool.project_settings import ProjectSettings
from tests.conftest import PG, Cli

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples"
SUBS = ("deploy", "hydrate", "patch", "test", "check", "status", "log", "pull_staging")
STAGING = {
    "STAGING_SSH_HOST": "staging.example.org",
    "STAGING_DB_URL": "postgresql://app@localhost/app",
    "STAGING_DUMP_TABLES": "public.item",
    "STAGING_DUMP_FLAGS": "--data-only",
}


def base_env(**extra: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "HOME", "XDG_CACHE_HOME", "PG_BIN_DIR",
                                      "PG_OS_USER", "LANG") if k in os.environ}
    env.update(extra)
    return env


@pytest.fixture
def project(tmp_path: Path) -> Path:
    dest = tmp_path / "project"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("focus"))
    return dest


def psql(url: str, sql: str) -> str:
    from db_tool import psql as p

    return "\n".join("|".join(r) for r in p.query(url, sql))


# ------------------------------------------------------------------------ options and help


@pytest.mark.parametrize("sub", SUBS)
def test_every_subcommand_has_its_own_help(sub: str, cli: Cli) -> None:
    rc, out, _ = cli("database", [sub, "--help"], base_env())
    assert rc == 0
    assert out.startswith(f"usage: database {sub}")
    rc, out2, _ = cli("database", [sub, "-h"], base_env())
    assert (rc, out2) == (0, out)


@pytest.mark.parametrize("sub", SUBS)
def test_unknown_option_is_exit_9_naming_it(sub: str, tmp_path: Path,
                                            cli: Cli) -> None:
    rc, _, err = cli("database", [sub, "--frobnicate"], base_env(LOCAL_DIR=str(tmp_path)))
    assert rc == 9
    assert "--frobnicate" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [["deploy", "extra"], ["log", "a", "b"], ["status", "x"],
                                  ["check", "-P", "now"], ["hydrate", "--mock=1"]])
def test_unexpected_arguments_are_exit_9(argv: list[str], tmp_path: Path,
                                         cli: Cli) -> None:
    rc, _, _ = cli("database", argv, base_env(LOCAL_DIR=str(tmp_path)))
    assert rc == 9


def test_options_are_parsed_into_keywords() -> None:
    from db_tool.cli.parser import parse
    from db_tool.cli.spec import DATABASE

    opts, _ = parse(DATABASE.sub("deploy"), ["-P", "--no-hydrate", "-m", "--reuse", "-c"])
    assert opts == {"no_patch": True, "no_hydrate": True, "mock": True, "reuse": True,
                    "cleanup": True}
    opts, _ = parse(DATABASE.sub("hydrate"), ["--no-hook", "--mock"])
    assert opts == {"no_hook": True, "mock": True}
    opts, _ = parse(DATABASE.sub("patch"), ["-e"])
    assert opts == {"edit": True}


# ------------------------------------ no LOCAL_DIR: the current directory (${LOCAL_DIR:-$PWD})


def test_without_local_dir_the_current_directory_is_the_project(
    project: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli,
    db_url: str,
) -> None:
    monkeypatch.chdir(project)
    env = base_env(PGURL=db_url)
    rc, _, err = cli("database", ["hydrate"], env)
    assert rc == 0, err
    assert str(project / "db" / "src" / "entrypoint.sql") in err
    assert psql(db_url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'hectic'") == "1"
    rc, _, err = cli("database", ["patch"], env)
    assert rc == 0, err
    assert str(project / "test-data.sql") in err


def test_without_local_dir_test_looks_for_db_test_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli,
    db_url: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    rc, _, err = cli("database", ["test"], base_env(PGURL=db_url))
    assert rc == 1
    assert str(tmp_path / "db" / "test" / "test.sql") in err
    assert list(tmp_path.iterdir()) == []


def test_test_from_a_deleted_current_directory_is_a_one_line_error(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    cli: Cli, db_url: str,
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    rc, _, err = cli("database", ["test"], base_env(LOCAL_DIR=str(project), PGURL=db_url))
    assert rc == 1
    assert "current directory no longer exists" in err and "Traceback" not in err


@pytest.mark.parametrize("sub", ["status", "log"])
def test_status_and_log_without_local_dir_use_the_current_directory(
    sub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    cli: Cli,
) -> None:
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli("database", [sub], base_env())
    assert str(tmp_path / "focus" / "postgresql") in out + err
    if sub == "status":
        assert rc == 0 and "not initialised" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sub", ["hydrate", "patch", "test"])
def test_commands_on_a_database_need_a_url(sub: str, project: Path,
                                           cli: Cli) -> None:
    rc, _, err = cli("database", [sub], base_env(LOCAL_DIR=str(project)))
    assert rc == 3
    line = err.splitlines()[0]
    assert "no database URL" in line
    for source in ("--url", "PGURL", "DB_URL", str(project / "focus" / "postgresql")):
        assert source in line, source


def test_url_precedence_is_flag_then_pgurl_then_db_url() -> None:
    env = {"PGURL": "pg", "DB_URL": "db"}
    assert ProjectSettings.from_env(env).url == "pg"
    assert ProjectSettings.from_env({"DB_URL": "db"}).url == "db"
    assert ProjectSettings.from_env(env, url="flag").url == "flag"


@pytest.mark.parametrize("missing", list(staging.REQUIRED))
def test_pull_staging_names_the_first_missing_variable_before_anything_else(
    missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    cli: Cli,
) -> None:
    monkeypatch.chdir(tmp_path)
    index = staging.REQUIRED.index(missing)
    env = base_env(**{k: v for k, v in STAGING.items() if staging.REQUIRED.index(k) < index})
    # No LOCAL_DIR either: the staging variables are checked first.
    rc, _, err = cli("database", ["pull_staging"], env)
    assert rc == 3
    assert missing in err.splitlines()[0]
    for later in staging.REQUIRED[index + 1:]:
        assert f"{later} is not set" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["STAGING_DUMP_TABLES", "STAGING_DUMP_FLAGS"])
def test_pull_staging_empty_value_is_missing_as_in_the_original(name: str) -> None:
    with pytest.raises(Error) as exc:
        staging.StagingConfig.from_env({**STAGING, name: "  "})
    assert exc.value.exit_code == 3 and f"{name} is not set" in exc.value.message


def test_inherits_missing_table_is_exit_5(db_url: str, project: Path,
                                          cli: Cli) -> None:
    psql(db_url, "CREATE TABLE public.present (id int)")
    env = base_env(LOCAL_DIR=str(project), PG_WORKING_DIR=str(project / "wd"))
    rc, _, err = cli("database", ["-u", db_url, "status", "-i", "public.absent"], env)
    assert rc == 5 and "public.absent" in err
    rc, out, _ = cli("database", ["--inherits", "public.present", "--url", db_url, "status",
                                  "--json"], env)
    assert rc == 0 and json.loads(out)["running"] is False


# ------------------------------------------------------------------------------- hydrate


@pytest.mark.slow
def test_hydrate_applies_bundle_secrets_and_entrypoint(db_url: str, project: Path,
                                                       cli: Cli) -> None:
    env = base_env(LOCAL_DIR=str(project), PGURL=db_url,
                   HECTIC_DOTENV_CONTENT="ONE=1\nTWO='two words'\n")
    rc, _, err = cli("database", ["hydrate"], env)
    assert rc == 0, err
    assert "2 secret(s) from HECTIC_DOTENV_CONTENT" in err
    assert psql(db_url, "SELECT hectic.get_secret('TWO')") == "two words"
    assert psql(db_url, "SELECT count(*) FROM shop.currency") == "4"
    assert psql(db_url, "SELECT to_regproc('shop.payment_provider_status') IS NULL") == "t"
    # each step says what it does and how long it took
    assert "apply the hectic bundle: done in" in err
    # --mock: USE_MOCK=1 reaches the SQL
    rc, _, err = cli("database", ["hydrate", "--mock"], env)
    assert rc == 0, err
    assert psql(db_url, "SELECT shop.payment_provider_status(1)") == "settled (mock)"


@pytest.mark.slow
def test_hydrate_dotenv_falls_back_from_unreadable_file_to_env_file(
    db_url: str, project: Path, cli: Cli
) -> None:
    env = base_env(LOCAL_DIR=str(project), PGURL=db_url, ENVIRONMENT="development",
                   HECTIC_DOTENV_FILE=str(project / "nope.env"))
    rc, _, err = cli("database", ["hydrate"], env)
    assert rc == 0, err
    assert "nope.env is not readable" in err
    assert f"from {project / '.env.development'}" in err
    assert psql(db_url, "SELECT hectic.get_secret('PAYMENT_API_KEY')") == "dev-not-a-real-key"


@pytest.mark.slow
def test_hydrate_without_dotenv_loads_no_secrets(db_url: str, project: Path,
                                                 cli: Cli) -> None:
    rc, _, err = cli("database", ["hydrate"], base_env(LOCAL_DIR=str(project), PGURL=db_url))
    assert rc == 0, err
    assert "no dotenv source" in err


@pytest.mark.slow
def test_hydrate_with_an_empty_dotenv_keeps_the_secrets(db_url: str, project: Path,
                                                        cli: Cli) -> None:
    """As the original: an empty dotenv (only newlines) loads nothing."""
    env = base_env(LOCAL_DIR=str(project), PGURL=db_url, HECTIC_DOTENV_CONTENT="KEEP=1\n")
    assert cli("database", ["hydrate"], env)[0] == 0
    rc, _, err = cli("database", ["hydrate"], {**env, "HECTIC_DOTENV_CONTENT": "\n\n"})
    assert rc == 0, err
    assert "the dotenv from HECTIC_DOTENV_CONTENT is empty, no secrets loaded" in err
    assert psql(db_url, "SELECT hectic.get_secret('KEEP')") == "1"


def test_hydrate_no_hook_skips_bundle_and_failure_says_where_the_output_is(
    db_url: str, project: Path, tmp_path: Path, cli: Cli
) -> None:
    log = tmp_path / "logs" / "hydrate.log"
    env = base_env(LOCAL_DIR=str(project), PGURL=db_url, HYDRATE_LOG=str(log),
                   HECTIC_DOTENV_CONTENT="A=1")
    rc, _, err = cli("database", ["hydrate", "--no-hook"], env)
    # without the bundle, INHERITS (hectic.created_at) cannot work
    assert rc == 1
    assert f"check {log} for more" in err
    assert 'schema "hectic" does not exist' in err
    # psql's own error line (file and line) is on stderr, as the original shows it; the log
    # holds psql's stdout only (the original's `> $HYDRATE_LOG`)
    assert "sql:" in err and ": ERROR:" in err
    assert "ERROR" not in log.read_text()
    assert psql(db_url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'hectic'") == "0"


def test_hydrate_log_defaults_under_pg_log_path(db_url: str, project: Path, tmp_path: Path,
                                                cli: Cli) -> None:
    (project / "db" / "src" / "entrypoint.sql").write_text("SELECT 'hello from entrypoint';\n")
    env = base_env(LOCAL_DIR=str(project), PGURL=db_url, PG_LOG_PATH=str(tmp_path / "pglog"))
    rc, out, _ = cli("database", ["hydrate", "-H"], env)
    assert rc == 0
    assert "hello from entrypoint" not in out
    assert "hello from entrypoint" in (tmp_path / "pglog" / "hydrate.stdout.log").read_text()


def test_hydrate_output_goes_to_stdout_by_default(db_url: str, project: Path,
                                                  cli: Cli) -> None:
    (project / "db" / "src" / "entrypoint.sql").write_text("SELECT 'hello from entrypoint';\n")
    rc, out, _ = cli("database", ["hydrate", "-H"], base_env(LOCAL_DIR=str(project), PGURL=db_url))
    assert rc == 0
    assert "hello from entrypoint" in out


def test_hydrate_missing_entrypoint_is_exit_1_naming_it(db_url: str, project: Path,
                                                        cli: Cli) -> None:
    (project / "db" / "src" / "entrypoint.sql").unlink()
    rc, _, err = cli("database", ["hydrate"], base_env(LOCAL_DIR=str(project), PGURL=db_url))
    assert rc == 1
    assert str(project / "db" / "src" / "entrypoint.sql") in err
    assert psql(db_url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'hectic'") == "0"


# --------------------------------------------------------------------------------- patch


def test_patch_creates_a_missing_file_and_applies_it(db_url: str, project: Path,
                                                     tmp_path: Path,
                                                     cli: Cli) -> None:
    profile = tmp_path / "profile"
    env = base_env(LOCAL_DIR=str(project), PGURL=db_url, PROFILE_DIR=str(profile))
    rc, _, err = cli("database", ["patch"], env)
    assert rc == 0, err
    assert (profile / "test-data.sql").read_text() == ""  # the original's `touch`
    (profile / "test-data.sql").write_text("CREATE TABLE patched (x int); INSERT INTO patched "
                                           "VALUES (7);\n")
    rc, _, err = cli("database", ["patch"], env)
    assert rc == 0, err
    assert psql(db_url, "SELECT x FROM patched") == "7"


def test_patch_failure_is_exit_1_naming_the_log(db_url: str, project: Path, tmp_path: Path,
                                                cli: Cli) -> None:
    (project / "test-data.sql").write_text("SELECT 1/0;\n")
    log = tmp_path / "patch.log"
    env = base_env(LOCAL_DIR=str(project), PGURL=db_url, PATCH_LOG=str(log))
    rc, _, err = cli("database", ["patch"], env)
    assert rc == 1
    assert f"check {log} for more" in err and "division by zero" in err
    assert "test-data.sql:1: ERROR:" in err


def test_patch_edit_opens_editor_and_applies_nothing(project: Path, tmp_path: Path,
                                                     cli: Cli) -> None:
    (project / "test-data.sql").unlink()
    editor = "sh -c 'echo \"-- edited\" >> \"$0\"'"
    env = base_env(LOCAL_DIR=str(project), EDITOR=editor)  # no URL: nothing is applied
    rc, _, err = cli("database", ["patch", "--edit"], env)
    assert rc == 0, err
    assert (project / "test-data.sql").read_text().endswith("-- edited\n")
    rc, _, err = cli("database", ["patch", "-e"], base_env(LOCAL_DIR=str(project), EDITOR="false"))
    assert rc == 1 and "false exited with 1" in err


# ---------------------------------------------------------------------------------- test


def write_test(project: Path, sql: str) -> None:
    (project / "db" / "test" / "test.sql").write_text(sql)


def test_test_missing_file_is_exit_1_naming_it(db_url: str, project: Path,
                                               cli: Cli) -> None:
    (project / "db" / "test" / "test.sql").unlink()
    rc, _, err = cli("database", ["test"], base_env(LOCAL_DIR=str(project), PGURL=db_url))
    assert rc == 1
    assert str(project / "db" / "test" / "test.sql") in err


def test_test_counts_tap_and_leaves_no_trace(db_url: str, project: Path,
                                             cli: Cli) -> None:
    psql(db_url, "CREATE TABLE kept (x int)")
    write_test(project, (
        "CREATE TABLE trace (x int);\nINSERT INTO kept VALUES (1);\nCREATE ROLE db_tool_trace;\n"
        "SELECT '1..3';\nSELECT 'ok 1 - first';\nSELECT 'not ok 2 - second';\n"
        "SELECT 'not ok 3 - later # TODO not yet';\n"
    ))
    rc, out, err = cli("database", ["test"], base_env(LOCAL_DIR=str(project), PGURL=db_url))
    assert rc == 1
    assert "ok 1 - first" in out
    assert "1 passed, 1 failed, 1 todo, 3 planned" in err
    assert "not ok 2 - second" in err
    assert psql(db_url, "SELECT to_regclass('trace') IS NULL, (SELECT count(*) FROM kept), "
                "(SELECT count(*) FROM pg_roles WHERE rolname = 'db_tool_trace')") == "t|0|0"


def test_test_passes_with_plain_sql_and_fails_on_sql_error(
    db_url: str, project: Path, cli: Cli
) -> None:
    env = base_env(LOCAL_DIR=str(project), PGURL=db_url)
    write_test(project, "SELECT 1;\n")
    rc, _, err = cli("database", ["test"], env)
    assert rc == 0 and "PASSED — no errors" in err
    write_test(project, "SELECT 'ok 1';\nSELECT * FROM missing_table;\nSELECT 'ok 2';\n")
    rc, _, err = cli("database", ["test"], env)
    assert rc == 1 and "missing_table" in err


def test_test_plan_mismatch_fails(db_url: str, project: Path,
                                  cli: Cli) -> None:
    write_test(project, "SELECT '1..3';\nSELECT 'ok 1';\nSELECT 'ok 2';\n")
    rc, _, err = cli("database", ["test"], base_env(LOCAL_DIR=str(project), PGURL=db_url))
    assert rc == 1 and "planned 3 tests but 2 ran" in err


def test_test_pgtap_style_begin_rollback_stays_in_the_transaction(
    db_url: str, project: Path, cli: Cli
) -> None:
    write_test(project, "BEGIN;\nSELECT '1..1';\nCREATE TABLE t1 (x int);\nSELECT 'ok 1';\n"
                        "ROLLBACK;\n")
    rc, _, err = cli("database", ["test"], base_env(LOCAL_DIR=str(project), PGURL=db_url))
    assert rc == 0, err
    assert "rolled-back transaction" in err
    assert psql(db_url, "SELECT to_regclass('t1') IS NULL") == "t"


@pytest.mark.slow
def test_test_that_commits_runs_in_a_copy_and_leaves_no_trace(
    db_url: str, project: Path, cli: Cli
) -> None:
    write_test(project, "CREATE TABLE committed (x int);\nCOMMIT;\nINSERT INTO committed "
                        "VALUES (1);\nSELECT 'ok 1 - ' || count(*) FROM committed;\n")
    rc, out, err = cli("database", ["test"], base_env(LOCAL_DIR=str(project), PGURL=db_url))
    assert rc == 0, err
    assert "ok 1 - 1" in out
    assert "throw-away copy" in err
    assert psql(db_url, "SELECT to_regclass('committed') IS NULL") == "t"
    assert psql(db_url, "SELECT count(*) FROM pg_database WHERE datname LIKE "
                "'%dbtool_test%'") == "0"


@pytest.mark.slow
def test_test_that_commits_is_refused_while_others_are_connected(
    db_url: str, project: Path, cli: Cli
) -> None:
    from db_tool import psql as p

    write_test(project, "CREATE TABLE committed (x int);\nCOMMIT;\n")
    other = subprocess.Popen(
        [*p.base_argv(db_url), "-c", "SELECT pg_sleep(30)"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env={**os.environ, "PGAPPNAME": "the-app"},
    )
    try:
        for _ in range(500):
            if psql(db_url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                    "'the-app'") == "1":
                break
        rc, _, err = cli("database", ["test"], base_env(LOCAL_DIR=str(project), PGURL=db_url))
    finally:
        other.kill()
        other.wait()
    assert rc == 1
    assert "the-app" in err and "COMMIT" in err
    assert psql(db_url, "SELECT to_regclass('committed') IS NULL") == "t"


def test_parse_tap() -> None:
    assert testing.parse_tap("hello\n(1 row)\n") is None
    s = testing.parse_tap("1..4\nok 1 - a\nnot ok 2 - b\nok 3 # SKIP no db\n"
                          "not ok 4 # TODO later\n# diag\n")
    assert s is not None
    assert (s.planned, s.passed, s.failed, s.todo, s.skipped) == (4, 2, 1, 1, 1)
    assert s.failures == ("not ok 2 - b",) and not s.ok
    aligned = testing.parse_tap("   plan\n------\n 1..2\n ok 1\n ok 2\n")
    assert aligned is not None and aligned.ok and aligned.ran == 2
    assert not testing.parse_tap("1..3\nok 1\n").ok  # type: ignore[union-attr]
    assert testing.parse_tap("okay then\nnot okay\n") is None




@pytest.mark.parametrize("sql, hazard", [
    ("SELECT 1;", None),
    ("BEGIN; SELECT 1; ROLLBACK;", None),
    ("BEGIN; SELECT 1; ROLLBACK; BEGIN; SELECT 2; ROLLBACK;", None),
    ("SAVEPOINT a; SELECT 1; ROLLBACK TO SAVEPOINT a; SELECT 2;", None),
    ("BEGIN; SELECT 1; ROLLBACK AND CHAIN; SELECT 2;", None),
    ("SELECT 1; COMMIT;", "COMMIT"),
    ("SELECT 1; END;", "END"),
    ("BEGIN; ROLLBACK; INSERT INTO t VALUES (1);", "after a ROLLBACK"),
    ("VACUUM t;", "VACUUM"),
    ("CREATE INDEX CONCURRENTLY i ON t (x);", "cannot run inside"),
    ("\\c other\nSELECT 1;", "\\c opens a new session"),
])
def test_wrapper_hazard(sql: str, hazard: str | None, tmp_path: Path) -> None:
    path = tmp_path / "test.sql"
    path.write_text(sql)
    found = testing.wrapper_hazard(path, tmp_path)
    if hazard is None:
        assert found is None
    else:
        assert found is not None and hazard in found


def test_wrapper_hazard_follows_includes(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.sql").write_text("SELECT 1;\nCOMMIT;\n")
    (tmp_path / "sub" / "loop.sql").write_text("\\ir loop.sql\n")
    (tmp_path / "test.sql").write_text("\\ir sub/loop.sql\n\\i sub/inner.sql\n")
    found = testing.wrapper_hazard(tmp_path / "test.sql", tmp_path)
    assert found is not None and "inner.sql:2" in found


def test_url_with_database() -> None:
    u = testing.url_with_database("postgresql://me@/db?host=/x%20y/sock&port=5&dbname=z", "a b")
    assert u == "postgresql://me@/a%20b?host=/x%20y/sock&port=5"
    assert testing.url_with_database("host=/s dbname=x", "it's") == "host=/s dbname=x " \
        "dbname='it\\'s'"


# ------------------------------------------------------------------------------ staging


def test_remote_command_quotes_every_word_for_the_remote_shell() -> None:
    import shlex

    cfg = staging.StagingConfig.from_env({
        **STAGING, "STAGING_DB_URL": "postgresql://u:p'w@h/db?sslmode=require&x=$HOME",
        "STAGING_DUMP_TABLES": "public.item  shop.\"Odd\"", "STAGING_DUMP_FLAGS":
        "--data-only --exclude-table-data='a b'",
    })
    cmd = staging.remote_command(cfg)
    assert shlex.split(cmd) == [
        "pg_dump", "--data-only", "--exclude-table-data=a b", "-t", "public.item", "-t",
        'shop."Odd"', "--dbname=postgresql://u:p'w@h/db?sslmode=require&x=$HOME",
    ]


def test_render_patch_has_header_dump_and_sequence_resets() -> None:
    cfg = staging.StagingConfig.from_env({**STAGING, "STAGING_DUMP_TABLES": "a b"})
    text = staging.render_patch(cfg, "INSERT INTO a VALUES (1);\n", now=0)
    assert "-- Host:   staging.example.org" in text
    assert "-- Time:   1970-01-01T00:00:00Z (UTC)" in text
    assert "db-tool" in text.splitlines()[0]
    assert "postgresql://app@localhost/app" not in text  # the URL may hold a password
    assert text.index("INSERT INTO a") < text.index("RESET search_path")
    assert text.count("pg_get_serial_sequence") == 2


def test_write_atomically_keeps_mode_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "test-data.sql"
    target.write_text("old")
    target.chmod(0o600)
    staging.write_atomically(target, "new")
    assert target.read_text() == "new"
    assert (target.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["test-data.sql"]


# ---------------------------------------------------------------------------------- log


@pytest.fixture
def log_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    wd = tmp_path / "wd"
    return base_env(PG_WORKING_DIR=str(wd)), wd / "data" / "log"


def test_log_without_log_dir_is_exit_1(log_env: tuple[dict[str, str], Path],
                                       cli: Cli) -> None:
    env, _ = log_env
    rc, _, err = cli("database", ["log"], env)
    assert rc == 1 and "no server log dir" in err


def test_log_with_empty_dir_warns_and_exits_0(log_env: tuple[dict[str, str], Path],
                                              cli: Cli) -> None:
    env, directory = log_env
    directory.mkdir(parents=True)
    rc, _, err = cli("database", ["log", "list"], env)
    assert rc == 0 and "warning: no log files" in err


def test_log_list_index_name_and_substring(log_env: tuple[dict[str, str], Path],
                                           cli: Cli) -> None:
    env, directory = log_env
    directory.mkdir(parents=True)
    names = ["postgresql-2025-01-01_000000.log", "postgresql-2025-01-02_000000.log",
             "postgresql-2025-02-01_000000.log"]
    for i, name in enumerate(names):
        (directory / name).write_text(f"content {i}\n")
        os.utime(directory / name, (1000 + i, 1000 + i))
    rc, out, _ = cli("database", ["log", "list"], env)
    assert rc == 0
    assert [line.split()[:2] for line in out.splitlines()] == [
        ["1", names[0]], ["2", names[1]], ["3", names[2]]]
    # no argument: every file, in `list` order, as the original's concatenation
    assert cli("database", ["log"], env)[1] == "content 0\ncontent 1\ncontent 2\n"
    assert cli("database", ["log", "2"], env)[1] == "content 1\n"
    assert cli("database", ["log", names[0]], env)[1] == "content 0\n"
    assert cli("database", ["log", "02-01"], env)[1] == "content 2\n"
    for selector, message in (("2025-01", "ambiguous: 2025-01 (matches"), ("9", "ambiguous: 9"),
                              ("0", "ambiguous: 0"), ("zzz", "not found or ambiguous: zzz")):
        rc, _, err = cli("database", ["log", selector], env)
        assert rc == 1, selector
        assert message in err and "database log list" in err


def test_log_honours_pg_log_path(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "server.log").write_text("from PG_LOG_PATH\n")
    env = base_env(PG_WORKING_DIR=str(tmp_path / "wd"), PG_LOG_PATH=str(tmp_path / "logs"))
    assert cli("database", ["log"], env)[1] == "from PG_LOG_PATH\n"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_on_a_terminal_goes_through_the_pager(tmp_path: Path,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "wd" / "data" / "log"
    directory.mkdir(parents=True)
    (directory / "a.log").write_text("paged\n")
    env = base_env(PG_WORKING_DIR=str(tmp_path / "wd"), PAGER="sed s/^/PAGER:/")
    ctx = Context(settings=ProjectSettings.from_env(env), stdout=_Tty())
    assert db_workflow.dispatch(ctx, "log", {"follow": False}, []) == 0
    assert "PAGER:paged" in capfd.readouterr().out


def test_log_select_pure() -> None:
    files = [Path("/l/a.log"), Path("/l/ab.log")]
    assert logs.select(files, "a.log") == files[0]  # exact name wins over substrings
    assert logs.select(files, "2") == files[1]
    with pytest.raises(Error, match=r"matches a\.log, ab\.log"):
        logs.select(files, "a")


# ------------------------------------------------------------------------------- status


def test_status_of_a_project_without_cluster(project: Path,
                                             cli: Cli) -> None:
    env = base_env(LOCAL_DIR=str(project))
    rc, out, _ = cli("database", ["status", "--json"], env)
    assert rc == 0
    st = json.loads(out)
    assert st["running"] is False and st["initialised"] is False
    assert st["working_dir"] == str(project / "focus" / "postgresql")
    assert st["migrations_pending"] is None and "not running" in st["migrations_note"]
    assert st["url"].startswith("postgresql://")
    rc, out, _ = cli("database", ["status"], env)
    assert rc == 0 and "not initialised" in out and "migrations:" in out
    assert not (project / "focus").exists()


def test_status_counts_pending_migrations_of_url(db_url: str, project: Path,
                                                 cli: Cli) -> None:
    env = base_env(LOCAL_DIR=str(project))
    rc, out, _ = cli("database", ["--url", db_url, "status", "--json"], env)
    assert rc == 0
    assert json.loads(out)["migrations_pending"] == 2


# ------------------------------------------------------------------------------- deploy


def test_deploy_checks_entrypoint_before_starting_anything(
    project: Path, cli: Cli
) -> None:
    (project / "db" / "src" / "entrypoint.sql").unlink()
    rc, _, err = cli("database", ["deploy"], base_env(LOCAL_DIR=str(project)))
    assert rc == 1 and "entrypoint.sql does not exist" in err
    assert not (project / "focus").exists()
    rc, _, err = cli("database", ["check"], base_env(LOCAL_DIR=str(project)))
    assert rc == 1
    assert not (project / "focus").exists()


# ------------------------------------------------------- the original's variables and cwd


def test_hydrate_entrypoint_variable_and_caller_cwd_as_the_original(
    db_url: str, project: Path, monkeypatch: pytest.MonkeyPatch,
    cli: Cli,
) -> None:
    # HYDRATE_ENTRYPOINT is relative to DATABASE_SOURCE; psql runs where the caller is, so
    # `\i db/src/x.sql` (relative to the project root) works when called from there.
    (project / "db" / "src" / "other.sql").write_text("\\i db/src/part.sql\n")
    (project / "db" / "src" / "part.sql").write_text("CREATE TABLE from_part (x int);\n")
    monkeypatch.chdir(project)
    env = base_env(LOCAL_DIR=str(project), PGURL=db_url, HYDRATE_ENTRYPOINT="other.sql")
    rc, _, err = cli("database", ["hydrate", "-H"], env)
    assert rc == 0, err
    assert psql(db_url, "SELECT to_regclass('public.from_part') IS NOT NULL") == "t"


def test_patch_sql_variable_names_the_patch_file(db_url: str, project: Path, tmp_path: Path,
                                                 cli: Cli) -> None:
    patch = tmp_path / "elsewhere" / "seed.sql"
    patch.parent.mkdir()
    patch.write_text("CREATE TABLE seeded (x int);\n")
    env = base_env(LOCAL_DIR=str(project), PGURL=db_url, PATCH_SQL=str(patch))
    rc, _, err = cli("database", ["patch"], env)
    assert rc == 0, err
    assert psql(db_url, "SELECT to_regclass('public.seeded') IS NOT NULL") == "t"


def test_log_list_prints_the_original_format(log_env: tuple[dict[str, str], Path],
                                             cli: Cli) -> None:
    env, directory = log_env
    directory.mkdir(parents=True)
    for name in ("b.log", "a.log"):
        (directory / name).write_text(name)
    rc, out, _ = cli("database", ["log", "list"], env)
    assert (rc, out) == (0, " 1  a.log\n 2  b.log\n")


def test_check_accepts_reuse_as_the_original() -> None:
    from db_tool.cli.parser import parse
    from db_tool.cli.spec import DATABASE

    opts, _ = parse(DATABASE.sub("check"), ["--reuse", "-m"])
    assert opts["reuse"] and opts["mock"]


def test_test_connection_failure_is_reported_as_one(project: Path, tmp_path: Path,
                                                    cli: Cli) -> None:
    url = f"postgresql://nobody@/testdb?host={tmp_path}&port=5999"
    rc, _, err = cli("database", ["test"], base_env(LOCAL_DIR=str(project), PGURL=url))
    assert rc == 1
    assert "cannot connect to the database" in err
    assert "FAILED" not in err
    assert err.count("error:") == 1 + err.count("psql: error:")


def test_psql_error_reaches_stderr_with_stdout_redirected(db_url: str, project: Path) -> None:
    # x=$(database hydrate 2>&1 >/dev/null): the ERROR line with file and line is in x.
    from tests.helpers import script

    (project / "db" / "src" / "entrypoint.sql").write_text("SELECT 1;\nSELECT 1/0;\n")
    env = base_env(LOCAL_DIR=str(project), PGURL=db_url)
    result = subprocess.run([script("database"), "hydrate", "-H"], env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
                            stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 1
    assert "entrypoint.sql:2: ERROR:  division by zero" in result.stderr
    assert result.stderr.count("database: error:") == 1


@pytest.mark.parametrize("level, shown", [
    ("", {"info", "ok", "warn"}),
    ("info", {"info", "ok", "warn"}),
    ("notice", {"ok", "warn"}),
    ("warn", {"warn"}),
    ("error", set()),
    ("debug", {"debug", "info", "ok", "warn"}),
])
def test_hectic_log_sets_the_lowest_level_shown(level: str, shown: set[str],
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from db_tool import output

    monkeypatch.setenv("HECTIC_LOG", level)
    for name in ("debug", "info", "ok", "warn", "error"):
        getattr(output, name)(f"line-{name}")
    err = capsys.readouterr().err
    assert {n for n in ("debug", "info", "ok", "warn") if f"line-{n}" in err} == shown
    assert "line-error" in err  # errors always show


def test_failed_tests_are_one_error_line(db_url: str, project: Path,
                                         cli: Cli) -> None:
    write_test(project, "SELECT 'ok 1';\nSELECT 'not ok 2 - broken';\nSELECT '1..2';\n")
    rc, _, err = cli("database", ["test"], base_env(LOCAL_DIR=str(project), PGURL=db_url))
    assert rc == 1
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("database: error: tests failed: 1 passed")


def fake_program(bindir: Path, name: str, body: str) -> None:
    bindir.mkdir(exist_ok=True)
    path = bindir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.mark.parametrize("argv", [["-h"], ["--help"], ["help"], ["?"], ["-u", "x", "--help"]])
def test_help_forms_print_the_help_and_exit_0(argv: list[str],
                                              cli: Cli) -> None:
    rc, out, err = cli("database", argv, base_env())
    assert rc == 0
    assert out.startswith("usage: database [-u|--url URL] [-i|--inherits TABLE]...")
    assert "Subcommands:" in out and err == ""


def test_no_arguments_prints_the_help_and_exits_1(cli: Cli) -> None:
    rc, out, err = cli("database", [], base_env())
    assert rc == 1  # help on stdout and exit 1, as the original
    assert err == "" and out.startswith("usage: database ")
    assert cli("database", ["-?"], base_env())[:2] == (0, out)
    rc, _, err = cli("database", ["--frobnicate"], base_env())
    assert rc == 1 and "no subcommand specified" in err


@pytest.mark.parametrize("sub, hint", [("stauts", "did you mean 'status'?"),
                                       ("frobnicate", "use '--help'")])
def test_unknown_subcommand_is_exit_1_as_the_original_with_a_hint(
        sub: str, hint: str, tmp_path: Path, cli: Cli) -> None:
    rc, out, err = cli("database", [sub], base_env(LOCAL_DIR=str(tmp_path)))
    assert rc == 1
    assert "no subcommand specified" in err and repr(sub) in err and hint in err
    assert out == ""
    assert list(tmp_path.iterdir()) == []


def test_unknown_global_option_is_exit_9_naming_it(cli: Cli) -> None:
    rc, _, err = cli("database", ["--frobnicate", "status"], base_env())
    assert rc == 9 and "--frobnicate" in err


@pytest.mark.parametrize("sub", ["init", "cleanup", "bundle", "migrator"])
def test_other_subcommands_have_help_and_name_unknown_options(
    sub: str, tmp_path: Path, cli: Cli
) -> None:
    env = base_env(LOCAL_DIR=str(tmp_path))
    rc, out, _ = cli("database", [sub, "--help"], env)
    assert rc == 0 and out.startswith("usage: ") and sub in out.splitlines()[0]
    rc, _, err = cli("database", [sub, "--frobnicate"], env)
    if sub == "migrator":  # as the original migrator: an option but no subcommand is exit 1
        assert rc == 1 and "no subcommand specified" in err
        rc, _, err = cli("database", [sub, "list", "--frobnicate"], env)
    assert rc == 9 and "--frobnicate" in err
    assert list(tmp_path.iterdir()) == []


def test_diff_log_subcommand_has_help(cli: Cli) -> None:
    rc, out, _ = cli("database", ["diff", "log", "--help"], base_env())
    assert rc == 0 and "database diff log" in out


@pytest.mark.parametrize("form", [["--url", "{u}"], ["--url={u}"], ["-u", "{u}"]])
def test_url_after_the_subcommand(form: list[str], db_url: str, project: Path,
                                  cli: Cli) -> None:
    """--url after the subcommand is the connection: pending migrations are counted in it
    (the cluster of LOCAL_DIR is not running, so without a URL there is no count)."""
    env = base_env(LOCAL_DIR=str(project))
    args = [a.replace("{u}", db_url) for a in form]
    rc, out, err = cli("database", ["status", "--json", *args], env)
    assert rc == 0, err
    assert json.loads(out)["migrations_pending"] == 2
    rc, out, _ = cli("database", ["status", "--json"], env)
    assert json.loads(out)["migrations_pending"] is None


@pytest.mark.slow
def test_inherits_is_repeatable_and_checked_before_the_subcommand_runs(
    db_url: str, project: Path, cli: Cli
) -> None:
    psql(db_url, "CREATE TABLE public.present (id int); CREATE TABLE public.other (id int)")
    patch = project / "test-data.sql"
    patch.unlink()
    env = base_env(LOCAL_DIR=str(project), PGURL=db_url)
    # the second of two tables is missing: named, exit 5, and patch did not run at all
    rc, _, err = cli("database", ["-i", "public.present", "patch", "--inherits",
                                  "public.absent"], env)
    assert rc == 5
    assert "public.absent" in err and "public.present" not in err
    assert not patch.exists()
    # the first one missing is the one named
    rc, _, err = cli("database", ["-i", "public.gone", "-i", "public.absent", "patch"], env)
    assert rc == 5 and "public.gone" in err and "public.absent" not in err
    assert not patch.exists()
    # all present (before and after the subcommand): the subcommand runs
    rc, _, err = cli("database", ["-i", "public.present", "patch", "-i", "public.other"], env)
    assert rc == 0, err
    assert patch.is_file()


@pytest.mark.parametrize("name", ["a b", "x.y.z.w", "other.public.t", '"open', ""])
def test_inherits_that_is_no_table_name_exits_3(
    db_url: str, project: Path, cli: Cli, name: str
) -> None:
    env = base_env(LOCAL_DIR=str(project), PGURL=db_url)
    rc, _, err = cli("database", ["--inherits", name, "patch"], env)
    assert rc == 3, err
    assert err.startswith(f"database: error: --inherits {name!r} is not a table name (")
    assert len(err.strip().splitlines()) == 1




def test_directory_variables_reach_the_commands(db_url: str, project: Path, tmp_path: Path,
                                                cli: Cli) -> None:
    other = tmp_path / "elsewhere"
    (other / "test").mkdir(parents=True)
    (other / "test" / "test.sql").write_text("SELECT 'ok 1 - from DATABASE_DIR';\n")
    env = base_env(LOCAL_DIR=str(project), PGURL=db_url, DATABASE_DIR=str(other))
    rc, out, err = cli("database", ["test"], env)
    assert rc == 0, err
    assert "ok 1 - from DATABASE_DIR" in out and str(other / "test" / "test.sql") in err
    # DATABASE_DIR moves the default DATABASE_SOURCE: no entrypoint there
    rc, _, err = cli("database", ["hydrate", "-H"], env)
    assert rc == 1 and str(other / "src" / "entrypoint.sql") in err

    src = tmp_path / "src"
    src.mkdir()
    (src / "entrypoint.sql").write_text("SELECT 'from DATABASE_SOURCE';\n")
    rc, out, err = cli("database", ["hydrate", "-H"], {**env, "DATABASE_SOURCE": str(src)})
    assert rc == 0, err
    assert "from DATABASE_SOURCE" in out

    migrations = tmp_path / "mig"
    migrations.mkdir()
    (migrations / "20250101000000-one.sql").write_text("-- migrate:up\n-- migrate:down\n")
    rc, out, _ = cli("database", ["--url", db_url, "status", "--json"],
                     {**env, "MIGRATION_DIR": str(migrations)})
    st = json.loads(out)
    assert (st["migration_dir"], st["migrations_pending"]) == (str(migrations), 1)


def test_db_url_alone_and_the_url_precedence_reach_psql(
    db_url: str, project: Path, cli: Cli
) -> None:
    bad = "postgresql://nobody@/nowhere?host=/nonexistent-dir&port=1"
    (project / "test-data.sql").write_text("SELECT current_database() AS db;\n")
    name = db_url.split("@/", 1)[1].split("?", 1)[0]
    cases = [
        ([], {"DB_URL": db_url}),
        ([], {"PGURL": db_url, "DB_URL": bad}),
        (["--url", db_url], {"PGURL": bad, "DB_URL": bad}),
    ]
    for flags, urls in cases:
        rc, out, err = cli("database", [*flags, "patch"], base_env(LOCAL_DIR=str(project), **urls))
        assert rc == 0, (urls, err)
        assert name in out


def test_patch_output_goes_to_stdout_by_default_and_under_pg_log_path(
    db_url: str, project: Path, tmp_path: Path, cli: Cli
) -> None:
    (project / "test-data.sql").write_text("SELECT 'patched here';\n")
    env = base_env(LOCAL_DIR=str(project), PGURL=db_url)
    rc, out, _ = cli("database", ["patch"], env)
    assert rc == 0 and "patched here" in out
    logs = tmp_path / "pglog"
    rc, out, err = cli("database", ["patch"], {**env, "PG_LOG_PATH": str(logs)})
    assert rc == 0, err
    assert "patched here" not in out
    assert "patched here" in (logs / "patch.stdout.log").read_text()
    assert str(logs / "patch.stdout.log") in err


def test_hydrate_failure_on_stdout_says_where_the_output_is(
    db_url: str, project: Path, cli: Cli
) -> None:
    (project / "db" / "src" / "entrypoint.sql").write_text("SELECT 1/0;\n")
    rc, out, err = cli("database", ["hydrate", "-H"],
                       base_env(LOCAL_DIR=str(project), PGURL=db_url))
    assert rc == 1
    assert "division by zero" in err and "division by zero" not in out  # stderr, as the original
    assert "check stdout for more" in err


@pytest.mark.slow
def test_dotenv_sources_in_order_content_then_readable_file_then_environment_file(
    pg: PG, project: Path, tmp_path: Path, cli: Cli
) -> None:
    dotenv = tmp_path / "secrets.env"
    dotenv.write_text("PAYMENT_API_KEY=from-file\n")
    base = {"LOCAL_DIR": str(project), "ENVIRONMENT": "development"}
    cases = [
        ({"HECTIC_DOTENV_CONTENT": "PAYMENT_API_KEY=from-content\n",
          "HECTIC_DOTENV_FILE": str(dotenv)}, "from-content", "HECTIC_DOTENV_CONTENT"),
        ({"HECTIC_DOTENV_FILE": str(dotenv)}, "from-file", f"HECTIC_DOTENV_FILE={dotenv}"),
        ({}, "dev-not-a-real-key", str(project / ".env.development")),
    ]
    import uuid

    for extra, expected, source in cases:
        name = "t_" + uuid.uuid4().hex[:12]
        pg.psql(f'CREATE DATABASE "{name}"')
        url = pg.url_for(name)
        try:
            rc, _, err = cli("database", ["hydrate"], base_env(PGURL=url, **base, **extra))
            assert rc == 0, err
            assert f"from {source}" in err
            assert psql(url, "SELECT hectic.get_secret('PAYMENT_API_KEY')") == expected
        finally:
            pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_patch_edit_defaults_to_vi_and_a_missing_editor_is_127(
    project: Path, tmp_path: Path, cli: Cli
) -> None:
    bindir = tmp_path / "bin"
    fake_program(bindir, "vi", f'echo "$@" > {tmp_path}/vi-called')
    env = base_env(LOCAL_DIR=str(project))
    env["PATH"] = f"{bindir}:{env['PATH']}"
    rc, _, err = cli("database", ["patch", "--edit"], env)
    assert rc == 0, err
    assert (tmp_path / "vi-called").read_text().strip() == str(project / "test-data.sql")
    rc, _, err = cli("database", ["patch", "-e"], {**env, "EDITOR": "no-such-editor-xyz"})
    assert rc == 127 and "no-such-editor-xyz" in err


def test_log_pager_defaults_to_less_frx_and_empty_dir_warns(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "wd" / "data" / "log"
    directory.mkdir(parents=True)
    env = base_env(PG_WORKING_DIR=str(tmp_path / "wd"))
    # no log file yet, no selector: a warning, exit 0
    assert main(["log"], env=env) == 0
    assert "warning: no log files" in capfd.readouterr().err
    (directory / "postgresql-1.log").write_text("the server said hello\n")
    bindir = tmp_path / "bin"
    fake_program(bindir, "less", 'echo "less args: $*"; cat "$2"')
    env["PATH"] = f"{bindir}:{env['PATH']}"
    ctx = Context(settings=ProjectSettings.from_env(env), stdout=_Tty())
    assert db_workflow.dispatch(ctx, "log", {"follow": False}, []) == 0
    out = capfd.readouterr().out
    assert f"less args: -FRX {directory / 'postgresql-1.log'}" in out
    assert "the server said hello" in out


def test_migrator_uses_migration_dir_and_the_environment_url(
    db_url: str, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    cli: Cli,
) -> None:
    migrations = tmp_path / "mig"
    migrations.mkdir()
    (migrations / "20250101000000-make-table.sql").write_text(
        "-- migrate:up\nCREATE TABLE public.from_migration (x int) INHERITS (hectic.created_at);"
        "\n-- migrate:down\nDROP TABLE public.from_migration;\n")
    monkeypatch.chdir(tmp_path)  # no ./migration fallback to hide a wrong directory
    env = base_env(LOCAL_DIR=str(project), DB_URL=db_url, MIGRATION_DIR=str(migrations))
    rc, _, err = cli("database", ["migrator", "migrate", "up", "all"], env)
    assert rc == 0, err
    assert psql(db_url, "SELECT to_regclass('public.from_migration') IS NOT NULL") == "t"
    # without MIGRATION_DIR: $DATABASE_DIR/migration (the example's two)
    env.pop("MIGRATION_DIR")
    rc, out, err = cli("database", ["migrator", "list"], env)
    assert rc == 0, err
    assert out.split() == sorted(e.name.removesuffix(".sql")
                                 for e in (project / "db" / "migration").iterdir())


def test_example_schema_inherits_the_hectic_parents(db_url: str, project: Path,
                                                    cli: Cli) -> None:
    env = base_env(LOCAL_DIR=str(project), PGURL=db_url)
    rc, _, err = cli("database", ["hydrate"], env)
    assert rc == 0, err
    parents = psql(db_url, """
        SELECT c.oid::regclass || ':' || string_agg(i.inhparent::regclass::text, ','
                                                   ORDER BY i.inhparent::regclass::text)
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE c.relnamespace = 'shop'::regnamespace GROUP BY c.oid ORDER BY 1""").splitlines()
    assert "shop.currency:hectic.created_at,hectic.immutable" in parents
    assert "shop.customer:hectic.created_at,hectic.updated_at" in parents
    # the immutable reference table was filled (in migration mode) and refuses plain writes
    assert psql(db_url, "SELECT count(*) FROM shop.currency") == "4"
    with pytest.raises(Error) as refused:
        psql(db_url, "INSERT INTO shop.currency (code, name, minor_units) VALUES ('XTS', 'x', 2)")
    assert "inherits hectic.immutable" in (refused.value.detail or "")
    # two migrations, both pending on a hydrated database
    rc, out, _ = cli("database", ["--url", db_url, "status", "--json"], env)
    assert json.loads(out)["migrations_pending"] == 2
