"""Which database every `database` subcommand and the `migrator` talk to (issue 8 §2).

`database`: --url/-u, PGURL, DB_URL, then the project's own cluster (socket under the working
dir, PG_PORT, PG_DATABASE, the login). `database migrator` passes that URL on. A standalone
`migrator`: --db-url, DB_URL, then PGURL. Without LOCAL_DIR the current directory is the project.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from db_tool.cli import migrator
from db_tool.conninfo import build_url
from db_tool.project_settings import ProjectSettings
from db_tool.settings import login_name
from tests.helpers import base_env, next_port, stop_quietly


def test_url_order_is_flag_then_pgurl_then_db_url() -> None:
    both = {"PGURL": "pg", "DB_URL": "db", "LOCAL_DIR": "/p"}
    assert (ProjectSettings.from_env(both, url="flag").url_source) == "--url"
    assert ProjectSettings.from_env(both, url="flag").require_url() == "flag"
    assert ProjectSettings.from_env(both).require_url() == "pg"
    assert ProjectSettings.from_env({"DB_URL": "db", "LOCAL_DIR": "/p"}).require_url() == "db"


def test_project_url_is_the_socket_under_the_working_dir_with_port_database_and_login() -> None:
    s = ProjectSettings.from_env({"LOCAL_DIR": "/p", "PG_PORT": "5444", "PG_DATABASE": "app"})
    assert s.url is None
    assert s.project_url() == build_url(login_name(), "app", "/p/focus/postgresql/sock", 5444)
    s = ProjectSettings.from_env({"PG_WORKING_DIR": "/w", "LOCAL_DIR": "/p"})
    assert s.project_url() == build_url(login_name(), "testdb", "/w/sock", 5432)


def test_without_local_dir_the_project_is_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = ProjectSettings.from_env({})
    assert s.local_dir == tmp_path and s.local_dir_is_cwd
    assert s.database_dir == tmp_path / "db"
    assert s.migration_dir == tmp_path / "db" / "migration"
    assert s.database_source == tmp_path / "db" / "src"
    assert s.patch_file == tmp_path / "test-data.sql"
    assert s.focus_dir == tmp_path / "focus"
    assert s.working_dir == tmp_path / "focus" / "postgresql"


def test_no_url_error_names_every_source_it_tried(tmp_path: Path) -> None:
    from db_tool.errors import MissingError

    s = ProjectSettings.from_env({"LOCAL_DIR": str(tmp_path)})
    with pytest.raises(MissingError) as exc:
        s.require_url()
    for source in ("--url", "PGURL", "DB_URL", str(tmp_path / "focus" / "postgresql")):
        assert source in exc.value.message, source
    assert "not running" in exc.value.message


@pytest.mark.slow
def test_standalone_migrator_takes_db_url_then_pgurl(capsys: pytest.CaptureFixture[str],
                                                     db_url: str, tmp_path: Path) -> None:
    env = {"PGURL": db_url, "MIGRATION_DIR": str(tmp_path)}
    assert migrator.main(["status"], env=env) == 0
    assert migrator.main(["status"], env={**env, "DB_URL": "postgresql:///nonexistent_db?"
                                          "host=/nonexistent"}) == 1
    capsys.readouterr()
    assert migrator.main(["status"], env={"MIGRATION_DIR": str(tmp_path)}) == 3
    err = capsys.readouterr().err
    assert "no DB_URL or --db-url specified" in err  # the original's words, then ours
    for source in ("--db-url", "DB_URL", "PGURL"):
        assert source in err


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    proj = tmp_path / "proj"
    (proj / "db" / "migration").mkdir(parents=True)
    (proj / "db" / "test").mkdir()
    (proj / "db" / "test" / "test.sql").write_text(
        "DO $$ BEGIN IF to_regclass('hectic.migration') IS NULL THEN "
        "RAISE EXCEPTION 'no bundle'; END IF; END $$;\n"
    )
    env = base_env(PG_PORT=str(next_port()), PG_SHARED_PRELOAD_LIBRARIES="")
    for var in ("PGURL", "DB_URL", "LOCAL_DIR", "PG_WORKING_DIR"):
        env.pop(var, None)
    yield proj, env
    stop_quietly(proj / "focus" / "postgresql")


def _sh(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", code], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=180, stdin=subprocess.DEVNULL, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("with_local_dir", [True, False], ids=["LOCAL_DIR", "cwd"])
def test_init_migrator_init_test_work_in_a_shell_that_never_exported_pgurl(
    project: tuple[Path, dict[str, str]], with_local_dir: bool
) -> None:
    proj, env = project
    if with_local_dir:
        env["LOCAL_DIR"] = str(proj)
    r = _sh("database init && database migrator init && database test", env,
            proj if not with_local_dir else proj.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASSED" in r.stderr
    assert (proj / "focus" / "postgresql" / "data" / "PG_VERSION").is_file()


@pytest.mark.slow
def test_database_migrator_passes_the_url_also_given_as_long_url_option(
    project: tuple[Path, dict[str, str]], db_url: str
) -> None:
    proj, env = project
    env["LOCAL_DIR"] = str(proj)
    # No project cluster is running: only the URL given can make this work.
    for argv in (["database", "--url", db_url, "migrator", "init"],
                 ["database", "migrator", "--url", db_url, "status"],
                 ["database", "migrator", f"--url={db_url}", "status"],
                 ["database", "migrator", "-u", db_url, "status"]):
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL, check=False)
        assert r.returncode == 0, (argv, r.stderr)
    assert not (proj / "focus").exists()


def test_database_migrator_without_any_url_names_the_project_socket(
    project: tuple[Path, dict[str, str]],
) -> None:
    proj, env = project
    env["LOCAL_DIR"] = str(proj)
    r = subprocess.run(["database", "migrator", "status"], env=env, capture_output=True,
                       text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
    assert r.returncode == 1
    assert str(proj / "focus" / "postgresql" / "sock") in r.stderr
