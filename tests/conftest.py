"""Shared fixtures: one real PostgreSQL cluster per test session, a fresh database per test.

Fixture API (stable, used by every test module):
  pg        session-scoped; .url (superuser URL to db "postgres"), .install (PgInstall),
            .sockdir, .port, .user, .psql(sql, url=None) -> stdout
  db_url    function-scoped; URL of a brand-new empty database, dropped afterwards
  cli       function-scoped; cli(program, argv, env=None) -> CliResult(rc, out, err): a command
            (database, migrator, db-ops, postgres-init, postgres-cleanup) run in-process
"""

from __future__ import annotations

import contextlib
import getpass
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import pytest

from db_tool import pgbin


def pg_url(user: str, db: str, sockdir: str, port: int) -> str:
    from urllib.parse import quote

    return f"postgresql://{quote(user)}@/{quote(db)}?host={quote(sockdir)}&port={port}"


@dataclass
class PG:
    install: pgbin.PgInstall
    sockdir: str
    port: int
    user: str

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, db: str) -> str:
        return pg_url(self.user, db, self.sockdir, self.port)

    def psql(self, sql: str, url: str | None = None) -> str:
        out = subprocess.run(
            [self.install.tool("psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
             "-d", url or self.url, "-c", sql],
            capture_output=True, text=True, check=False,
        )
        if out.returncode != 0:
            raise AssertionError(f"psql failed: {out.stderr}")
        return out.stdout.strip()


def pytest_configure(config: pytest.Config) -> None:
    # A private base temp dir per session: pytest re-chmods /tmp/pytest-of-<user> to 0700 and
    # prunes old numbered dirs, which breaks clusters of concurrently running sessions.
    if not config.option.basetemp and not hasattr(config, "workerinput"):
        import tempfile

        base = Path(tempfile.mkdtemp(prefix="db-tool-tests-"))
        # Held (flock) for the whole session: a kept failed run whose lock is free has ended.
        # Beside the dir, not in it: pytest empties a given basetemp when it first uses it.
        config.stash[_SESSION_LOCK] = os.open(f"{base}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        import fcntl

        fcntl.flock(config.stash[_SESSION_LOCK], fcntl.LOCK_EX)
        config.option.basetemp = str(base)
        config.stash[_OWN_BASETEMP] = base
        _prune_kept_runs(base.parent)


# Fixtures that start a cluster of the test's own (or a whole project deployment): a test
# using one is marked slow, so `pytest -m "not slow"` keeps the session cluster's tests only.
SLOW_FIXTURES = frozenset({
    "cluster_env", "short_tmp", "proj", "backed_up", "foreign", "local", "appdb_project",
    "deployed", "hook_project", "under_root", "under_tmp", "password_cluster", "template",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests using a SLOW_FIXTURES fixture get the slow marker (besides those marked by hand);
    the fault-injection suite runs only when the -m expression names it (`-m faults`)."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if "faults" in (config.option.markexpr or ""):
        return
    faults = [item for item in items if item.get_closest_marker("faults") is not None]
    if faults:
        config.hook.pytest_deselected(items=faults)
        items[:] = [item for item in items if item.get_closest_marker("faults") is None]


_OWN_BASETEMP = pytest.StashKey[Path]()
_SESSION_FAILED = pytest.StashKey[bool]()
_SESSION_LOCK = pytest.StashKey[int]()
KEPT_MARK = ".kept-failed-run"  # in the base temp dir of a failed run kept for inspection
KEEP_FAILED_RUNS = 2  # the newest ones; older kept runs (gigabytes each) go at the next start


def _stop_servers_in(base: Path) -> None:
    import signal

    for pidfile in base.glob("**/postmaster.pid"):
        try:
            pid = int(pidfile.read_text().split()[0])
            if Path(f"/proc/{pid}/cwd").resolve() == pidfile.parent.resolve():
                os.kill(pid, signal.SIGQUIT)
        except (OSError, ValueError, IndexError):
            continue


def _prune_kept_runs(tmp: Path) -> None:
    """Failed runs keep their base temp dir; without a limit, a day of -x runs filled the
    disk. Only dirs this suite marked as kept, owned by us, whose session has ended (its lock
    is free) are removed, all but the newest KEEP_FAILED_RUNS."""
    import fcntl
    import shutil

    ended = []
    for base in tmp.glob("db-tool-tests-*"):
        try:
            if base.stat().st_uid != os.geteuid() or not (base / KEPT_MARK).is_file():
                continue
            fd = os.open(f"{base}.lock", os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a session still running
        ended.append(((base / KEPT_MARK).stat().st_mtime, base, fd))
    ended.sort(reverse=True)
    for _, base, _fd in ended[KEEP_FAILED_RUNS:]:
        _stop_servers_in(base)
        shutil.rmtree(base, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(f"{base}.lock")
    for _, _, fd in ended:
        os.close(fd)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_SESSION_FAILED] = exitstatus not in (0, 5)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's base temp dir (clusters, caches: gigabytes over a whole run) once
    the run passed; a failed run keeps it for inspection (marked, so that a later run prunes
    it: _prune_kept_runs). Servers still running in it (a test that leaked one) are stopped
    first."""
    base = config.stash.get(_OWN_BASETEMP, None)
    if base is None:
        return
    if config.stash.get(_SESSION_FAILED, True):
        with contextlib.suppress(OSError):
            (base / KEPT_MARK).touch()
        print(f"db-tool tests: this failed run's files are kept in {base} (the newest "
              f"{KEEP_FAILED_RUNS} failed runs are kept)", file=sys.stderr)
        return
    import shutil

    _stop_servers_in(base)
    shutil.rmtree(base, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.unlink(f"{base}.lock")


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """No test may read or write the real home/cache, or inherit the developer's PG env."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("HOME", str(home))
    for var in ("PGURL", "DB_URL", "PG_WORKING_DIR", "LOCAL_DIR", "PG_REUSE", "PGHOST",
                "PGPORT", "PGDATABASE", "PGUSER", "MIGRATION_DIR", "DATABASE_DIR",
                "DATABASE_SOURCE", "PG_URL_VAR", "HECTIC_DOTENV_FILE",
                "HECTIC_DOTENV_CONTENT", "ENVIRONMENT", "PROFILE_DIR", "PG_LOG_PATH",
                "PG_CONF_FILE", "PG_SHARED_PRELOAD_LIBRARIES", "PG_DISABLE_LOGGING",
                "HYDRATE_LOG", "PATCH_LOG", "PG_PORT", "PG_DATABASE"):
        monkeypatch.delenv(var, raising=False)
    yield
    from db_tool import settings

    settings.forget()  # an in-process main() installed its env's Runtime: not for the next test


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PG]:
    from db_tool.cluster import Cluster, ClusterConfig

    wd = tmp_path_factory.mktemp("session-cluster")
    env = dict(os.environ)
    env["XDG_CACHE_HOME"] = str(tmp_path_factory.getbasetemp() / "cache")
    cfg = ClusterConfig.from_env({**env, "PG_WORKING_DIR": str(wd), "PG_PORT": "5499",
                                  "PG_SHARED_PRELOAD_LIBRARIES": "", "PG_DATABASE": "postgres"})
    cluster = Cluster(cfg)
    cluster.init()
    try:
        yield PG(cluster.install, str(cluster.sockdir), cluster.port, cluster.superuser)
    finally:
        cluster.stop()


@pytest.fixture
def make_db(pg: PG) -> Iterator[Callable[[], str]]:
    """Call it for the URL of another brand-new database; all are dropped afterwards."""
    names: list[str] = []

    def _make() -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        pg.psql(f'CREATE DATABASE "{name}"')
        names.append(name)
        return pg.url_for(name)

    try:
        yield _make
    finally:
        for name in names:
            pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(make_db: Callable[[], str]) -> str:
    return make_db()


def login_name() -> str:
    return getpass.getuser()


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cluster_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Env for a test that starts its own cluster in tmp_path/wd; stopped afterwards."""
    from tests.helpers import base_env, next_port, stop_quietly

    wd = tmp_path / "wd"
    env = base_env(PG_WORKING_DIR=str(wd), PG_PORT=str(next_port()))
    try:
        yield env
    finally:
        stop_quietly(Path(env["PG_WORKING_DIR"]))


class CliResult(NamedTuple):
    rc: int
    out: str
    err: str


class Cli(Protocol):
    def __call__(self, program: str, argv: Sequence[str] = (),
                 env: Mapping[str, str] | None = None) -> CliResult: ...


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """The one command runner of the tests (as httpie's `http()`): `cli("database", ["status"],
    env)` runs the command in-process through its main(argv, env=env) — the environment is
    env alone (default: this process's) — and returns its exit code and what it printed since
    the call began. The program names are the launchers' (db_tool.cli.launch.PROGS)."""
    import importlib

    from db_tool.cli.launch import PROGS

    def run(program: str, argv: Sequence[str] = (),
            env: Mapping[str, str] | None = None) -> CliResult:
        main = importlib.import_module(PROGS[program]).main
        capsys.readouterr()
        rc = main(list(argv), env=dict(os.environ if env is None else env))
        out, err = capsys.readouterr()
        return CliResult(rc, out, err)

    return run
