"""branch: databases of the project's cluster used like git branches.

A branch is a template copy of another database of the same cluster (`CREATE DATABASE …
TEMPLATE`), so it survives PG_REUSE like any database, and costs one copy to make. Its parent
and creation time live in the database's comment; which branch is in use ("switched to") is
the file <working dir>/db-tool.branch, read by postgres-init, which then exports the branch's
URL. The main database (PG_DATABASE) is the branch nobody switched away from.
"""

from __future__ import annotations

import contextlib
import time

from db_tool import clone, output, pgwire
from db_tool.clusterdir import BRANCH_FILE as STATE_FILE
from db_tool.conninfo import build_url
from db_tool.errors import Error
from db_tool.record import Frozen

TYPE_CHECKING = False  # no typing at run time: `branch create` is a hot path
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from db_tool.cluster import Cluster
    from db_tool.settings import ClusterConfig


class Where(Frozen):
    """The cluster as the branch commands see it: an address. Starting or stopping it (rare)
    imports the Cluster machinery; a branch command on a running cluster never does, which
    keeps `branch create` close to the cost of the copy itself."""

    __slots__ = _fields = ("config",)
    config: ClusterConfig

    def __init__(self, config: ClusterConfig) -> None:
        self._set(config=config)

    @property
    def working_dir(self) -> Path:
        return self.config.working_dir

    @property
    def database(self) -> str:
        return self.config.database

    @property
    def sockdir(self) -> Path:
        return self.config.working_dir / "sock"

    def url_for(self, database: str) -> str:
        return build_url(self.config.superuser, database, self.sockdir, self.config.port)

    def connect(self) -> pgwire.Connection:
        return pgwire.connect(self.sockdir, self.config.port, self.config.superuser, "postgres")

    def cluster(self) -> Cluster:
        from db_tool.cluster import Cluster

        return Cluster(self.config)


class Branch(Frozen):
    """One branch (database) of the cluster."""

    __slots__ = _fields = ("name", "size_bytes", "created", "parent", "current", "main")
    name: str
    size_bytes: int
    created: float | None  # None for the main database and databases made by hand
    parent: str | None
    current: bool
    main: bool

    def __init__(self, name: str, size_bytes: int, created: float | None, parent: str | None,
                 current: bool, main: bool) -> None:
        self._set(name=name, size_bytes=size_bytes, created=created, parent=parent,
                  current=current, main=main)


def state_path(cluster: Where) -> Path:
    return cluster.working_dir / STATE_FILE


def current(cluster: Where) -> str:
    """The database postgres-init and `database` use: the switched-to branch, else main."""
    try:
        name = state_path(cluster).read_text(encoding="utf-8").strip("\n")
    except (FileNotFoundError, NotADirectoryError):
        return cluster.database
    return name or cluster.database


def _set_current(cluster: Where, name: str) -> None:
    path = state_path(cluster)
    if name == cluster.database:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".{STATE_FILE}.tmp")
    tmp.write_text(name + "\n", encoding="utf-8")
    tmp.replace(path)


@contextlib.contextmanager
def connected(cluster: Where) -> Iterator[pgwire.Connection]:
    """A connection to the cluster's `postgres` database (starting a stopped cluster)."""
    try:
        conn = cluster.connect()
    except pgwire.PgError as exc:
        if exc.code != "08006":  # 08006: no server on the socket
            raise Error(f"cannot connect to the cluster in {cluster.working_dir}: "
                        f"{exc.message}") from None
        server = cluster.cluster()
        if not server.is_initialised():
            raise Error(
                f"there is no cluster in {cluster.working_dir}: run `. postgres-init` (or "
                "`database deploy`) first"
            ) from None
        server.start()
        conn = cluster.connect()
    with conn:
        yield conn


def _copy(cluster: Where, name: str, source: str) -> clone.Clone:
    """Copy source to the branch name, recording its parent in its comment."""
    comment = clone.BranchMeta(source, time.time()).to_comment()
    try:
        with connected(cluster) as conn:
            made = clone.clone(conn, name, source)
            clone.set_comment(conn, name, comment)
            return made
    except clone.CronInTheWay:
        pass
    output.warn(f"pg_cron's scheduler is connected to {source}: restarting the server to copy "
                "it (open sessions are closed)")
    started = time.monotonic()
    server = cluster.cluster()
    server.stop()
    try:
        _offline(server, [
            clone.clone_sql(name, source),
            f"COMMENT ON DATABASE {pgwire.quote_ident(name)} IS {pgwire.quote_literal(comment)}",
        ])
    finally:
        server.start()
    return clone.Clone(name, source, time.monotonic() - started)


def _offline(cluster: Cluster, statements: list[str]) -> None:
    """Run statements in single-user mode (no background workers, no other sessions)."""
    from db_tool import proc

    result = proc.run(
        [cluster.install.tool("postgres"), "--single", "-D", str(cluster.datadir), "-F",
         "-c", "listen_addresses=", "-c", "logging_collector=off", "postgres"],
        input="".join(s + "\n" for s in statements), user=cluster.run_as, cwd="/",
        env=cluster.server_process_env(), check=False, what="postgres --single",
    )
    errors = [ln for ln in result.err.splitlines() if "ERROR:" in ln]
    if not result.ok or errors:
        raise Error(f"copying the database with the server stopped failed: "
                    f"{(errors or [result.err.strip()])[0]}")


def _require_branch(conn: pgwire.Connection, cluster: Where, name: str) -> None:
    if not clone.exists(conn, name):
        raise Error(f"there is no branch {name}: `database branch list` shows them, "
                    f"`database branch create {name}` makes it")


def create(cluster: Where, name: str, source: str | None = None) -> clone.Clone:
    clone.check_name(name, "branch")
    return _copy(cluster, name, source or current(cluster))


def reset(cluster: Where, name: str) -> clone.Clone:
    """Drop the branch and copy its parent again (the parent recorded when it was made)."""
    if name == cluster.database:
        raise Error(f"{name} is the main database, not a branch: there is nothing to reset it to")
    with connected(cluster) as conn:
        _require_branch(conn, cluster, name)
        infos = {d.name: d for d in clone.databases(conn)}
        meta = clone.BranchMeta.from_comment(infos[name].comment if name in infos else None)
        if meta is None:
            raise Error(f"{name} was not made by `database branch create`, so its parent is "
                        "unknown: drop it and create it again with --from")
        if not clone.exists(conn, meta.parent):
            raise Error(f"the parent of {name}, {meta.parent}, does not exist any more: drop "
                        f"{name} and create it again with --from")
        clone.drop(conn, name)
    return _copy(cluster, name, meta.parent)


def drop(cluster: Where, name: str) -> bool:
    """Drop a branch; True when it was the current one (main is current again)."""
    if name == cluster.database:
        raise Error(f"{name} is the main database (PG_DATABASE), not a branch: it is not "
                    "dropped by `branch drop`")
    clone.check_name(name, "branch")
    with connected(cluster) as conn:
        _require_branch(conn, cluster, name)
        clone.drop(conn, name)
    was_current = current(cluster) == name
    if was_current:
        _set_current(cluster, cluster.database)
    return was_current


def switch(cluster: Where, name: str) -> str:
    """Make `name` the database postgres-init exports from now on; returns its URL."""
    with connected(cluster) as conn:
        _require_branch(conn, cluster, name)
    _set_current(cluster, name)
    return cluster.url_for(name)


def list_branches(cluster: Where) -> list[Branch]:
    active = current(cluster)
    with connected(cluster) as conn:
        infos = clone.databases(conn)
    rows = []
    for info in infos:
        meta = clone.BranchMeta.from_comment(info.comment)
        is_main = info.name == cluster.database
        if meta is None and not is_main and info.name != active:
            continue  # postgres, the plugin's test databases, databases made by hand
        rows.append(Branch(info.name, info.size_bytes, meta.created if meta else None,
                           meta.parent if meta else None, info.name == active, is_main))
    rows.sort(key=lambda b: (not b.main, b.name))
    return rows


def database_for_init(cluster: Where, *, from_git: bool = False, git_dir: str = ".") -> str:
    """The database postgres-init exports: the branch of the git branch (PG_BRANCH_FROM_GIT),
    else the switched-to branch, else main. A missing branch is copied from main."""
    name = current(cluster)
    git_branch = None
    if from_git:
        from pathlib import Path

        git_branch = git_branch_of(Path(git_dir))
        if git_branch is None:
            output.warn(f"PG_BRANCH_FROM_GIT=1 but {git_dir} is not a git checkout; using "
                        f"{cluster.database}")
            git_branch = "HEAD"
        name = cluster.database if git_branch in ("main", "master", "HEAD") else git_branch
        name = name.encode("utf-8")[:clone.NAME_MAX].decode("utf-8", "ignore")
    if name == cluster.database:
        if from_git:
            _set_current(cluster, name)
        return name
    with connected(cluster) as conn:
        found = clone.exists(conn, name)
    if not found:
        output.info(f"branch {name} does not exist in this cluster yet: copying "
                    f"{cluster.database} to it")
        _copy(cluster, name, cluster.database)
    if from_git:
        _set_current(cluster, name)
    return name


def git_branch_of(directory: Path) -> str | None:
    """The checked-out git branch of `directory`, or None (no git, not a repository)."""
    from db_tool import proc

    try:
        result = proc.run(["git", "-C", str(directory), "rev-parse", "--abbrev-ref", "HEAD"],
                          check=False, what="git rev-parse")
    except Error:
        return None
    name = result.out.strip()
    return name if result.ok and name else None
