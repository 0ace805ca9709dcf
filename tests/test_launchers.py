"""The installed launchers (scripts/): every command exists and answers --help; `db-tool`
is `database`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import base_env, run_cmd, script


@pytest.mark.parametrize("name", ["database", "db-tool", "postgres-init", "postgres-cleanup",
                                  "migrator", "db-ops"])
def test_every_launcher_is_installed_and_has_help(name: str) -> None:
    r = run_cmd([script(name), "--help"], base_env())
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout


def test_db_tool_launcher_is_the_database_command() -> None:
    a = run_cmd([script("database"), "--help"], base_env())
    b = run_cmd([script("db-tool"), "--help"], base_env())
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout



# ------------------------------------------------------------------ the fast start (-S boot)

_REPO = Path(__file__).resolve().parent.parent
_PIP_WRAPPER = (  # what pip (distlib) writes for the db-tool-run console script
    "# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom db_tool.cli.launch import entry\n"
    "if __name__ == '__main__':\n"
    "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
    "    sys.exit(entry())\n"
)
_ARGVS = (["postgres-cleanup"], ["migrator", "--no-such-option"], ["database", "frob"],
          ["postgres-init"], ["db-tool", "--help"], ["db-ops", "--help"])


def _venv(tmp_path: Path, *, installed: bool = True, system_site: bool = False,
          pth: dict[str, str] | None = None, shebang: str | None = None,
          wrapper: str = _PIP_WRAPPER) -> Path:
    """A venv made by `python -m venv` with db-tool in it as pip installs it: the package in
    site-packages (installed) or only a path .pth to src/ (an editable install), the sh
    launchers and db-tool-run in bin. Returns its bin dir."""
    root = tmp_path / "venv"
    argv = [sys.executable, "-m", "venv", "--without-pip", str(root)]
    subprocess.run(argv + (["--system-site-packages"] if system_site else []), check=True)
    site_packages = (root / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" /
                     "site-packages")
    if installed:
        shutil.copytree(_REPO / "src" / "db_tool", site_packages / "db_tool",
                        ignore=shutil.ignore_patterns("__pycache__"))
    else:
        (site_packages / "__editable__.db_tool-0.1.0.pth").write_text(
            f"# an editable install\n\n{_REPO / 'src'}\n")
    for name, text in (pth or {}).items():
        (site_packages / name).write_text(text)
    bindir = root / "bin"
    shebang = f"#!{bindir / 'python3'}" if shebang is None else shebang
    (bindir / "db-tool-run").write_text(f"{shebang}\n{wrapper}")
    for launcher in (_REPO / "scripts").iterdir():
        shutil.copy(launcher, bindir / launcher.name)
    for f in bindir.iterdir():
        if not f.is_symlink():  # bin/python3 links to the system's: not ours to chmod
            f.chmod(0o755)
    return bindir


def _run(bindir: Path, *argv: str, **extra_env: str,
         ) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run a command of bindir; the result without the import-time lines in its stderr, and
    the modules the interpreter imported at top level, and sitecustomize wherever it was
    (PYTHONPROFILEIMPORTTIME)."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPROFILEIMPORTTIME": "1", "HOME": "/nonexistent",
           **extra_env}
    r = run_cmd([str(bindir / argv[0]), *argv[1:]], env)
    lines = r.stderr.splitlines(keepends=True)
    names = [ln.rstrip("\n").rsplit("|", 1)[1] for ln in lines if ln.startswith("import time:")]
    r.stderr = "".join(ln for ln in lines if not ln.startswith("import time:"))
    return r, {n.strip() for n in names if n[1:2] != " " or n.strip() == "sitecustomize"}


def _behaves_as_db_tool_run(bindir: Path, *, fast: bool, noise: str = "") -> None:
    """Every launcher answers as `db-tool-run <command>` run as usual does (output, messages,
    exit code; `noise`: stderr only the usual run prints), and skips site exactly when fast."""
    for argv in _ARGVS:
        r, top = _run(bindir, *argv)
        plain, plain_top = _run(bindir, "db-tool-run", *argv)
        assert "site" in plain_top
        assert (r.returncode, r.stdout) == (plain.returncode, plain.stdout), argv
        assert (r.stderr if fast else r.stderr.replace(noise, "")) == \
            plain.stderr.replace(noise, ""), argv
        assert ("site" not in top) == fast, (argv, sorted(top))
        assert ("sitecustomize" in top) == ("sitecustomize" in plain_top), argv
        if fast:
            assert "re" not in top and "re" in plain_top, argv  # pip's wrapper imports re
    r, _ = _run(bindir, "postgres-cleanup")
    assert (r.returncode, r.stderr.replace(noise, "")) == (
        0, "postgres-cleanup: neither PG_WORKING_DIR nor LOCAL_DIR is set; nothing to stop\n")


def test_launchers_in_a_venv_start_without_the_site_module(tmp_path: Path) -> None:
    # These two .pth files only serve imports of distutils and of a namespace package.
    _behaves_as_db_tool_run(_venv(tmp_path, pth={
        "distutils-precedence.pth": "import os; os.write(2, b'pth ran\\n')\n",
        "testing.postgresql-1.3.0-py2.7-nspkg.pth": "import os; os.write(2, b'pth ran\\n')\n",
    }), fast=True, noise="pth ran\n")


def test_launchers_of_an_editable_install_add_its_pth_dir_without_site(tmp_path: Path) -> None:
    _behaves_as_db_tool_run(_venv(tmp_path, installed=False), fast=True)


def test_launchers_run_site_for_a_pth_file_that_runs_code(tmp_path: Path) -> None:
    bindir = _venv(tmp_path, pth={"coverage.pth": "import os; os.write(2, b'pth ran\\n')\n"})
    _behaves_as_db_tool_run(bindir, fast=False, noise="pth ran\n")
    r, _ = _run(bindir, "postgres-cleanup")
    assert r.stderr.startswith("pth ran\n")


def test_launchers_run_site_in_a_venv_with_system_site_packages(tmp_path: Path) -> None:
    _behaves_as_db_tool_run(_venv(tmp_path, system_site=True), fast=False)


def test_launchers_run_db_tool_run_itself_for_a_shebang_with_arguments(tmp_path: Path) -> None:
    bindir = tmp_path / "venv" / "bin"
    _behaves_as_db_tool_run(_venv(tmp_path, shebang=f"#!{bindir / 'python3'} -X utf8"),
                            fast=False)


def test_launchers_run_db_tool_run_itself_on_a_python_outside_a_venv(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    shutil.copytree(_REPO / "src" / "db_tool", lib / "db_tool",
                    ignore=shutil.ignore_patterns("__pycache__"))
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    bindir = _venv(tmp_path, installed=False, shebang=f"#!{base}", wrapper=(
        f"import sys\nsys.path.insert(0, {str(lib)!r})\n{_PIP_WRAPPER}"))
    _behaves_as_db_tool_run(bindir, fast=False)


def test_launchers_run_a_wrapper_they_do_not_know_as_it_is(tmp_path: Path) -> None:
    wrapper = "import os\nos.write(2, b'own wrapper\\n')\n" + _PIP_WRAPPER
    bindir = _venv(tmp_path, wrapper=wrapper)
    _behaves_as_db_tool_run(bindir, fast=False, noise="own wrapper\n")
    r, top = _run(bindir, "postgres-cleanup")
    assert r.stderr.startswith("own wrapper\n") and "site" in top


def test_launchers_fast_start_keeps_pythonpath_first_and_runs_sitecustomize(
    tmp_path: Path,
) -> None:
    extra = tmp_path / "pythonpath"
    extra.mkdir()
    (extra / "sitecustomize.py").write_text("import os\nos.write(2, b'custom\\n')\n")
    bindir = _venv(tmp_path)
    r, top = _run(bindir, "postgres-cleanup", PYTHONPATH=str(extra))
    assert "site" not in top and r.stderr.startswith("custom\npostgres-cleanup: "), r.stderr


def test_every_launcher_starts_through_the_one_boot_file_and_every_script_is_installed(
        ) -> None:
    import tomllib

    launchers = [p for p in (_REPO / "scripts").iterdir() if p.name != "db-tool-boot"]
    for launcher in launchers:
        text = launcher.read_text()
        assert "/db-tool-boot" in text and "import " not in text, launcher.name
    listed = tomllib.loads((_REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "script-files"]
    assert sorted(listed) == sorted(f"scripts/{p.name}" for p in (_REPO / "scripts").iterdir())


def test_launchers_without_the_boot_file_run_db_tool_run_as_usual(tmp_path: Path) -> None:
    bindir = _venv(tmp_path)
    (bindir / "db-tool-boot").unlink()
    r, top = _run(bindir, "migrator", "--no-such-option")
    assert "site" in top, "db-tool-run ran without site: the boot file was not needed?"
    assert r.returncode == 1 and r.stderr.startswith("migrator: "), r.stderr


def test_the_launch_module_releases_sigint_without_importing_signal_or_enum() -> None:
    code = ("import sys, db_tool.cli.launch\n"
            "import _signal\n"
            "print(sorted(m for m in ('signal', 'enum') if m in sys.modules),\n"
            "      _signal.SIGINT in _signal.pthread_sigmask(_signal.SIG_BLOCK, []))\n")
    r = subprocess.run(["env", "--block-signal=INT", sys.executable, "-S", "-c", code],
                       env={"PYTHONPATH": str(_REPO / "src")}, capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.stdout.strip() == "[] False", r.stderr
