"""Placeholder: filled in by its own issue."""

from __future__ import annotations

from db_tool.cli.context import Context
from db_tool.errors import Error


def dispatch(ctx: Context, sub: str, argv: list[str]) -> int:
    raise Error(f"database {sub} is not implemented yet")
