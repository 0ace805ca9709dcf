"""The template cache (template_cache.py) and where caches live (cachedir.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from db_tool import cachedir
from db_tool.cachedir import CacheLocations
from tests.helpers import run_cmd, script

SANDBOX_RUN = Path("/work/shared/tools/sandbox-run")
VENV_BIN = Path(sys.executable).parent


def _no_home_env(env: dict[str, str], home: str | None) -> dict[str, str]:
    out = {k: v for k, v in env.items() if k not in ("XDG_CACHE_HOME", "HOME")}
    if home is not None:
        out["HOME"] = home
    out["HECTIC_LOG"] = "debug"
    return out


# ---- where the cache lives ------------------------------------------------------------------
def test_cache_dir_prefers_xdg_then_home(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    loc = CacheLocations(str(tmp_path / "xdg"), str(tmp_path / "home"), str(tmp_path))
    assert cachedir.choose(loc, None) == tmp_path / "xdg" / "db-tool"
    loc = CacheLocations(None, str(tmp_path / "home"), str(tmp_path))
    assert cachedir.choose(loc, None) == tmp_path / "home" / ".cache" / "db-tool"


def test_cache_dir_never_creates_a_missing_home(tmp_path: Path) -> None:
    loc = CacheLocations(None, str(tmp_path / "homeless-shelter"), str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    near = tmp_path / "project"
    near.mkdir()
    chosen = cachedir.choose(loc, near)
    assert chosen == near / f".db-tool-cache-{os.geteuid()}"
    assert not (tmp_path / "homeless-shelter").exists()
    assert chosen.stat().st_mode & 0o777 == 0o700


def test_cache_dir_falls_back_to_tmpdir_then_to_none(tmp_path: Path) -> None:
    home_file = tmp_path / "home-is-a-file"
    home_file.write_text("")
    near = tmp_path / "project"
    near.mkdir()
    (near / f".db-tool-cache-{os.geteuid()}").write_text("not a dir")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    loc = CacheLocations(None, str(home_file), str(tmp))
    assert cachedir.choose(loc, near) == tmp / f"db-tool-cache-{os.geteuid()}"
    shutil.rmtree(tmp / f"db-tool-cache-{os.geteuid()}")
    (tmp / f"db-tool-cache-{os.geteuid()}").write_text("not a dir either")
    assert cachedir.choose(loc, near) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a dir owned by another user")
def test_cache_dir_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    planted = tmp / f"db-tool-cache-{os.geteuid()}"
    planted.mkdir(parents=True)
    os.chown(planted, 65534, 65534)
    loc = CacheLocations(None, None, str(tmp))
    assert cachedir.choose(loc, None) is None


def test_fresh_init_without_a_home_uses_a_cache_next_to_the_working_dir(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    env = _no_home_env(cluster_env, str(tmp_path / "homeless-shelter"))
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0, r.stderr
    cache = tmp_path / f".db-tool-cache-{os.geteuid()}"
    assert f"template cache: using {cache}" in r.stderr
    assert (cache / "templates").is_dir()
    assert not (tmp_path / "homeless-shelter").exists()


def test_fresh_init_with_no_usable_cache_runs_plain_initdb(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    for blocked in (tmp_path / f".db-tool-cache-{os.geteuid()}",
                    tmp / f"db-tool-cache-{os.geteuid()}"):
        blocked.write_text("in the way")
    env = {**_no_home_env(cluster_env, None), "TMPDIR": str(tmp)}
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 0, r.stderr
    assert "working without a cache" in r.stderr
    assert "started a fresh cluster" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not SANDBOX_RUN.exists(),
                    reason=f"needs root and {SANDBOX_RUN} (the build-sandbox pass)")
@pytest.mark.parametrize("who", ["--user=sandbox", "--root"])
def test_fresh_init_in_a_build_sandbox_with_homeless_shelter(who: str) -> None:
    argv = [str(SANDBOX_RUN), *who.split("="), "--bin", str(VENV_BIN), "--", "sh", "-c",
            'export PG_WORKING_DIR="$PWD/pg" PG_PORT=5471 PG_SHARED_PRELOAD_LIBRARIES=; '
            "postgres-init && postgres-init && database bundle path >/dev/null; rc=$?; "
            "postgres-cleanup; exit $rc"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
