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
