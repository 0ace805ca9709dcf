"""pytest plugin (entry point `pytest11`): a fresh copy of the project's database per test.

Fixtures
  db_url            URL of a fresh database copied from the template, dropped afterwards
  db_tool_database  the same database as a TestDatabase (name, url, query(), psql())
  db_conn           a psycopg connection to it (needs psycopg; nothing else does)
  db_tool_session   the session: cluster, template name, pool

Nothing happens until a test asks for one of them, so the plugin costs nothing in a test run
that does not use it (and a conftest.py `db_url` fixture simply takes precedence).

Options (also as ini keys: db_tool_mode, db_tool_source, db_tool_mock, db_tool_pool,
db_tool_share, db_tool_local_dir, db_tool_keep_failed, db_tool_scratch):
  --db-tool=throwaway|project   which cluster (default: a throw-away one, cached per project)
  --db-tool-source=hydrate|migrations
  --db-tool-mock                hydrate with USE_MOCK=1
  --db-tool-pool=N              copies kept ready (default 8)
  --db-tool-share=function|class|module   default sharing of one database
  --db-tool-keep-failed         keep a failing test's database and print its URL
  --db-tool-local-dir=DIR       the project (default: $LOCAL_DIR, else the rootdir)
  --db-tool-scratch=auto|data|DIR  where the per-test copies live: auto (default) = a
                                tablespace on /dev/shm when it is a tmpfs with room and the
                                cluster is the throw-away one, else the data dir
Marker: @pytest.mark.db_tool(share="module"|"class") on a module (pytestmark) or class.

Only pytest and the standard library are imported at start-up; the rest when first used.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from db_tool.clone_pool import Pool
    from db_tool.cluster import Cluster

SHARES = ("function", "class", "module")
COPY_THREADS = 6  # the pool's copying threads, shared out among xdist workers


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("db-tool", "db-tool test databases")
    group.addoption("--db-tool", dest="db_tool_mode", choices=("throwaway", "project"),
                    help="cluster for the test databases: a throw-away one (default, cached "
                         "between runs) or the project's own (PG_WORKING_DIR/LOCAL_DIR)")
    group.addoption("--db-tool-source", dest="db_tool_source", choices=("hydrate", "migrations"),
                    help="build the template by hydrate (bundle, db/src, default) or by "
                         "applying all migrations; then the patch file (test-data.sql)")
    group.addoption("--db-tool-mock", dest="db_tool_mock", action="store_true", default=None,
                    help="hydrate the template with USE_MOCK=1")
    group.addoption("--db-tool-pool", dest="db_tool_pool", type=int,
                    help="database copies kept ready in the background (default 8)")
    group.addoption("--db-tool-share", dest="db_tool_share", choices=SHARES,
                    help="share one database per class or module (default: one per test)")
    group.addoption("--db-tool-keep-failed", dest="db_tool_keep_failed", action="store_true",
                    default=None, help="keep the database of a failing test and print its URL")
    group.addoption("--db-tool-local-dir", dest="db_tool_local_dir",
                    help="the project directory (default: $LOCAL_DIR, else the rootdir)")
    group.addoption("--db-tool-scratch", dest="db_tool_scratch", metavar="auto|data|DIR",
                    help="where the per-test copies live: auto (default: a tablespace on "
                         "/dev/shm when it is a tmpfs with room and the cluster is the "
                         "throw-away one), data (the cluster's data dir) or a tablespace in DIR")
    parser.addini("db_tool_mode", "throwaway or project", default="throwaway")
    parser.addini("db_tool_source", "hydrate or migrations", default="hydrate")
    parser.addini("db_tool_mock", "hydrate with USE_MOCK=1", type="bool", default=False)
    parser.addini("db_tool_pool", "database copies kept ready", default="8")
    parser.addini("db_tool_share", "function, class or module", default="function")
    parser.addini("db_tool_keep_failed", "keep failing tests' databases", type="bool",
                  default=False)
    parser.addini("db_tool_local_dir", "the project directory (relative to the rootdir)",
                  default="")
    parser.addini("db_tool_scratch", "auto, data or a directory for the per-test copies",
                  default="auto")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "db_tool(share='module'|'class'|'function'): how many tests share one "
        "db-tool database")


def _opt(config: pytest.Config, name: str) -> Any:
    value = config.getoption(name)
    return config.getini(name) if value is None else value


@dataclass
class TestDatabase:
    """One database handed to a test."""

    name: str
    url: str
    cluster: Cluster
    waited: float = 0.0  # seconds spent waiting for a copy to be ready
    kept: bool = False
    ahead: Any = field(default=None, repr=False)  # the connection db_conn gets, opened ahead

    __test__ = False  # not a test class, whatever its name says

    def query(self, sql: str) -> list[list[str | None]]:
        """Run SQL (simple protocol) and return the rows as text."""
        from db_tool import pgwire

        c = self.cluster
        with pgwire.connect(c.sockdir, c.port, c.superuser, self.name) as conn:
            return conn.query(sql)

    def psql(self, sql: str) -> str:
        """Run SQL through psql (meta-commands work) and return its output."""
        from db_tool import psql

        return psql.run_sql(self.url, sql, what="db_tool_database.psql").out


@dataclass
class DbToolSession:
    """The test session's cluster, template and pool, set up on first use."""

    config: pytest.Config
    run_id: str
    label: str
    _cluster: Cluster | None = None
    _pool: Pool | None = None
    _failure: str | None = None
    _stack: Any = None
    keep_running: list[bool] = field(default_factory=lambda: [False])
    kept: list[TestDatabase] = field(default_factory=list)
    shared: dict[str, TestDatabase] = field(default_factory=dict)
    template: str | None = None

    def _settings(self) -> Any:
        from db_tool.project_settings import ProjectSettings
        from db_tool.settings import environ

        env = environ()
        settings = ProjectSettings.from_env(env)
        local = _opt(self.config, "db_tool_local_dir")
        if local:
            root = Path(str(self.config.rootpath), local)
        elif settings.local_dir is None:
            root = Path(str(self.config.rootpath))
        else:
            return settings
        return ProjectSettings.from_env({**env, "LOCAL_DIR": str(root.absolute())})

    def pool(self) -> Pool:
        if self._pool is not None:
            return self._pool
        if self._failure is not None:
            pytest.fail(f"db-tool: {self._failure} (see the first error above)", pytrace=False)
        from db_tool.errors import Error

        message = ""
        try:
            self._pool = self._open()
        except Error as exc:
            self._failure = "the template database could not be built"
            message = exc.message + (f"\n{exc.detail}" if exc.detail else "")
        if self._pool is None:
            pytest.fail(f"db-tool: {message}", pytrace=False)
        return self._pool

    def _open(self) -> Pool:
        import contextlib

        from db_tool import output, template_db
        from db_tool.clone_pool import Pool

        settings = self._settings()
        recipe = template_db.Recipe(str(_opt(self.config, "db_tool_source")),
                                    bool(_opt(self.config, "db_tool_mock")))
        self._stack = contextlib.ExitStack()
        with output.step("prepare the test cluster and template"):
            state = template_db.state_dir(settings)
            cluster = self._stack.enter_context(template_db.session_cluster(
                settings, str(_opt(self.config, "db_tool_mode")), state,
                keep_running=self.keep_running))
            self._cluster = cluster
            key = template_db.template_key(settings, recipe, cluster.install.fingerprint())
            self.template = template_db.ensure_template(cluster, settings, recipe, key,
                                                        state=state, run_id=self.run_id)
        size = int(_opt(self.config, "db_tool_pool"))
        tablespace = self._scratch(cluster, self.template, size)
        # Copying threads: a CREATE DATABASE spends much of its time waiting (for the two
        # checkpoints of FILE_COPY, which concurrent copies share), so more copies in flight
        # keep up with tests that two could not: 200 back-to-back 2 ms tests at load 5 had a
        # median setup of 29-32 ms with 2 threads, 6-10 ms with 4, 1.5-1.8 ms with 6. xdist
        # workers share them out (each worker has its own pool on the same cluster).
        threads = max(2, min(size, COPY_THREADS // self._workers()))
        return Pool(cluster, self.template, size, workers=threads,
                    tablespace=tablespace).start()

    def _workers(self) -> int:
        """How many xdist workers run (1 without xdist)."""
        workerinput = getattr(self.config, "workerinput", None) or {}
        return max(1, int(workerinput.get("workercount") or 1))

    def _scratch(self, cluster: Cluster, template: str, size: int) -> str | None:
        """The tablespace for the copies (--db-tool-scratch), or None: the data dir."""
        from db_tool import clone_pool, pgwire

        where = str(_opt(self.config, "db_tool_scratch") or "auto")
        if where == "data":
            return None
        if where == "auto":
            if str(_opt(self.config, "db_tool_mode")) != "throwaway":
                return None  # no tablespace in the project's own cluster unless asked for
            with pgwire.connect(cluster.sockdir, cluster.port, cluster.superuser,
                                "postgres") as conn:
                (size_text,), = conn.query(
                    f"SELECT pg_database_size({pgwire.quote_literal(template)})::text")
            found = clone_pool.ram_dir(clone_pool.ram_need(int(size_text or 0), size,
                                                           self._workers()))
            if found is None:
                return None
            where = found
        name: str | None = self._stack.enter_context(
            clone_pool.scratch_tablespace(cluster, where))
        return name

    def new_database(self, label: str, *, connected: bool = False) -> TestDatabase:
        """A fresh copy; connected: for db_conn, with a connection opened in the background
        when the pool has one ready (the copy then keeps its pool name, dbt_p_…)."""
        pool = self.pool()
        cluster = self._cluster
        assert cluster is not None
        if connected:
            try:
                import psycopg
            except ImportError:
                connected = False  # db_conn says so
            else:
                pool.connect_with(lambda name: psycopg.connect(cluster.url_for(name)))
        handed = pool.acquire(pool.next_name(label), connected=connected)
        return TestDatabase(handed.name, cluster.url_for(handed.name), cluster, handed.waited,
                            ahead=handed.conn)

    def finish(self, db: TestDatabase) -> None:
        if db.kept:
            self.kept.append(db)
            self.keep_running[0] = True
            return
        assert self._pool is not None
        self._pool.release(db.name)

    def close(self) -> None:
        for db in list(self.shared.values()):
            self.finish(db)
        self.shared.clear()
        if self._pool is not None:
            self._pool.close()
        if self._stack is not None:
            self._stack.close()


_SESSION = pytest.StashKey[DbToolSession]()
_DB = pytest.StashKey[TestDatabase]()


def _session_of(config: pytest.Config) -> DbToolSession:
    session = config.stash.get(_SESSION, None)
    if session is None:
        workerinput = getattr(config, "workerinput", None) or {}
        run_id = str(workerinput.get("testrunuid") or f"{time.time_ns()}")
        session = DbToolSession(config, run_id, str(workerinput.get("workerid") or "main"))
        config.stash[_SESSION] = session
    return session


@pytest.fixture(scope="session")
def db_tool_session(pytestconfig: pytest.Config) -> Iterator[DbToolSession]:
    session = _session_of(pytestconfig)
    try:
        yield session
    finally:
        session.close()


def _share_of(item: pytest.Item, config: pytest.Config) -> str:
    marker = item.get_closest_marker("db_tool")
    share = str(marker.kwargs.get("share")) if marker and "share" in marker.kwargs \
        else str(_opt(config, "db_tool_share"))
    if share not in SHARES:
        raise pytest.UsageError(f"db_tool(share={share!r}): use one of {', '.join(SHARES)}")
    return share


@pytest.fixture
def db_tool_database(
    request: pytest.FixtureRequest, db_tool_session: DbToolSession
) -> Iterator[TestDatabase]:
    item = request.node
    share = _share_of(item, request.config)
    if share != "function":
        owner_type = pytest.Class if share == "class" else pytest.Module
        owner = item.getparent(owner_type) or item.getparent(pytest.Module)
        assert owner is not None
        db = db_tool_session.shared.get(owner.nodeid)
        if db is None:
            db = db_tool_session.new_database(owner.name)
            db_tool_session.shared[owner.nodeid] = db

            def done(key: str = owner.nodeid) -> None:
                shared = db_tool_session.shared.pop(key, None)
                if shared is not None:
                    db_tool_session.finish(shared)

            owner.addfinalizer(done)
        item.stash[_DB] = db
        yield db
        return
    db = db_tool_session.new_database(item.name, connected="db_conn" in request.fixturenames)
    item.stash[_DB] = db
    try:
        yield db
    finally:
        db_tool_session.finish(db)


@pytest.fixture
def db_url(db_tool_database: TestDatabase) -> str:
    return db_tool_database.url


@pytest.fixture
def db_conn(db_tool_database: TestDatabase) -> Iterator[Any]:
    try:
        import psycopg
    except ImportError:
        pytest.fail("db_conn needs psycopg: pip install 'psycopg[binary]' (or use db_url)",
                    pytrace=False)
    conn, db_tool_database.ahead = db_tool_database.ahead, None
    if conn is None:
        conn = psycopg.connect(db_tool_database.url)
    try:
        yield conn
    finally:
        conn.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        db = item.stash.get(_DB, None)
        if db is not None and _opt(item.config, "db_tool_keep_failed"):
            db.kept = True
            report.sections.append(("db-tool", f"kept the database of this test: {db.url}"))
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is None or not session.kept:
        return
    terminalreporter.section("db-tool")
    for db in session.kept:
        terminalreporter.write_line(f"kept {db.name}: {db.url}")
    if session._cluster is not None:
        terminalreporter.write_line(
            f"the cluster in {session._cluster.working_dir} keeps running for them; the next "
            "test run drops them")
