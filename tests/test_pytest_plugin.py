"""The pytest plugin (db_tool.pytest_plugin): real pytest runs of small projects, real clusters.

Each test writes a tiny project (db/src/entrypoint.sql, test-data.sql, tests/) and runs pytest
on it in a subprocess, so the plugin is loaded the way users get it (the pytest11 entry point).
The entrypoint notes every template build in builds.log (psql's `\\!`), which is how "built
once" and "reused" are observed. Caches live under the session's XDG_CACHE_HOME (conftest).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import base_env, next_port, stop_quietly

pytestmark = pytest.mark.slow
SANDBOX_RUN = Path(__file__).resolve().parent.parent.parent / "shared" / "tools" / "sandbox-run"

ENTRYPOINT = """\
\\! echo built >> {log}
CREATE TABLE public.item (id serial PRIMARY KEY, name text NOT NULL)
    INHERITS (hectic.created_at);
"""
SEED = "INSERT INTO public.item (name) VALUES ('seed');\n"

ISOLATION_TESTS = """\
import pytest

SEEN = []


@pytest.mark.parametrize("i", range(6))
def test_row_of_the_previous_test_is_absent(db_tool_database, db_url, i):
    assert db_url == db_tool_database.url
    assert db_url not in SEEN
    SEEN.append(db_url)
    rows = db_tool_database.query("SELECT name FROM item ORDER BY id")
    assert rows == [["seed"]]
    db_tool_database.query(f"INSERT INTO item (name) VALUES ('row {i}')")
    assert len(db_tool_database.query("SELECT * FROM item")) == 2
"""


@pytest.fixture(autouse=True)
def _remove_test_clusters() -> Iterator[None]:
    """The throw-away clusters (and templates) the inner runs leave in the cache: ~100 MB
    each, removed after the test that made them."""
    states = Path(os.environ["XDG_CACHE_HOME"]) / "db-tool" / "pytest"
    before = set(states.iterdir()) if states.is_dir() else set()
    yield
    for state in set(states.iterdir()) - before if states.is_dir() else ():
        stop_quietly(state / "cluster")
        shutil.rmtree(state, ignore_errors=True)


def _project(root: Path, tests: str = ISOLATION_TESTS, entrypoint: str = ENTRYPOINT) -> Path:
    (root / "db" / "src").mkdir(parents=True)
    (root / "db" / "src" / "entrypoint.sql").write_text(
        entrypoint.format(log=root / "builds.log"))
    (root / "test-data.sql").write_text(SEED)
    (root / "tests").mkdir()
    (root / "tests" / "test_app.py").write_text(tests)
    return root


def _pytest(project: Path, *args: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=project, env=env or base_env(LOCAL_DIR=str(project)), capture_output=True,
        text=True, timeout=timeout, check=False,
    )


def _builds(project: Path) -> int:
    log = project / "builds.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def _ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_each_test_gets_a_fresh_copy_of_the_template(tmp_path: Path) -> None:
    project = _project(tmp_path / "app")
    out = _ok(_pytest(project))
    assert "6 passed" in out
    assert _builds(project) == 1


INIT_FILE_TESTS = """\
from pathlib import Path

import pytest

from db_tool import pgwire


@pytest.mark.parametrize("i", range(3))
def test_copy_arrives_with_its_relcache_init_file(db_tool_database, i):
    c = db_tool_database.cluster
    with pgwire.connect(c.sockdir, c.port, c.superuser, "postgres") as conn:
        (oid, location), = conn.query(
            "SELECT d.oid::text, pg_tablespace_location(d.dattablespace) FROM pg_database d "
            "WHERE datname = " + pgwire.quote_literal(db_tool_database.name))
        sessions = conn.query("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                              + pgwire.quote_literal(db_tool_database.name))
    assert sessions == [["0"]], "nobody connects to a copy before its test"
    # In the data dir, or in the tablespace on a RAM disk (location/PG_<version>_<catalog>/)
    where = [c.datadir / "base" / oid] if not location else list(Path(location).glob("PG_*/" + oid))
    assert len(where) == 1 and (where[0] / "pg_internal.init").is_file()
"""


def test_copies_carry_the_relcache_init_file_so_the_first_connection_is_cheap(
    tmp_path: Path,
) -> None:
    # The pool does not connect to a copy before handing it out (a rename right after a
    # session left waits 100 ms); the copy's first session must then not build the relcache
    # init file itself (~20 ms): the template has one, and the file copy takes it along.
    project = _project(tmp_path / "app", tests=INIT_FILE_TESTS)
    (project / "test-data.sql").unlink()  # the last session of the build is then hydrate's
    assert "3 passed" in _ok(_pytest(project))


def test_template_is_reused_when_nothing_changed_and_rebuilt_when_db_src_changes(
    tmp_path: Path,
) -> None:
    project = _project(tmp_path / "app")
    _ok(_pytest(project))
    _ok(_pytest(project))
    assert _builds(project) == 1, "the second session rebuilt an unchanged template"
    entry = project / "db" / "src" / "entrypoint.sql"
    entry.write_text(entry.read_text() + "CREATE TABLE public.extra (id int PRIMARY KEY)"
                     " INHERITS (hectic.created_at);\n")
    (project / "tests" / "test_extra.py").write_text(
        "def test_extra_table_exists(db_tool_database):\n"
        "    assert db_tool_database.query(\"SELECT to_regclass('public.extra')\")"
        " == [['extra']]\n")
    _ok(_pytest(project))
    assert _builds(project) == 2
    (project / "test-data.sql").write_text(SEED + "INSERT INTO public.extra (id) VALUES (1);\n")
    _ok(_pytest(project, "tests/test_extra.py"))
    assert _builds(project) == 3, "a changed test-data.sql must rebuild the template"


def test_xdist_workers_get_own_copies_of_a_template_built_once(tmp_path: Path) -> None:
    tests = ISOLATION_TESTS.replace("range(6)", "range(12)") + """

@pytest.fixture(autouse=True)
def _note_url(request, worker_id):
    if "db_url" in request.fixturenames:
        with open(f"urls-{worker_id}.txt", "a") as fh:
            fh.write(request.getfixturevalue("db_url") + "\\n")
"""
    project = _project(tmp_path / "app", tests)
    out = _ok(_pytest(project, "-n", "2"))
    assert "12 passed" in out
    assert _builds(project) == 1
    by_worker = {f.name: f.read_text().split() for f in project.glob("urls-gw*.txt")}
    urls = [u for us in by_worker.values() for u in us]
    assert len(urls) == 12 and len(set(urls)) == 12
    assert set(by_worker) == {"urls-gw0.txt", "urls-gw1.txt"}, by_worker
    owners = {name: {u.split("dbt_t_")[1].split("_")[0] for u in us}
              for name, us in by_worker.items()}
    assert owners["urls-gw0.txt"].isdisjoint(owners["urls-gw1.txt"]), owners


def test_template_build_failure_shows_psql_error_once(tmp_path: Path) -> None:
    broken = ENTRYPOINT + "SELECT 1/0;\n"
    project = _project(tmp_path / "app", entrypoint=broken)
    for args in ((), ("-n", "2")):
        r = _pytest(project, *args)
        assert r.returncode == 1, r.stdout + r.stderr
        assert r.stdout.count("ERROR:  division by zero") == 1, r.stdout
        assert "6 error" in r.stdout
        assert "the template database could not be built" in r.stdout


def test_keep_failed_keeps_the_database_and_prints_its_url(tmp_path: Path) -> None:
    tests = """\
def test_fails(db_tool_database):
    db_tool_database.query("INSERT INTO item (name) VALUES ('evidence')")
    assert False
"""
    project = _project(tmp_path / "app", tests)
    r = _pytest(project, "--db-tool-keep-failed")
    assert r.returncode == 1
    line = next(ln for ln in r.stdout.splitlines() if "kept the database of this test:" in ln)
    url = line.split("kept the database of this test:", 1)[1].strip()
    rows = subprocess.run(["psql", "-X", "-At", "-d", url, "-c", "SELECT name FROM item"],
                          capture_output=True, text=True, check=False)
    assert rows.returncode == 0, rows.stderr
    assert "evidence" in rows.stdout
    # The next run drops it (its session is gone) and stops the cluster again.
    (project / "tests" / "test_app.py").write_text(ISOLATION_TESTS)
    _ok(_pytest(project))
    gone = subprocess.run(["psql", "-X", "-At", "-d", url, "-c", "SELECT 1"],
                          capture_output=True, text=True, check=False)
    assert gone.returncode != 0


def test_share_module_gives_the_tests_of_a_module_one_database(tmp_path: Path) -> None:
    shared = """\
import pytest

pytestmark = pytest.mark.db_tool(share="module")


def test_first(db_tool_database):
    db_tool_database.query("INSERT INTO item (name) VALUES ('first')")


def test_second_sees_the_first(db_tool_database):
    assert db_tool_database.query("SELECT count(*) FROM item") == [["2"]]


class TestInAClass:
    def test_third_too(self, db_tool_database):
        assert db_tool_database.query("SELECT count(*) FROM item") == [["2"]]
"""
    per_class = """\
import pytest


@pytest.mark.db_tool(share="class")
class TestShared:
    def test_a(self, db_tool_database):
        db_tool_database.query("INSERT INTO item (name) VALUES ('a')")

    def test_b(self, db_tool_database):
        assert db_tool_database.query("SELECT count(*) FROM item") == [["2"]]


def test_outside_the_class_is_fresh(db_tool_database):
    assert db_tool_database.query("SELECT count(*) FROM item") == [["1"]]
"""
    project = _project(tmp_path / "app", shared)
    (project / "tests" / "test_class.py").write_text(per_class)
    (project / "tests" / "test_other.py").write_text(
        "def test_other_module_is_fresh(db_tool_database):\n"
        "    assert db_tool_database.query('SELECT count(*) FROM item') == [['1']]\n")
    assert "7 passed" in _ok(_pytest(project))


def test_project_mode_uses_the_project_cluster_and_leaves_no_copies(tmp_path: Path) -> None:
    project = _project(tmp_path / "app")
    wd = tmp_path / "app" / "focus" / "postgresql"
    env = base_env(LOCAL_DIR=str(project), PG_PORT=str(next_port()),
                   PG_SHARED_PRELOAD_LIBRARIES="")
    try:
        out = _ok(_pytest(project, "--db-tool=project", env=env))
        assert "6 passed" in out
        assert (wd / "data" / "postmaster.pid").exists(), "the project's cluster was stopped"
        url = _url(wd, env, "postgres")
        names = subprocess.run(
            ["psql", "-X", "-At", "-d", url, "-c",
             "SELECT datname FROM pg_database WHERE datname LIKE 'dbt%' ORDER BY 1"],
            capture_output=True, text=True, check=True).stdout.split()
        assert len(names) == 1 and names[0].startswith("dbt_tpl_"), names
    finally:
        stop_quietly(wd)


def _url(wd: Path, env: dict[str, str], db: str) -> str:
    from db_tool.cluster import build_url
    from db_tool.settings import login_name

    return build_url(login_name(), db, wd / "sock", int(env["PG_PORT"]))


def test_migrations_source_builds_the_template_from_the_migrations(tmp_path: Path) -> None:
    tests = """\
def test_migrated_table(db_tool_database):
    assert db_tool_database.query("SELECT count(*) FROM item") == [["1"]]
    assert db_tool_database.query("SELECT count(*) FROM hectic.migration") == [["1"]]
    assert "item" in db_tool_database.psql("\\\\dt public.*")
"""
    project = _project(tmp_path / "app", tests, entrypoint="SELECT 1/0;\n")
    mdir = project / "db" / "migration"
    mdir.mkdir()
    (mdir / "20250101000000-item.sql").write_text(
        "-- migrate:up\nCREATE TABLE public.item (id serial PRIMARY KEY, name text)"
        " INHERITS (hectic.created_at);\n-- migrate:down\nDROP TABLE public.item;\n")
    assert "1 passed" in _ok(_pytest(project, "--db-tool-source=migrations"))


def test_db_conn_is_a_psycopg_connection_when_psycopg_is_installed(tmp_path: Path) -> None:
    pytest.importorskip("psycopg", reason="psycopg is optional; db_conn needs it")
    tests = """\
def test_conn(db_conn):
    with db_conn.cursor() as cur:
        cur.execute("SELECT name FROM item")
        assert cur.fetchall() == [("seed",)]
"""
    assert "1 passed" in _ok(_pytest(_project(tmp_path / "app", tests)))


def test_the_repo_conftest_db_url_takes_precedence(db_url: str,
                                                   pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("db_tool")
    assert "/t_" in db_url and "dbt_" not in db_url


@pytest.mark.skipif(os.geteuid() != 0, reason="sandbox-run needs root; this pass already runs "
                    "every test above as a normal user")
def test_plugin_as_a_normal_user_in_a_sandbox(tmp_path: Path) -> None:
    if not SANDBOX_RUN.is_file():
        pytest.fail(f"{SANDBOX_RUN} is missing (CI provides ../shared/tools/sandbox-run)")
    project = _project(tmp_path / "app", entrypoint=ENTRYPOINT.replace("{log}", "@LOG@"))
    # The test venv's python may live in root's home, which the sandbox account cannot
    # enter: run /usr/bin/python3 on a world-readable copy of db-tool, pytest and xdist.
    lib = Path(tempfile.mkdtemp(prefix="db-tool-plugin-", dir="/var/tmp"))
    try:
        _portable_site(lib)
        r = subprocess.run(
            [str(SANDBOX_RUN), "--user", "sandbox", "--env", f"PYTHONPATH={lib}",
             "--copy", str(project), "--", "sh", "-c",
             'cd src && sed -i "s|@LOG@|$PWD/builds.log|" db/src/entrypoint.sql && '
             "LOCAL_DIR=$PWD /usr/bin/python3 -m pytest -q -p no:cacheprovider "
             "-p db_tool.pytest_plugin -p xdist.plugin -n 2 && wc -l < builds.log; rc=$?; "
             # the detached template build must end before sandbox-run removes the work dir
             "while pgrep -u sandbox -f 'db_tool[.]template_cache' >/dev/null; do sleep 0.2; "
             "done; exit $rc"],
            capture_output=True, text=True, timeout=600, check=False,
        )
    finally:
        shutil.rmtree(lib, ignore_errors=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "6 passed" in r.stdout
    assert r.stdout.strip().splitlines()[-1].strip() == "1"


def test_the_example_project_passes(tmp_path: Path) -> None:
    pytest.importorskip("psycopg", reason="examples/pytest-app uses psycopg")
    example = tmp_path / "pytest-app"
    shutil.copytree(Path(__file__).resolve().parent.parent / "examples" / "pytest-app", example)
    assert "7 passed" in _ok(_pytest(example, env=base_env()))


def _portable_site(lib: Path) -> None:
    """db-tool and the pure-Python test packages, copied where every account can read them."""
    import importlib.util

    shutil.copytree(Path(__file__).resolve().parent.parent / "src" / "db_tool", lib / "db_tool",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pytest", "_pytest", "pluggy", "iniconfig", "packaging", "xdist", "execnet",
                 "py"):
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin, f"{name} is not installed"
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            shutil.copytree(origin.parent, lib / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(origin, lib / origin.name)
    subprocess.run(["chmod", "-R", "a+rX", str(lib)], check=True)
    lib.chmod(0o755)
