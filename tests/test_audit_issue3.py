"""Audit of issue 3 (`database`: the development workflow commands): the acceptance points
the other test modules did not show. In-process where possible (main(argv, env=...)), SQL
against the session cluster (db_url); one module cluster for the end-to-end points."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from db_tool import psql as p
from db_tool.cli import db_workflow
from db_tool.cli.context import Context
from db_tool.cli.database import main
from db_tool.errors import Error
from db_tool.settings import ProjectSettings
from tests.conftest import PG
from tests.dbproject import short_dir
from tests.helpers import BIN, base_env, next_port, run_cmd, script, stop_quietly

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples"


def env_of(**extra: str) -> dict[str, str]:
    """A clean environment: no project variable of the caller leaks in."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "XDG_CACHE_HOME", "PG_BIN_DIR",
                                      "PG_OS_USER", "LANG") if k in os.environ}
    env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(extra)
    return env


def run(argv: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> tuple[
        int, str, str]:
    rc = main(argv, env=env)
    out, err = capsys.readouterr()
    return rc, out, err


def q(url: str, sql: str) -> str:
    return "\n".join("|".join(r) for r in p.query(url, sql))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    dest = tmp_path / "project"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("focus"))
    return dest


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def fake_program(bindir: Path, name: str, body: str) -> None:
    bindir.mkdir(exist_ok=True)
    path = bindir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


# ------------------------------------------------------------------------------ command line


@pytest.mark.parametrize("argv", [["-h"], ["--help"], ["help"], ["?"], ["-u", "x", "--help"]])
def test_help_forms_print_the_help_and_exit_0(argv: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(argv, env_of(), capsys)
    assert rc == 0
    assert out.startswith("usage: database [-u|--url URL] [-i|--inherits TABLE]...")
    assert "Subcommands:" in out and err == ""


def test_no_arguments_prints_the_help_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run([], env_of(), capsys)
    assert rc == 1  # help on stdout and exit 1, as the original
    assert err == "" and out.startswith("usage: database ")
    assert run(["-?"], env_of(), capsys)[:2] == (0, out)
    rc, _, err = run(["--frobnicate"], env_of(), capsys)
    assert rc == 1 and "no subcommand specified" in err


@pytest.mark.parametrize("sub, hint", [("stauts", "did you mean 'status'?"),
                                       ("frobnicate", "use '--help'")])
def test_unknown_subcommand_is_exit_1_as_the_original_with_a_hint(
        sub: str, hint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run([sub], env_of(LOCAL_DIR=str(tmp_path)), capsys)
    assert rc == 1
    assert "no subcommand specified" in err and repr(sub) in err and hint in err
    assert out == ""
    assert list(tmp_path.iterdir()) == []


def test_unknown_global_option_is_exit_9_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["--frobnicate", "status"], env_of(), capsys)
    assert rc == 9 and "--frobnicate" in err


@pytest.mark.parametrize("sub", ["init", "cleanup", "bundle", "migrator"])
def test_other_subcommands_have_help_and_name_unknown_options(
    sub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = env_of(LOCAL_DIR=str(tmp_path))
    rc, out, _ = run([sub, "--help"], env, capsys)
    assert rc == 0 and out.startswith("usage: ") and sub in out.splitlines()[0]
    rc, _, err = run([sub, "--frobnicate"], env, capsys)
    if sub == "migrator":  # as the original migrator: an option but no subcommand is exit 1
        assert rc == 1 and "no subcommand specified" in err
        rc, _, err = run([sub, "list", "--frobnicate"], env, capsys)
    assert rc == 9 and "--frobnicate" in err
    assert list(tmp_path.iterdir()) == []


def test_diff_log_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["diff", "log", "--help"], env_of(), capsys)
    assert rc == 0 and "database diff log" in out


@pytest.mark.parametrize("form", [["--url", "{u}"], ["--url={u}"], ["-u", "{u}"]])
def test_url_after_the_subcommand(form: list[str], db_url: str, project: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """--url after the subcommand is the connection: pending migrations are counted in it
    (the cluster of LOCAL_DIR is not running, so without a URL there is no count)."""
    env = env_of(LOCAL_DIR=str(project))
    args = [a.replace("{u}", db_url) for a in form]
    rc, out, err = run(["status", "--json", *args], env, capsys)
    assert rc == 0, err
    assert json.loads(out)["migrations_pending"] == 2
    rc, out, _ = run(["status", "--json"], env, capsys)
    assert json.loads(out)["migrations_pending"] is None


def test_inherits_is_repeatable_and_checked_before_the_subcommand_runs(
    db_url: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    q(db_url, "CREATE TABLE public.present (id int); CREATE TABLE public.other (id int)")
    patch = project / "test-data.sql"
    patch.unlink()
    env = env_of(LOCAL_DIR=str(project), PGURL=db_url)
    # the second of two tables is missing: named, exit 5, and patch did not run at all
    rc, _, err = run(["-i", "public.present", "patch", "--inherits", "public.absent"], env,
                     capsys)
    assert rc == 5
    assert "public.absent" in err and "public.present" not in err
    assert not patch.exists()
    # the first one missing is the one named
    rc, _, err = run(["-i", "public.gone", "-i", "public.absent", "patch"], env, capsys)
    assert rc == 5 and "public.gone" in err and "public.absent" not in err
    assert not patch.exists()
    # all present (before and after the subcommand): the subcommand runs
    rc, _, err = run(["-i", "public.present", "patch", "-i", "public.other"], env, capsys)
    assert rc == 0, err
    assert patch.is_file()


# ------------------------------------------------------------------------------ environment


def test_settings_defaults_follow_the_seed_readme(tmp_path: Path) -> None:
    local = tmp_path / "proj"
    s = ProjectSettings.from_env({"LOCAL_DIR": str(local)})
    assert s.database_dir == local / "db"
    assert s.migration_dir == local / "db" / "migration"
    assert s.database_source == local / "db" / "src"
    assert s.patch_file == local / "test-data.sql"
    assert s.working_dir == local / "focus" / "postgresql"
    assert (s.hydrate_log, s.patch_log, s.url, s.environment) == (None, None, None, None)

    logs = tmp_path / "logs"
    s = ProjectSettings.from_env({"LOCAL_DIR": str(local), "DATABASE_DIR": str(tmp_path / "d"),
                                  "PROFILE_DIR": str(tmp_path / "prof"),
                                  "PG_LOG_PATH": str(logs), "ENVIRONMENT": "staging"})
    assert s.migration_dir == tmp_path / "d" / "migration"  # follows DATABASE_DIR
    assert s.database_source == tmp_path / "d" / "src"
    assert s.patch_file == tmp_path / "prof" / "test-data.sql"
    assert s.hydrate_log == logs / "hydrate.stdout.log"
    assert s.patch_log == logs / "patch.stdout.log"
    assert s.environment == "staging"

    s = ProjectSettings.from_env({"LOCAL_DIR": str(local), "PG_LOG_PATH": str(logs),
                                  "HYDRATE_LOG": str(tmp_path / "h.log"),
                                  "PATCH_LOG": str(tmp_path / "p.log"),
                                  "MIGRATION_DIR": str(tmp_path / "m"),
                                  "DATABASE_SOURCE": str(tmp_path / "s"),
                                  "PG_WORKING_DIR": str(tmp_path / "wd")})
    assert (s.hydrate_log, s.patch_log) == (tmp_path / "h.log", tmp_path / "p.log")
    assert (s.migration_dir, s.database_source) == (tmp_path / "m", tmp_path / "s")
    assert s.working_dir == tmp_path / "wd"


def test_directory_variables_reach_the_commands(db_url: str, project: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "elsewhere"
    (other / "test").mkdir(parents=True)
    (other / "test" / "test.sql").write_text("SELECT 'ok 1 - from DATABASE_DIR';\n")
    env = env_of(LOCAL_DIR=str(project), PGURL=db_url, DATABASE_DIR=str(other))
    rc, out, err = run(["test"], env, capsys)
    assert rc == 0, err
    assert "ok 1 - from DATABASE_DIR" in out and str(other / "test" / "test.sql") in err
    # DATABASE_DIR moves the default DATABASE_SOURCE: no entrypoint there
    rc, _, err = run(["hydrate", "-H"], env, capsys)
    assert rc == 1 and str(other / "src" / "entrypoint.sql") in err

    src = tmp_path / "src"
    src.mkdir()
    (src / "entrypoint.sql").write_text("SELECT 'from DATABASE_SOURCE';\n")
    rc, out, err = run(["hydrate", "-H"], {**env, "DATABASE_SOURCE": str(src)}, capsys)
    assert rc == 0, err
    assert "from DATABASE_SOURCE" in out

    migrations = tmp_path / "mig"
    migrations.mkdir()
    (migrations / "20250101000000-one.sql").write_text("-- migrate:up\n-- migrate:down\n")
    rc, out, _ = run(["--url", db_url, "status", "--json"],
                     {**env, "MIGRATION_DIR": str(migrations)}, capsys)
    st = json.loads(out)
    assert (st["migration_dir"], st["migrations_pending"]) == (str(migrations), 1)


def test_db_url_alone_and_the_url_precedence_reach_psql(
    db_url: str, project: Path, capsys: pytest.CaptureFixture[str]
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
        rc, out, err = run([*flags, "patch"], env_of(LOCAL_DIR=str(project), **urls), capsys)
        assert rc == 0, (urls, err)
        assert name in out


def test_patch_output_goes_to_stdout_by_default_and_under_pg_log_path(
    db_url: str, project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "test-data.sql").write_text("SELECT 'patched here';\n")
    env = env_of(LOCAL_DIR=str(project), PGURL=db_url)
    rc, out, _ = run(["patch"], env, capsys)
    assert rc == 0 and "patched here" in out
    logs = tmp_path / "pglog"
    rc, out, err = run(["patch"], {**env, "PG_LOG_PATH": str(logs)}, capsys)
    assert rc == 0, err
    assert "patched here" not in out
    assert "patched here" in (logs / "patch.stdout.log").read_text()
    assert str(logs / "patch.stdout.log") in err


def test_hydrate_failure_on_stdout_says_where_the_output_is(
    db_url: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "db" / "src" / "entrypoint.sql").write_text("SELECT 1/0;\n")
    rc, out, err = run(["hydrate", "-H"], env_of(LOCAL_DIR=str(project), PGURL=db_url), capsys)
    assert rc == 1
    assert "division by zero" in err and "division by zero" not in out  # stderr, as the original
    assert "check stdout for more" in err


def test_dotenv_sources_in_order_content_then_readable_file_then_environment_file(
    pg: PG, project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
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
            rc, _, err = run(["hydrate"], env_of(PGURL=url, **base, **extra), capsys)
            assert rc == 0, err
            assert f"from {source}" in err
            assert q(url, "SELECT hectic.get_secret('PAYMENT_API_KEY')") == expected
        finally:
            pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------- patch --edit, log pager


def test_patch_edit_defaults_to_vi_and_a_missing_editor_is_127(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bindir = tmp_path / "bin"
    fake_program(bindir, "vi", f'echo "$@" > {tmp_path}/vi-called')
    env = env_of(LOCAL_DIR=str(project))
    env["PATH"] = f"{bindir}:{env['PATH']}"
    rc, _, err = run(["patch", "--edit"], env, capsys)
    assert rc == 0, err
    assert (tmp_path / "vi-called").read_text().strip() == str(project / "test-data.sql")
    rc, _, err = run(["patch", "-e"], {**env, "EDITOR": "no-such-editor-xyz"}, capsys)
    assert rc == 127 and "no-such-editor-xyz" in err


def test_log_pager_defaults_to_less_frx_and_empty_dir_warns(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "wd" / "data" / "log"
    directory.mkdir(parents=True)
    env = env_of(PG_WORKING_DIR=str(tmp_path / "wd"))
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


# -------------------------------------------------------------------------------- migrator


def test_migrator_uses_migration_dir_and_the_environment_url(
    db_url: str, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    migrations = tmp_path / "mig"
    migrations.mkdir()
    (migrations / "20250101000000-make-table.sql").write_text(
        "-- migrate:up\nCREATE TABLE public.from_migration (x int) INHERITS (hectic.created_at);"
        "\n-- migrate:down\nDROP TABLE public.from_migration;\n")
    monkeypatch.chdir(tmp_path)  # no ./migration fallback to hide a wrong directory
    env = env_of(LOCAL_DIR=str(project), DB_URL=db_url, MIGRATION_DIR=str(migrations))
    rc, _, err = run(["migrator", "migrate", "up", "all"], env, capsys)
    assert rc == 0, err
    assert q(db_url, "SELECT to_regclass('public.from_migration') IS NOT NULL") == "t"
    # without MIGRATION_DIR: $DATABASE_DIR/migration (the example's two)
    env.pop("MIGRATION_DIR")
    rc, out, err = run(["migrator", "list"], env, capsys)
    assert rc == 0, err
    assert out.split() == sorted(e.name.removesuffix(".sql")
                                 for e in (project / "db" / "migration").iterdir())


# ------------------------------------------------------------------------ the example project


def test_example_project_has_the_required_pieces() -> None:
    entry = (EXAMPLE / "db" / "src" / "entrypoint.sql").read_text()
    included = re.findall(r"^\\ir\s+(\S+)", entry, re.MULTILINE)
    assert len(included) >= 3
    for rel in included:
        assert (EXAMPLE / "db" / "src" / rel).is_file(), rel
    migrations = [e for e in (EXAMPLE / "db" / "migration").iterdir()
                  if re.match(r"^[0-9]{14}-.+", e.name)]
    assert len(migrations) == 2
    for name in ("test-data.sql", "db/test/test.sql", ".env.development"):
        assert (EXAMPLE / name).is_file() and (EXAMPLE / name).read_text().strip(), name


def test_example_schema_inherits_the_hectic_parents(db_url: str, project: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    env = env_of(LOCAL_DIR=str(project), PGURL=db_url)
    rc, _, err = run(["hydrate"], env, capsys)
    assert rc == 0, err
    parents = q(db_url, """
        SELECT c.oid::regclass || ':' || string_agg(i.inhparent::regclass::text, ','
                                                   ORDER BY i.inhparent::regclass::text)
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE c.relnamespace = 'shop'::regnamespace GROUP BY c.oid ORDER BY 1""").splitlines()
    assert "shop.currency:hectic.created_at,hectic.immutable" in parents
    assert "shop.customer:hectic.created_at,hectic.updated_at" in parents
    # the immutable reference table was filled (in migration mode) and refuses plain writes
    assert q(db_url, "SELECT count(*) FROM shop.currency") == "4"
    with pytest.raises(Error) as refused:
        q(db_url, "INSERT INTO shop.currency (code, name, minor_units) VALUES ('XTS', 'x', 2)")
    assert "inherits hectic.immutable" in (refused.value.detail or "")
    # two migrations, both pending on a hydrated database
    rc, out, _ = run(["--url", db_url, "status", "--json"], env, capsys)
    assert json.loads(out)["migrations_pending"] == 2


def test_readme_quick_start_runs_the_example_script() -> None:
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert quick.splitlines()[0].split("#")[0].strip() == "./dev example"
    dev = (REPO / "dev").read_text()
    assert re.search(r'^\s*example\).*examples/run-example\.sh', dev, re.MULTILINE)
    example = (EXAMPLE / "run-example.sh").read_text()
    for sub in ("deploy", "check", "test"):
        assert f'"$DATABASE" {sub}\n' in example, sub
    # test_workflow_e2e.py::test_run_example_script runs the script itself.


# ------------------------------------------------------------------- shell hooks from the docs


def _doc_block(after: str, fence: str) -> str:
    text = (REPO / "docs" / "workflow.md").read_text()
    return text.split(after, 1)[1].split(fence, 1)[1].split("```", 1)[0]


@pytest.fixture
def hook_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = short_dir()
    shutil.copytree(EXAMPLE, root / "p", ignore=shutil.ignore_patterns("focus"))
    try:
        yield root / "p"
    finally:
        stop_quietly(root / "p" / "focus" / "postgresql")
        shutil.rmtree(root, ignore_errors=True)


def test_documented_direnv_and_nix_shell_hooks_work(hook_project: Path) -> None:
    envrc = _doc_block("### direnv", "```sh\n")
    nix = _doc_block("### Nix devShell", "```nix\n")
    shell_hook = nix.split("shellHook = ''\n", 1)[1].split("'';", 1)[0]
    env = base_env(PG_PORT=str(next_port()), PG_SHARED_PRELOAD_LIBRARIES="")
    for var in ("PGURL", "DB_URL", "LOCAL_DIR", "PG_WORKING_DIR", "PG_DATABASE", "PG_REUSE"):
        env.pop(var, None)
    probe = '\npsql "$PGURL" -X -At -c "SELECT current_database()"\necho "URL=$PGURL"\n'
    # direnv runs .envrc with bash; the hook must also work in a POSIX sh
    for shell in ("sh", "bash"):
        done = subprocess.run([shell, "-c", envrc + probe], cwd=hook_project, env=env,
                              capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL, check=False)
        assert done.returncode == 0, done.stderr
        assert "testdb" in done.stdout
        assert f"host={hook_project}/focus/postgresql/sock" in done.stdout
    # the Nix shellHook (bash): exports PGURL, and its EXIT trap stops the cluster again
    done = subprocess.run(["bash", "-c", shell_hook + probe], cwd=hook_project, env=env,
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stderr
    assert "testdb" in done.stdout
    pid_file = hook_project / "focus" / "postgresql" / "data" / "postmaster.pid"
    assert not pid_file.exists()


# --------------------------------------------------------------- end to end on one cluster


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    root = short_dir()
    proj = root / "p"
    shutil.copytree(EXAMPLE, proj, ignore=shutil.ignore_patterns("focus"))
    env = env_of(LOCAL_DIR=str(proj), PG_PORT=str(next_port()), ENVIRONMENT="development",
                 XDG_CACHE_HOME=str(tmp_path_factory.getbasetemp() / "cache"))
    try:
        result = run_cmd([script("database"), "deploy"], env)
        assert result.returncode == 0, result.stderr
        yield proj, env
    finally:
        stop_quietly(proj / "focus" / "postgresql")
        stop_quietly(proj / "focus" / "postgresql-check-tmp")
        shutil.rmtree(root, ignore_errors=True)


def _url(env: dict[str, str]) -> str:
    from db_tool.cluster import Cluster

    return Cluster(ProjectSettings.from_env(env).cluster_config()).url


def test_status_and_log_of_a_running_cluster(deployed: tuple[Path, dict[str, str]],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    _, env = deployed
    rc, out, _ = run(["status", "--json"], env, capsys)
    st = json.loads(out)
    assert rc == 0 and st["running"] is True
    assert st["postgresql"].startswith(f"PostgreSQL {st['version']}")
    rc, out, _ = run(["status"], env, capsys)
    assert rc == 0
    assert re.search(r"^cluster: +running \(pid \d+\)$", out, re.MULTILINE)
    assert re.search(r"^postgresql: +PostgreSQL \d+", out, re.MULTILINE)
    assert re.search(r"^data size: +\d+\.\d MiB$", out, re.MULTILINE)
    assert re.search(r"^migrations: +2 pending in ", out, re.MULTILINE)
    # the real server logs of the working dir
    rc, out, _ = run(["log", "list"], env, capsys)
    assert rc == 0 and re.match(r"^ 1  postgresql-.*\.log$", out)
    rc, out, _ = run(["log", "1"], env, capsys)
    assert rc == 0 and "database system is ready to accept connections" in out


def test_check_options_mock_and_no_hydrate(deployed: tuple[Path, dict[str, str]],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    proj, env = deployed
    check_dir = proj / "focus" / "postgresql-check-tmp"
    mock = proj / "db" / "src" / "mock.sql"
    saved = mock.read_text()
    mock.write_text("SELECT 1/0; -- only reached with USE_MOCK\n")
    try:
        rc, _, err = run(["check", "-P"], env, capsys)
        assert rc == 0, err
        rc, _, err = run(["check", "-P", "-m"], env, capsys)
        assert rc == 1 and "division by zero" in err
        assert not check_dir.exists()
    finally:
        mock.write_text(saved)
    entry = proj / "db" / "src" / "entrypoint.sql"
    saved = entry.read_text()
    entry.write_text("SELECT broken(;\n")
    try:
        rc, _, err = run(["check", "-H", "-P"], env, capsys)  # hydrate skipped: passes
        assert rc == 0, err
        assert "hydrate ..." not in err and "test-data.sql" not in err
        assert not check_dir.exists()
    finally:
        entry.write_text(saved)


def test_deploy_reuse_implies_no_hydrate_and_no_patch(deployed: tuple[Path, dict[str, str]],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    proj, env = deployed
    url = _url(env)
    q(url, "INSERT INTO shop.customer (email, name) VALUES ('kept@example.org', 'Kept')")
    before = q(url, "SELECT count(*) FROM shop.customer") + "/" + \
        q(url, "SELECT count(*) FROM shop.invoice")
    entry = proj / "db" / "src" / "entrypoint.sql"
    patch = proj / "test-data.sql"
    saved = entry.read_text(), patch.read_text()
    entry.unlink()  # hydrate would fail at once
    patch.write_text("INSERT INTO shop.nope VALUES (1);\n")  # so would patch
    try:
        rc, out, err = run(["deploy", "--reuse"], env, capsys)
        assert rc == 0, err
        assert "hydrate" not in err.replace("deploy done", "") and "patch" not in err
        assert out == f"export PGURL='{url}'\n"
    finally:
        entry.write_text(saved[0])
        patch.write_text(saved[1])
    assert q(url, "SELECT count(*) FROM shop.customer") + "/" + \
        q(url, "SELECT count(*) FROM shop.invoice") == before


@pytest.mark.parametrize("name", ["a b", "x.y.z.w", "other.public.t", '"open', ""])
def test_inherits_that_is_no_table_name_exits_3(
    db_url: str, project: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    env = env_of(LOCAL_DIR=str(project), PGURL=db_url)
    rc, _, err = run(["--inherits", name, "patch"], env, capsys)
    assert rc == 3, err
    assert err.startswith(f"database: error: --inherits {name!r} is not a table name (")
    assert len(err.strip().splitlines()) == 1
