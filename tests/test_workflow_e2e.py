"""End to end on the example project with real clusters: deploy / test / check, check never
touching a running development cluster (also when interrupted), pull_staging through a fake
ssh, the installed `database` script, and examples/run-example.sh."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from db_tool import psql as p
from db_tool.cluster import Cluster
from db_tool.errors import Error
from db_tool.project_settings import ProjectSettings
from db_tool.settings import ClusterConfig, login_name
from tests.conftest import Cli
from tests.dbproject import short_dir
from tests.helpers import next_port, run_cmd, script, stop_quietly

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples"
BIN = Path(sys.executable).parent
_ports = itertools.count(5700)  # distinct from the session cluster (5499) and other modules


def base_env(**extra: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "HOME", "XDG_CACHE_HOME", "PG_BIN_DIR",
                                      "PG_OS_USER", "LANG") if k in os.environ}
    env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(extra)
    return env


def q(url: str, sql: str) -> str:
    return "\n".join("|".join(r) for r in p.query(url, sql))


def _alive(pid: int) -> bool:
    """A zombie (exited, not yet reaped — PID 1 in a container may never reap) is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(") ", 1)[-1][:1] != "Z"


def stop(working_dir: Path) -> None:
    if working_dir.is_dir():
        Cluster(ClusterConfig(working_dir=working_dir)).stop()


class Project:
    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.env = base_env(LOCAL_DIR=str(root), PG_PORT=str(port), ENVIRONMENT="development")

    @property
    def working_dir(self) -> Path:
        return self.root / "focus" / "postgresql"

    @property
    def check_dir(self) -> Path:
        return self.root / "focus" / "postgresql-check-tmp"

    @property
    def url(self) -> str:
        return Cluster(ClusterConfig(working_dir=self.working_dir, port=self.port)).url

    def cluster(self) -> Cluster:
        return Cluster(ClusterConfig(working_dir=self.working_dir, port=self.port))


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short path: <dir>/focus/postgresql-check-tmp/sock/.s.PGSQL.<port> must fit the 107
    bytes of a unix socket path, which pytest's tmp_path does not leave room for."""
    path = Path(tempfile.mkdtemp(prefix="dbt-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def project(short_tmp: Path) -> Iterator[Project]:
    root = short_tmp / "p"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("focus"))
    proj = Project(root, next(_ports))
    try:
        yield proj
    finally:
        stop(proj.working_dir)
        stop(proj.check_dir)


def test_deploy_test_reuse_cleanup_with_the_installed_script(project: Project) -> None:
    env = {k: v for k, v in project.env.items() if k not in ("PGURL", "DB_URL")}
    done = subprocess.run([str(BIN / "database"), "deploy"], env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"export PGURL='{project.url}'"
    for step in ("init a fresh cluster", "hydrate", "apply the hectic bundle", "patch"):
        assert f"{step}" in done.stderr and "done in" in done.stderr
    url = project.url
    assert login_name() in url
    assert q(url, "SELECT count(*) FROM shop.customer") == "3"
    assert q(url, "SELECT hectic.get_secret('PAYMENT_API_KEY')") == "dev-not-a-real-key"
    pid = project.cluster().running_pid()
    assert pid is not None

    # status (subprocess) sees it running, with 2 pending migrations
    st = subprocess.run([str(BIN / "database"), "status", "--json"], env=env,
                        capture_output=True, text=True, timeout=60, check=False)
    assert st.returncode == 0, st.stderr
    status = json.loads(st.stdout)
    assert (status["running"], status["pid"], status["migrations_pending"]) == (True, pid, 2)
    assert status["data_size_bytes"] > 1_000_000 and status["url"] == url

    # the example's tests pass and leave no trace
    t = subprocess.run([str(BIN / "database"), "test"], env={**env, "PGURL": url},
                       capture_output=True, text=True, timeout=60, check=False)
    assert t.returncode == 0, t.stdout + t.stderr
    assert "10 passed, 0 failed, 10 planned" in t.stderr
    assert q(url, "SELECT count(*) FROM shop.customer") == "3"
    assert q(url, "SELECT count(*) FROM shop.currency WHERE code = 'XTS'") == "0"

    # --reuse keeps the data (and hydrates/patches nothing)
    q(url, "INSERT INTO shop.customer (email, name) VALUES ('keep@example.org', 'Keep')")
    r = subprocess.run([str(BIN / "database"), "deploy", "--reuse"], env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "hydrate ..." not in r.stderr
    assert q(url, "SELECT count(*) FROM shop.customer") == "4"

    # a plain deploy starts over; --cleanup stops the cluster afterwards
    r = subprocess.run([str(BIN / "database"), "deploy", "-c"], env=env, capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert "cluster stopped" in r.stderr
    assert not project.cluster().is_running()
    assert (project.working_dir / "data" / "PG_VERSION").is_file()
    r = subprocess.run([str(BIN / "database"), "deploy", "--reuse"], env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert q(url, "SELECT count(*) FROM shop.customer") == "3"


def test_deploy_options_mock_no_patch_no_hydrate(project: Project,
                                                 cli: Cli) -> None:
    rc, _, err = cli("database", ["deploy", "--mock", "--no-patch"], project.env)
    assert rc == 0, err
    url = project.url
    assert q(url, "SELECT shop.payment_provider_status(1)") == "settled (mock)"
    assert q(url, "SELECT count(*) FROM shop.customer") == "0"
    rc, _, err = cli("database", ["deploy", "-H", "-P"], project.env)
    assert rc == 0, err
    assert q(url, "SELECT count(*) FROM pg_namespace WHERE nspname IN ('hectic', 'shop')") == "0"


def test_deploy_failure_leaves_the_cluster_running_for_inspection(
    project: Project, cli: Cli
) -> None:
    (project.root / "test-data.sql").write_text("INSERT INTO shop.nope VALUES (1);\n")
    rc, _, err = cli("database", ["deploy", "--cleanup"], project.env)
    assert rc == 1
    assert "patch error" in err and "shop.nope" in err
    assert project.cluster().is_running()


@pytest.fixture
def dev(project: Project, cli: Cli) -> tuple[Project, int, str]:
    """The development cluster, deployed and running, with a row only it has."""
    rc, _, err = cli("database", ["deploy"], project.env)
    assert rc == 0, err
    url = project.url
    q(url, "INSERT INTO shop.customer (email, name) VALUES ('only-dev@example.org', 'Dev')")
    pid = project.cluster().running_pid()
    assert pid is not None
    return project, pid, url


def _dev_untouched(project: Project, pid: int, url: str) -> None:
    assert project.cluster().running_pid() == pid
    assert q(url, "SELECT count(*) FROM shop.customer") == "4"
    assert q(url, "SELECT count(*) FROM shop.customer WHERE email = 'only-dev@example.org'") == "1"
    assert not project.check_dir.exists()


def test_check_passes_and_never_touches_the_running_dev_cluster(
    dev: tuple[Project, int, str], cli: Cli
) -> None:
    project, pid, url = dev
    # PGURL points at the dev cluster: check must not use it
    env = {**project.env, "PGURL": url, "DB_URL": url}
    rc, _, err = cli("database", ["check"], env)
    assert rc == 0, err
    assert "check: PASSED" in err
    assert str(project.check_dir) in err
    _dev_untouched(project, pid, url)


def test_check_failure_is_exit_1_and_torn_down(dev: tuple[Project, int, str],
                                               cli: Cli) -> None:
    project, pid, url = dev
    (project.root / "db" / "src" / "functions.sql").write_text("SELECT broken(;\n")
    rc, _, err = cli("database", ["check", "-P"], project.env)
    assert rc == 1
    assert "hydrate error" in err and "tear down the check cluster ..." in err
    # one error line, and no "done" after the failure
    assert sum(line.startswith("database: error:") for line in err.splitlines()) == 1
    assert "done in" not in err.split("entrypoint.sql ...")[-1]
    _dev_untouched(project, pid, url)


def _sleeping(url: str) -> bool:
    """Whether the entrypoint's pg_sleep(60) runs; False too while the server that wrote its
    pid file does not take connections yet (starting up, or the database not made yet)."""
    try:
        return q(url, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                 "'%pg_sleep(60)%' AND pid <> pg_backend_pid()") == "1"
    except Error:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_check_interrupted_is_torn_down(sig: signal.Signals,
                                        dev: tuple[Project, int, str]) -> None:
    project, pid, url = dev
    (project.root / "db" / "src" / "functions.sql").write_text("SELECT pg_sleep(60);\n")
    child = subprocess.Popen([str(BIN / "database"), "check"], env=project.env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    check_cluster = Cluster(ClusterConfig(working_dir=project.check_dir, port=project.port))
    try:
        deadline = time.monotonic() + 60
        server = None
        while time.monotonic() < deadline:
            server = check_cluster.running_pid()
            if server is not None and _sleeping(check_cluster.url):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the check never reached the entrypoint")
        child.send_signal(sig)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, err
    assert "interrupted" in err
    assert server is not None
    assert not _alive(server)
    _dev_untouched(project, pid, url)


# --------------------------------------------------------------------------- pull_staging


@pytest.fixture
def fake_ssh(tmp_path: Path) -> Path:
    """`ssh HOST CMD...` runs CMD... locally through sh -c, like the remote shell would; it
    records the host in `hosts` and its whole argv in `argv`."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    ssh = bindir / "ssh"
    ssh.write_text('#!/bin/sh\necho "$*" >> "$(dirname "$0")/argv"\n'
                   'echo "$1" >> "$(dirname "$0")/hosts"\nshift\nexec sh -c "$*"\n')
    ssh.chmod(0o755)
    return bindir


def _staging_db(url: str) -> None:
    q(url, "CREATE TABLE public.item (id serial PRIMARY KEY, name text NOT NULL);"
           "CREATE TABLE public.note (body text);"
           "INSERT INTO public.item (name) VALUES ('a'), ('b'), ('it''s \"c\"');"
           "INSERT INTO public.note VALUES ('hello');"
           "SELECT 1")


@pytest.mark.slow
def test_pull_staging_through_fake_ssh_then_patch(
    fake_ssh: Path, tmp_path: Path, pg: Any, cli: Cli,
    db_url: str,
) -> None:
    staging_url = db_url
    _staging_db(staging_url)
    target = pg.url_for("t_pull_target")
    pg.psql('DROP DATABASE IF EXISTS "t_pull_target"')
    pg.psql('CREATE DATABASE "t_pull_target"')
    try:
        q(target, "CREATE TABLE public.item (id serial PRIMARY KEY, name text NOT NULL);"
                  "CREATE TABLE public.note (body text); SELECT 1")
        local = tmp_path / "proj"
        local.mkdir()
        env = base_env(
            LOCAL_DIR=str(local), STAGING_SSH_HOST="deploy@staging", STAGING_DB_URL=staging_url,
            STAGING_DUMP_TABLES="public.item public.note",
            STAGING_DUMP_FLAGS="--data-only --column-inserts --no-owner",
        )
        env["PATH"] = f"{fake_ssh}:{env['PATH']}"
        rc, _, err = cli("database", ["pull_staging"], env)
        assert rc == 0, err
        assert (fake_ssh / "hosts").read_text() == "deploy@staging\n"
        # the URL (and its password) reaches the remote shell on stdin, never on local argv
        assert staging_url not in (fake_ssh / "argv").read_text()
        text = (local / "test-data.sql").read_text()
        assert "-- Host:   deploy@staging" in text
        assert "INSERT INTO public.item" in text
        assert staging_url not in text
        rc, _, err = cli("database", ["patch"], {**env, "PGURL": target})
        assert rc == 0, err
        assert q(target, "SELECT string_agg(name, ',' ORDER BY id) FROM item") == \
            "a,b,it's \"c\""
        assert q(target, "SELECT body FROM note") == "hello"
        # the serial continues after the pulled ids
        assert q(target, "INSERT INTO item (name) VALUES ('d') RETURNING id") == "4"
    finally:
        pg.psql('DROP DATABASE IF EXISTS "t_pull_target" WITH (FORCE)')


@pytest.mark.parametrize("script, message", [
    ('echo "ssh: connect to host staging: Connection refused" >&2; exit 255',
     "failed to dump staging database via SSH"),
    ("exit 0", "staging dump returned empty output"),
    ("printf '\\n\\n'; exit 0", "staging dump returned empty output"),
])
def test_pull_staging_failure_leaves_the_patch_file_as_it_was(
    script: str, message: str, tmp_path: Path, cli: Cli
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "ssh").write_text(f"#!/bin/sh\n{script}\n")
    (bindir / "ssh").chmod(0o755)
    local = tmp_path / "proj"
    local.mkdir()
    patch = local / "test-data.sql"
    patch.write_bytes(b"-- my precious test data\nINSERT INTO x VALUES (1);\n")
    patch.chmod(0o640)
    before = (patch.read_bytes(), patch.stat().st_mode, patch.stat().st_ino)
    env = base_env(LOCAL_DIR=str(local), STAGING_SSH_HOST="h", STAGING_DB_URL="u",
                   STAGING_DUMP_TABLES="t", STAGING_DUMP_FLAGS="--data-only")
    env["PATH"] = f"{bindir}:{env['PATH']}"
    rc, _, err = cli("database", ["pull_staging"], env)
    assert rc == 1
    assert message in err and "left as it was" in err
    assert "done in" not in err  # no "done" before (or after) the error
    assert (patch.read_bytes(), patch.stat().st_mode, patch.stat().st_ino) == before
    assert sorted(x.name for x in local.iterdir()) == ["test-data.sql"]


# ------------------------------------------------------------------------ the quick start


def test_run_example_script(short_tmp: Path) -> None:
    root = short_tmp / "examples"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("focus"))
    env = base_env(PG_PORT=str(next(_ports)), PGURL="postgresql://wrong@/nope",
                   DB_URL="postgresql://user@localhost/dbname?host=/nowhere&port=5432")
    try:
        done = subprocess.run(["sh", str(root / "run-example.sh")], env=env,
                              capture_output=True, text=True, timeout=180,
                              stdin=subprocess.DEVNULL, check=False)
    finally:
        stop(root / "focus" / "postgresql")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "example OK" in done.stderr
    assert done.stderr.count("test: PASSED") == 2 and "check: PASSED" in done.stderr
    assert not (root / "focus").exists()


# ------------------------------------------------------------------ concurrent deploys


def test_concurrent_deploys_are_serialised(project: Project) -> None:
    # A slow hydrate: a second deploy must wait for the first (the project lock is held across
    # init, hydrate and patch) instead of restarting the cluster under its entrypoint.
    entry = project.root / "db" / "src" / "entrypoint.sql"
    entry.write_text(entry.read_text() + "\nSELECT pg_sleep(3);\n")
    env = {k: v for k, v in project.env.items() if k not in ("PGURL", "DB_URL")}

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen([str(BIN / "database"), "deploy"], env=env, text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)

    first = start()
    second = None
    try:
        assert first.stderr is not None
        err1 = ""
        for line in first.stderr:  # until the first is inside its entrypoint (pg_sleep)
            err1 += line
            if "entrypoint.sql ..." in line:
                break
        time.sleep(0.3)
        second = start()
        _, err2 = second.communicate(timeout=180)
        err1 += first.communicate(timeout=180)[1]
    finally:
        for child in (first, second):
            if child is not None and child.poll() is None:
                child.kill()
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert "waiting for another db-tool run" in err2
    assert q(project.url, "SELECT count(*) FROM shop.customer") == "3"


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


def test_readme_quick_start_runs_the_example_script() -> None:
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert quick.splitlines()[0].split("#")[0].strip() == "./dev example"
    dev = (REPO / "dev").read_text()
    assert re.search(r'^\s*example\).*examples/run-example\.sh', dev, re.MULTILINE)
    example = (EXAMPLE / "run-example.sh").read_text()
    for sub in ("deploy", "check", "test"):
        assert f'"$DATABASE" {sub}\n' in example, sub


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


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    root = short_dir()
    proj = root / "p"
    shutil.copytree(EXAMPLE, proj, ignore=shutil.ignore_patterns("focus"))
    env = base_env(LOCAL_DIR=str(proj), PG_PORT=str(next_port()), ENVIRONMENT="development",
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
                                             cli: Cli) -> None:
    _, env = deployed
    rc, out, _ = cli("database", ["status", "--json"], env)
    st = json.loads(out)
    assert rc == 0 and st["running"] is True
    assert st["postgresql"].startswith(f"PostgreSQL {st['version']}")
    rc, out, _ = cli("database", ["status"], env)
    assert rc == 0
    assert re.search(r"^cluster: +running \(pid \d+\)$", out, re.MULTILINE)
    assert re.search(r"^postgresql: +PostgreSQL \d+", out, re.MULTILINE)
    assert re.search(r"^data size: +\d+\.\d MiB$", out, re.MULTILINE)
    assert re.search(r"^migrations: +2 pending in ", out, re.MULTILINE)
    # the real server logs of the working dir
    rc, out, _ = cli("database", ["log", "list"], env)
    assert rc == 0 and re.match(r"^ 1  postgresql-.*\.log$", out)
    rc, out, _ = cli("database", ["log", "1"], env)
    assert rc == 0 and "database system is ready to accept connections" in out


def test_check_options_mock_and_no_hydrate(deployed: tuple[Path, dict[str, str]],
                                           cli: Cli) -> None:
    proj, env = deployed
    check_dir = proj / "focus" / "postgresql-check-tmp"
    mock = proj / "db" / "src" / "mock.sql"
    saved = mock.read_text()
    mock.write_text("SELECT 1/0; -- only reached with USE_MOCK\n")
    try:
        rc, _, err = cli("database", ["check", "-P"], env)
        assert rc == 0, err
        rc, _, err = cli("database", ["check", "-P", "-m"], env)
        assert rc == 1 and "division by zero" in err
        assert not check_dir.exists()
    finally:
        mock.write_text(saved)
    entry = proj / "db" / "src" / "entrypoint.sql"
    saved = entry.read_text()
    entry.write_text("SELECT broken(;\n")
    try:
        rc, _, err = cli("database", ["check", "-H", "-P"], env)  # hydrate skipped: passes
        assert rc == 0, err
        assert "hydrate ..." not in err and "test-data.sql" not in err
        assert not check_dir.exists()
    finally:
        entry.write_text(saved)


def test_deploy_reuse_implies_no_hydrate_and_no_patch(deployed: tuple[Path, dict[str, str]],
                                                      cli: Cli) -> None:
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
        rc, out, err = cli("database", ["deploy", "--reuse"], env)
        assert rc == 0, err
        assert "hydrate" not in err.replace("deploy done", "") and "patch" not in err
        assert out == f"export PGURL='{url}'\n"
    finally:
        entry.write_text(saved[0])
        patch.write_text(saved[1])
    assert q(url, "SELECT count(*) FROM shop.customer") + "/" + \
        q(url, "SELECT count(*) FROM shop.invoice") == before
