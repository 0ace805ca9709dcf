"""`database branch …`: databases of the project's cluster used like git branches (real
clusters: the tiny project of tests/dbproject.py, deployed and running)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from db_tool import pgbin
from tests.dbproject import Project, project
from tests.helpers import run_cmd

pytestmark = pytest.mark.slow


@pytest.fixture
def proj(tmp_path: Path) -> Iterator[Project]:
    with project(tmp_path / "cache", PG_REUSE="1") as p:
        yield p


def _db(p: Project, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cmd(["database", *argv], {**p.env, **env})


def _sourced(p: Project, **env: str) -> dict[str, str]:
    """What `. postgres-init` exports into a shell."""
    r = run_cmd(["sh", "-c", '. postgres-init >/dev/null && echo "$PGURL" && '
                 'echo "$POSTGRESQL_DATABASE"'], {**p.env, **env})
    assert r.returncode == 0, r.stderr
    url, database = r.stdout.splitlines()
    return {"PGURL": url, "POSTGRESQL_DATABASE": database}


def test_branch_create_list_switch_drop_end_to_end(proj: Project) -> None:
    r = _db(proj, "branch", "create", "feature")
    assert r.returncode == 0, r.stderr
    assert "created branch feature from testdb" in r.stderr
    proj.psql("INSERT INTO public.item (id, name) VALUES (2, 'only on the branch')", "feature")
    assert proj.psql("SELECT count(*) FROM public.item", "testdb") == "1"
    listing = _db(proj, "branch", "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[1].startswith("* testdb") and "(main)" in lines[1]
    feature = next(ln for ln in lines if " feature " in f"{ln} ")
    assert feature.rstrip().endswith("testdb") and "MiB" in feature

    r = _db(proj, "branch", "switch", "feature")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == proj.url("feature")
    exported = _sourced(proj)
    assert exported == {"PGURL": proj.url("feature"), "POSTGRESQL_DATABASE": "feature"}
    rows = subprocess.run(["psql", "-X", "-At", "-d", exported["PGURL"], "-c",
                           "SELECT name FROM public.item WHERE id = 2"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert rows == "only on the branch"
    status = _db(proj, "status", "--json")
    assert '"branch": "feature"' in status.stdout
    assert _db(proj, "branch", "current").stdout.strip() == "feature"

    r = _db(proj, "branch", "drop", "feature")
    assert r.returncode == 0, r.stderr
    assert "testdb is the current branch again" in r.stderr
    assert _sourced(proj)["POSTGRESQL_DATABASE"] == "testdb"
    assert proj.psql("SELECT count(*) FROM pg_database WHERE datname = 'feature'") == "0"


def test_branch_create_from_another_branch_and_reset_recopies_the_parent(proj: Project) -> None:
    assert _db(proj, "branch", "create", "a").returncode == 0
    proj.psql("INSERT INTO public.item (id, name) VALUES (10, 'in a')", "a")
    r = _db(proj, "branch", "create", "b", "--from", "a")
    assert r.returncode == 0, r.stderr
    assert proj.psql("SELECT count(*) FROM public.item", "b") == "2"
    proj.psql("DELETE FROM public.item", "b")
    r = _db(proj, "branch", "reset", "b")
    assert r.returncode == 0, r.stderr
    assert "fresh copy of a" in r.stderr
    assert proj.psql("SELECT count(*) FROM public.item", "b") == "2"


def test_branches_survive_pg_reuse_and_a_restart(proj: Project) -> None:
    assert _db(proj, "branch", "create", "kept").returncode == 0
    assert _db(proj, "branch", "switch", "kept").returncode == 0
    from db_tool.cluster import Cluster
    from db_tool.settings import ClusterConfig

    Cluster(ClusterConfig.from_env(proj.env)).stop()
    assert _sourced(proj)["PGURL"] == proj.url("kept")
    assert "kept" in _db(proj, "branch", "list").stdout


def test_branch_commands_refuse_what_they_must_not_do(proj: Project) -> None:
    r = _db(proj, "branch", "drop", "testdb")
    assert r.returncode == 1 and "main database" in r.stderr
    r = _db(proj, "branch", "switch", "nope")
    assert r.returncode == 1 and "there is no branch nope" in r.stderr
    assert _db(proj, "branch", "create", "dup").returncode == 0
    r = _db(proj, "branch", "create", "dup")
    assert r.returncode == 1 and "exists already" in r.stderr
    r = _db(proj, "branch", "create", "x" * 64)
    assert r.returncode == 1 and "longer than 63 bytes" in r.stderr
    r = _db(proj, "branch", "create")
    assert r.returncode == 3
    r = _db(proj, "branch", "frobnicate")
    assert r.returncode == 9


def test_branch_create_names_the_sessions_in_the_way(proj: Project) -> None:
    holder = subprocess.Popen(
        ["psql", "-X", "-d", proj.url("testdb"), "-c", "SELECT pg_sleep(30)"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = 50
        while deadline and proj.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' "
                "AND pid <> pg_backend_pid()") == "0":
            deadline -= 1
            subprocess.run(["sleep", "0.1"], check=True)
        r = _db(proj, "branch", "create", "blocked")
        assert r.returncode == 1
        assert "other sessions are connected to it (pid" in r.stderr
        assert "psql" in r.stderr
    finally:
        holder.kill()
        holder.wait()


def test_branch_create_with_pg_cron_connected_copies_with_the_server_stopped(
    tmp_path: Path,
) -> None:
    if not pgbin.find().has_library("pg_cron"):
        pytest.skip("pg_cron is not installed for this PostgreSQL (postgresql-NN-cron)")
    with project(tmp_path / "cache", PG_REUSE="1") as p:
        from db_tool.cluster import Cluster
        from db_tool.settings import ClusterConfig

        Cluster(ClusterConfig.from_env(p.env)).stop()
        p.env["PG_SHARED_PRELOAD_LIBRARIES"] = "pg_cron"
        assert run_cmd(["postgres-init"], p.env).returncode == 0
        assert p.psql("SELECT count(*) FROM pg_stat_activity "
                      "WHERE backend_type = 'pg_cron launcher'") == "1"
        r = _db(p, "branch", "create", "cronless")
        assert r.returncode == 0, r.stderr
        assert "pg_cron's scheduler is connected to testdb" in r.stderr
        assert p.psql("SELECT count(*) FROM public.item", "cronless") == "1"
        assert "cronless" in _db(p, "branch", "list").stdout
        assert p.psql("SELECT count(*) FROM pg_stat_activity "
                      "WHERE backend_type = 'pg_cron launcher'") == "1", "pg_cron is back"


def test_pg_branch_from_git_uses_the_branch_of_the_git_checkout(proj: Project) -> None:
    root = proj.root
    git = ["git", "-C", str(root), "-c", "user.email=t@example.org", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "start"], check=True)
    assert _sourced(proj, PG_BRANCH_FROM_GIT="1")["POSTGRESQL_DATABASE"] == "testdb"
    subprocess.run([*git, "checkout", "-q", "-b", "feature/login"], check=True)
    exported = _sourced(proj, PG_BRANCH_FROM_GIT="1")
    assert exported["POSTGRESQL_DATABASE"] == "feature/login"
    assert "feature%2Flogin" in exported["PGURL"]
    assert proj.psql("SELECT count(*) FROM public.item", "feature/login") == "1"
    listing = _db(proj, "branch", "list").stdout
    assert "* feature/login" in listing


def test_backup_and_diff_take_a_branch(proj: Project) -> None:
    assert _db(proj, "branch", "create", "drift").returncode == 0
    proj.psql("ALTER TABLE public.item ADD COLUMN extra int", "drift")
    r = _db(proj, "backup", "--branch", "drift")
    assert r.returncode == 0, r.stderr
    assert (proj.backup_dir / "database_name").read_text().strip() == "drift"
    drifted = _db(proj, "diff")
    assert drifted.returncode == 1, drifted.stdout + drifted.stderr
    assert "extra integer" in drifted.stdout
    main = _db(proj, "diff", "--branch", "testdb")
    assert main.returncode == 0, main.stdout + main.stderr


@pytest.mark.parametrize("parent", ["main", 'we"ird\\name', "tab\there", "ünïcödé", "x\x01y",
                                    "it's"])
def test_branch_comment_round_trips_any_parent_name_as_json(parent: str) -> None:
    import json

    from db_tool.clone import COMMENT_TAG, BranchMeta

    meta = BranchMeta(parent, 1733000000.123456)
    comment = meta.to_comment()
    assert json.loads(comment[len(COMMENT_TAG):]) == {"parent": parent,
                                                      "created": 1733000000.123456}
    assert BranchMeta.from_comment(comment) == meta
