"""What every `database` subcommand receives: settings, streams, global options."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing and dataclasses cost more to import than this module does
if TYPE_CHECKING:
    from typing import TextIO

    from db_tool.project_settings import ProjectSettings


class Context:
    """What a `database` subcommand runs with: the settings, stdout and flags it was given."""

    __slots__ = ("inherits", "no_pager", "settings", "stdout", "url_given")

    def __init__(
        self,
        settings: ProjectSettings,
        inherits: list[str] | None = None,
        stdout: TextIO | None = None,
        url_given: bool = False,  # --url on the command line
        no_pager: bool = False,  # --no-pager on the command line
    ) -> None:
        self.settings = settings
        self.inherits = [] if inherits is None else inherits
        self.stdout = sys.stdout if stdout is None else stdout
        self.url_given = url_given
        self.no_pager = no_pager

    def __repr__(self) -> str:
        return (f"Context(settings={self.settings!r}, inherits={self.inherits!r}, "
                f"stdout={self.stdout!r}, url_given={self.url_given!r}, "
                f"no_pager={self.no_pager!r})")

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
