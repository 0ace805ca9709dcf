"""db_tool.cli.lean_pathlib: pathlib imported with re, fnmatch and urllib.parse deferred until
used, and every pathlib behaviour unchanged. Each test runs a fresh interpreter: the point is
what a process that starts as db-tool's commands do has loaded."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import base_env, run_cmd, run_fresh_interpreter, script

DEFERRED = ["re", "fnmatch", "urllib.parse", "ipaddress", "enum", "functools", "collections"]
NOT_ON_THE_STOP = [*DEFERRED, "contextlib", "signal", "subprocess"]


def test_importing_pathlib_after_install_loads_none_of_re_fnmatch_or_urllib_parse() -> None:
    r, loaded = run_fresh_interpreter(
        "from db_tool.cli import lean_pathlib\n"
        "lean_pathlib.install()\n"
        "from pathlib import Path\n"
        "assert Path('/a/b').parent.name == 'a'\n"
        "assert lean_pathlib._Finder not in sys.meta_path, 'the finder stays after its import'\n"
        "assert not any(isinstance(m, lean_pathlib._Deferred) for m in sys.modules.values())\n",
        DEFERRED, os.environ)
    assert r.returncode == 0, r.stderr
    assert loaded == "loaded: []", r.stdout + r.stderr


def test_glob_match_and_as_uri_answer_as_plain_pathlib_does(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("")
    (tmp_path / "b.txt").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.sql").write_text("")
    probe = (
        f"p = Path({str(tmp_path)!r})\n"
        "print(sorted(x.name for x in p.glob('*.sql')), sorted(x.name for x in p.rglob('*.sql')),\n"
        "      p.joinpath('a.sql').match('*.SQL'), p.joinpath('a.sql').match('*.sql'),\n"
        "      Path('/x y/ü').as_uri(), sorted(x.name for x in p.glob('[ab].*')))\n"
    )
    plain, _ = run_fresh_interpreter("from pathlib import Path\n" + probe, [], os.environ)
    lean, loaded = run_fresh_interpreter(
        "from db_tool.cli import lean_pathlib\n"
        "lean_pathlib.install()\n"
        "from pathlib import Path\n" + probe
        + "import re, fnmatch, urllib.parse, pathlib\n"
        "assert pathlib.re is re and pathlib.fnmatch is fnmatch, 'stand-ins left in pathlib'\n"
        "assert list(p.glob('*.sql')) == list(p.glob('*.sql'))  # the cached selector again\n"
        "assert pathlib._make_selector.__name__ == 'call'  # the lazy lru_cache ran\n"
        "assert type(sys.modules['re']) is type(sys), sys.modules['re']\n",
        DEFERRED, os.environ)
    assert plain.returncode == 0 and lean.returncode == 0, plain.stderr + lean.stderr
    assert lean.stdout.splitlines()[0] == plain.stdout.splitlines()[0]
    assert "'a.sql', 'c.sql'" in plain.stdout and "file:///x%20y/%C3%BC" in plain.stdout
    assert loaded == f"loaded: {sorted(DEFERRED)}", lean.stdout  # now loaded: they were used


def test_a_module_already_loaded_is_left_alone_and_pathlib_loaded_first_means_no_finder(
) -> None:
    r, loaded = run_fresh_interpreter(
        "import re\n"
        "from db_tool.cli import lean_pathlib\n"
        "lean_pathlib.install()\n"
        "import pathlib\n"
        "assert pathlib.re is re\n"
        "assert isinstance(pathlib.fnmatch, lean_pathlib._Deferred)\n"
        "lean_pathlib.install()\n"
        "assert lean_pathlib._Finder not in sys.meta_path\n",
        ["urllib.parse", "fnmatch"], os.environ)
    assert r.returncode == 0, r.stderr
    assert loaded == "loaded: []", r.stdout + r.stderr


def test_postgres_cleanup_started_by_its_launcher_imports_pathlib_without_re(
    tmp_path: Path,
) -> None:
    env = base_env(PG_WORKING_DIR=str(tmp_path / "wd"), PYTHONPROFILEIMPORTTIME="1")
    r = run_cmd([script("postgres-cleanup")], env)
    assert r.returncode == 0, r.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines()
                if line.startswith("import time:")}
    assert {"pathlib", "db_tool.cluster"} <= imported, r.stderr  # else this proves nothing
    assert imported.isdisjoint(NOT_ON_THE_STOP), sorted(imported & set(NOT_ON_THE_STOP))


def test_a_library_import_of_db_tool_gets_plain_pathlib() -> None:
    r, loaded = run_fresh_interpreter(
        "import db_tool, db_tool.cluster, db_tool.cli.launch\n"
        "import pathlib\n"
        "assert type(pathlib.re) is type(sys), pathlib.re\n",
        ["re"], os.environ)
    assert r.returncode == 0, r.stderr
    assert loaded == "loaded: ['re']", r.stdout + r.stderr
