"""What every `database` subcommand receives: settings, streams, global options."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TextIO

from db_tool.settings import ProjectSettings


@dataclass
class Context:
    """What a `database` subcommand runs with: the settings, stdout and flags it was given."""

    settings: ProjectSettings
    inherits: list[str] = field(default_factory=list)
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    url_given: bool = False  # --url on the command line
    no_pager: bool = False  # --no-pager on the command line

    @property
    def is_tty(self) -> bool:
        try:
            return self.stdout.isatty()
        except (AttributeError, ValueError):
            return False

    def pager(self) -> list[str]:
        """$PAGER as argv (default `less -FRX`), for output shown on a terminal; [] for none
        (--no-pager, PAGER= or PAGER=cat)."""
        from db_tool.settings import pager_argv

        return [] if self.no_pager else list(pager_argv(self.settings.pager))
