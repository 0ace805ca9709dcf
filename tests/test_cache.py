"""`database cache`: show and prune db-tool's cache dir (commands/cache.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from db_tool.commands import cache
from tests.helpers import run_cmd, script


def _template(root: Path, key: str, described: str | None, age_days: float = 0) -> Path:
    t = root / "db-tool" / "templates" / key
    (t / "data").mkdir(parents=True)
    (t / "data" / "PG_VERSION").write_text("15\n")
    (t / "data" / "blob").write_bytes(b"x" * 300_000)
    if described is not None:
        (t / "ready").write_text(f"db-tool template v3\n{described}\nend\n")
    when = time.time() - age_days * cache.DAY
    for p in (t, t / "ready", t / "data"):
        if p.exists():
            os.utime(p, (when, when))
    return t


def test_why_prune_keeps_a_used_template_of_an_installed_postgres(tmp_path: Path) -> None:
    real = "PostgreSQL 15.8 from /usr/lib/postgresql/15/bin (found via distro)"
    kept = cache._template(_template(tmp_path, "a", real))
    assert cache.why_prune(kept, everything=False, older_than_days=30) is None
    assert cache.why_prune(kept, everything=True, older_than_days=30) == "--all"
    old = cache._template(_template(tmp_path, "b", real, age_days=40))
    assert cache.why_prune(old, everything=False, older_than_days=30) == "unused for 40 days"
    gone = cache._template(_template(tmp_path, "c", "PostgreSQL 14.1 from /nonexistent/bin "
                                                   "(found via PG_BIN_DIR)"))
    assert "is gone" in str(cache.why_prune(gone, everything=False, older_than_days=30))
    unfinished = cache._template(_template(tmp_path, "d", None))
    assert "not finished" in str(cache.why_prune(unfinished, everything=False,
                                                 older_than_days=30))


def test_database_cache_lists_and_prunes(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    real = "PostgreSQL 15.8 from /usr/lib/postgresql/15/bin (found via distro)"
    keep = _template(xdg, "keep", real)
    gone = _template(xdg, "gone", "PostgreSQL 14.1 from /nonexistent/bin (found via PG_BIN_DIR)")
    env = {"PATH": os.environ["PATH"], "XDG_CACHE_HOME": str(xdg), "LOCAL_DIR": str(tmp_path)}
    r = run_cmd([script("database"), "cache"], env)
    assert r.returncode == 0, r.stderr
    assert str(xdg / "db-tool") in r.stdout
    assert "templates/keep" in r.stdout and real in r.stdout and "KiB" in r.stdout
    r = run_cmd([script("database"), "cache", "prune", "--dry-run"], env)
    assert r.returncode == 0, r.stderr
    assert f"would remove {gone}" in r.stdout and "keep" not in r.stdout
    assert gone.exists()
    r = run_cmd([script("database"), "cache", "prune"], env)
    assert r.returncode == 0, r.stderr
    assert not gone.exists() and keep.exists()
    assert "removed 1 entries" in r.stderr
    r = run_cmd([script("database"), "cache", "prune", "--all"], env)
    assert r.returncode == 0 and not keep.exists()
    r = run_cmd([script("database"), "cache", "prune", "--older-than", "soon"], env)
    assert r.returncode == 9 and "--older-than" in r.stderr


def test_database_cache_shows_a_real_template_after_init(cluster_env: dict[str, str],
                                                         tmp_path: Path) -> None:
    env = {**cluster_env, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 60
    templates = tmp_path / "xdg" / "db-tool" / "templates"
    while not list(templates.glob("*/ready")) and time.monotonic() < deadline:
        time.sleep(0.2)
    r = run_cmd([script("database"), "cache"], env)
    assert r.returncode == 0, r.stderr
    assert "templates/" in r.stdout and "MiB" in r.stdout and "PostgreSQL 15" in r.stdout
