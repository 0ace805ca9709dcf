"""docs/install.md says what the commands do: its troubleshooting errors are the real
messages, and the commands it shows exist with the options it names."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import run_cmd, script

REPO = Path(__file__).resolve().parent.parent
DOC = (REPO / "docs" / "install.md").read_text()
SOURCES = "\n".join(p.read_text() for p in (REPO / "src" / "db_tool").rglob("*.py"))


def _flat(text: str) -> str:
    """Source text with string-literal seams removed, so a message split over lines matches."""
    return re.sub(r'"\s*\n\s*(?:f|rf|fr)?"', "", text)


def test_troubleshooting_quotes_real_error_messages() -> None:
    section = DOC.split("## Troubleshooting", 1)[1]
    quoted = re.findall(r"^\*\*`(.+?)`\*\*", section, re.M | re.S)
    ours = [q for q in quoted if "externally-managed" not in q]
    assert len(ours) >= 5, quoted
    flat = _flat(SOURCES)
    for quote in ours:
        # its opening words, up to the first placeholder (…, N, a version) or ": ", are ours
        head = re.split(r"…|\bN\b|\d+|`|: ", quote.replace("\n", " "))[0].strip()
        assert len(head) >= 6 and head in flat, (quote, head)


def test_commands_in_install_doc_exist() -> None:
    for argv in (["cache", "--help"], ["upgrade", "--help"], ["psql", "--help"]):
        r = run_cmd([script("database"), *argv], {"PATH": "/usr/bin:/bin"})
        assert r.returncode == 0, r.stderr
        for opt in re.findall(r"database " + argv[0] + r" [^\n`]*?(--[a-z-]+)", DOC):
            assert opt in r.stdout, (argv, opt)
