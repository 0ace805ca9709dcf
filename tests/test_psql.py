"""psql.py and the quoting of psql meta-command arguments, against the real psql."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from db_tool.sqlsplit import psql_meta_quote
from tests.conftest import PG


def _psql_file(pg: PG, script: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [pg.install.tool("psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", pg.url,
         "-f", str(script)], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("value", [
    "plain", "a b", "it's", "back\\slash", "\\'", "''", "new\nline", "tab\tand\rcr",
    ":x :'y' é 🔑", "end\\",
])
def test_meta_quote_reads_back_byte_for_byte_in_psql(pg: PG, tmp_path: Path,
                                                     value: str) -> None:
    script = tmp_path / "s.sql"
    script.write_text(f"\\set v {psql_meta_quote(value)}\n\\echo '[' :'v' ']'\n"
                      "SELECT encode(convert_to(:'v', 'UTF8'), 'hex');\n")
    done = _psql_file(pg, script)
    assert done.returncode == 0, done.stderr
    assert bytes.fromhex(done.stdout.splitlines()[-1]).decode() == value


def test_meta_quote_includes_a_file_whose_path_has_quotes_backslashes_and_a_newline(
    pg: PG, tmp_path: Path
) -> None:
    weird = tmp_path / "a b'c\\d :x é\nnext"
    weird.mkdir()
    (weird / "f.sql").write_text("SELECT 'reached';\n")
    script = tmp_path / "s.sql"
    script.write_text(f"\\i {psql_meta_quote(str(weird / 'f.sql'))}\n")
    done = _psql_file(pg, script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "reached"


URL = "postgresql://me@/app?host=/run/db&port=5432"


@pytest.fixture
def debian(tmp_path: Path) -> tuple[str, str, str]:
    """(the psql symlink on PATH, the wrapper it points to, the binroot with 9.6, 15 and 16)."""
    wrapper = tmp_path / "pg_wrapper"
    wrapper.write_text("#!/usr/bin/perl\n")
    link = tmp_path / "bin" / "psql"
    link.parent.mkdir()
    link.symlink_to(wrapper)
    for version in ("9.6", "15", "16", "README"):
        binary = tmp_path / "lib" / version / "bin" / "psql"
        binary.parent.mkdir(parents=True)
        binary.write_text("")
        binary.chmod(0o755)
    return str(link), str(wrapper), str(tmp_path / "lib")


@pytest.mark.parametrize(("url", "env", "direct"), [
    (URL, {}, True),
    ("postgres://me@localhost:5433/app", {"PGHOST": "/elsewhere"}, True),
    ("postgresql://me@[::1]:5433/app", {}, True),
    ("postgresql://me@/app?host=/run/db", {}, False),  # the wrapper may export a PGPORT
    ("postgresql://me@/?host=/run/db&port=5432", {}, False),  # ... or a PGDATABASE
    ("postgresql://me@h1,h2:5432/app", {}, False),
    (URL + "&service=x", {}, False),
    (URL, {"PGCLUSTER": "15/main"}, False),
    (URL, {"PGSERVICE": "x"}, False),
    ("host=/run/db port=5432 dbname=app", {}, False),
])
def test_debian_pg_wrapper_is_stepped_over_only_when_it_has_nothing_to_decide(
    debian: tuple[str, str, str], url: str, env: dict[str, str], direct: bool,
) -> None:
    from db_tool.psql import direct_psql

    link, wrapper, binroot = debian
    got = direct_psql(link, url, env, wrapper=wrapper, binroot=binroot)
    assert got == (f"{binroot}/16/bin/psql" if direct else None)  # the newest, as pg_wrapper
    assert direct_psql(f"{binroot}/15/bin/psql", url, env, wrapper=wrapper,
                       binroot=binroot) is None  # a real psql is run as found
