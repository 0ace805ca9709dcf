"""A small argv parser with the project's conventions (argparse exits 2 and prints usage;
we need exit 9 naming the unknown option, options before or after positionals, --opt=value).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from db_tool.errors import MissingError, UsageError


@dataclass(frozen=True)
class Opt:
    names: tuple[str, ...]
    dest: str
    value: bool = False  # takes a value
    repeat: bool = False  # may be given several times (collects a list)


def parse(
    argv: Sequence[str],
    opts: Sequence[Opt],
    *,
    cmd: str,
    max_positional: int | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Return (options by dest, positionals). `--` ends options."""
    by_name = {n: o for o in opts for n in o.names}
    values: dict[str, Any] = {o.dest: ([] if o.repeat else (None if o.value else False))
                              for o in opts}
    positional: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positional += args[i:]
            break
        if arg.startswith("-") and arg != "-":
            name, eq, inline = arg.partition("=")
            opt = by_name.get(name)
            if opt is None:
                raise UsageError(f"{cmd} argument {name} does not exist; see {cmd} --help")
            if opt.value:
                if eq:
                    val = inline
                elif i < len(args):
                    val = args[i]
                    i += 1
                else:
                    # exit 3, as the original's `--output requires a path`
                    raise MissingError(f"{cmd}: {name} needs a value")
                if opt.repeat:
                    values[opt.dest].append(val)
                else:
                    values[opt.dest] = val
            else:
                if eq:
                    raise UsageError(f"{cmd} argument {name} takes no value")
                values[opt.dest] = True
            continue
        positional.append(arg)
    if max_positional is not None and len(positional) > max_positional:
        extra = positional[max_positional]
        raise UsageError(f"unexpected argument {extra!r}; see {cmd} --help")
    return values, positional


def wants_help(argv: Sequence[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)
