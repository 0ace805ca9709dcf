"""What every `database` subcommand receives: settings, streams, global options."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TextIO

from db_tool.settings import ProjectSettings


@dataclass
class Context:
    settings: ProjectSettings
    inherits: list[str] = field(default_factory=list)
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    url_given: bool = False  # --url on the command line

    @property
    def is_tty(self) -> bool:
        try:
            return self.stdout.isatty()
        except (AttributeError, ValueError):
            return False

    def pager(self) -> list[str]:
        """$PAGER as argv (default `less -R`), for output shown on a terminal."""
        import shlex

        return shlex.split(self.settings.env.get("PAGER") or "") or ["less", "-R"]
