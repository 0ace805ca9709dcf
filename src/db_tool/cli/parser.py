"""The one argument parser of the five commands: stdlib argparse under our exit codes.

Each command's grammar is a tree of `Command`s (db_tool.cli.spec); `parse()` parses one level's
argv with it: `--opt value`, `--opt=value`, `-ovalue`, combined short flags (`-PH`), `--` to
end options, options before or after positionals. argparse's own exits become ours: an unknown
option or an extra word is exit 9, an option without its value exit 3 (messages name what was
typed). The help, the examples and the shell completion come from the same tree.

argparse costs ~10 ms to import, and `postgres-init`/`postgres-cleanup` run in shell hooks
where that counts: an argv made only of exact option names (no `--`) and plain words
is answered without it, and so is `--opt value` (`migrator -u URL migrate`, whose no-op run
costs less than argparse's import). That covers the hook paths (no argument, `--print-env`);
a combined flag, `=`, a value starting with `-` or an unknown option goes through argparse.
"""

from __future__ import annotations

from db_tool.errors import MissingError, UsageError

TYPE_CHECKING = False  # typing (and the re it imports) is not needed at run time, nor
if TYPE_CHECKING:  # collections.abc (it imports the collections package)
    from collections.abc import Sequence
    from typing import Any

HELP_FLAGS = ("-h", "--help")


class Opt:
    """One option: its spellings, where its value goes, whether it takes one (METAVAR)."""

    __slots__ = ("dest", "help", "metavar", "names", "repeat")

    def __init__(self, *names: str, dest: str | None = None, metavar: str | None = None,
                 repeat: bool = False, help: str = "") -> None:
        self.names = names
        longest = max(names, key=len)
        self.dest = dest or longest.lstrip("-").replace("-", "_")
        self.metavar = metavar  # None: a flag
        self.repeat = repeat
        self.help = help

    @property
    def takes_value(self) -> bool:
        return self.metavar is not None


class Command:
    """One command or subcommand: its options, subcommands, positional words, examples."""

    def __init__(
        self,
        name: str,
        *,
        summary: str = "",
        opts: Sequence[Opt] = (),
        subs: Sequence[Command] = (),
        max_positional: int = 0,
        words: Sequence[str] = (),
        examples: Sequence[str] = (),
        passthrough: str | None = None,
        unknown: str = "{cmd} argument {name} does not exist; see {cmd} --help",
        extra: str = "{cmd}: unexpected argument {arg!r}; see {cmd} --help",
        missing: str = "{cmd}: {arg} needs a value",
    ) -> None:
        self.name = name
        self.summary = summary
        self.opts = list(opts)
        self.subs = {s.name: s for s in subs}
        self.max_positional = max_positional
        self.words = list(words)  # fixed positional words (for completion: `log list`)
        self.examples = list(examples)
        # Everything after this subcommand belongs to another command (`database migrator`):
        # the name of the command whose tree completes it.
        self.passthrough = passthrough
        self.unknown = unknown
        self.extra = extra
        self.missing = missing
        self.parent: Command | None = None
        for s in subs:
            s.parent = self

    @property
    def path(self) -> str:
        return self.name if self.parent is None else f"{self.parent.path} {self.name}"

    def sub(self, *names: str) -> Command:
        found = self
        for n in names:
            found = found.subs[n]
        return found


def wants_help(argv: Sequence[str]) -> bool:
    """-h/--help before any `--`."""
    for a in argv:
        if a == "--":
            return False
        if a in HELP_FLAGS:
            return True
    return False


def with_examples(text: str, cmd: Command) -> str:
    """A help text (usage line, prose, options) followed by the command's examples."""
    if not cmd.examples or "\nExamples:\n" in text:
        return text
    lines = "".join(f"  {e}\n" for e in cmd.examples)
    return f"{text.rstrip()}\n\nExamples:\n{lines}"


def _fast(opts: Sequence[Opt], argv: Sequence[str]) -> tuple[dict[str, Any], list[str]] | None:
    """argv of exact option names (a value as the next word, one not starting with `-`) and
    plain words only: the result argparse would give. None: let argparse decide."""
    by_name = {n: o for o in opts for n in o.names}
    values: dict[str, Any] = {o.dest: ([] if o.repeat else (None if o.takes_value else False))
                              for o in opts}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a.startswith("-") and a != "-":
            opt = by_name.get(a)
            if opt is None:
                return None
            if not opt.takes_value:
                values[opt.dest] = True
                continue
            if i == len(argv) or argv[i].startswith("-"):
                return None  # a missing value (argparse words the error), or `-u -x`
            if opt.repeat:
                values[opt.dest].append(argv[i])
            else:
                values[opt.dest] = argv[i]
            i += 1
        else:
            positional.append(a)
    return values, positional


class _Stop(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _argparse(opts: Sequence[Opt], argv: Sequence[str]) -> tuple[dict[str, Any], list[str],
                                                                    list[str]]:
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> Any:
            raise _Stop(message)

        def exit(self, status: int = 0, message: str | None = None) -> Any:
            raise _Stop(message or f"exit {status}")

    p = Parser(add_help=False, allow_abbrev=False)
    for o in opts:
        if o.takes_value:
            p.add_argument(*o.names, dest=o.dest, metavar=o.metavar,
                           action="append" if o.repeat else "store",
                           default=[] if o.repeat else None)
        else:
            p.add_argument(*o.names, dest=o.dest, action="store_true")
    p.add_argument("_positional", nargs="*")
    ns, unknown = p.parse_known_intermixed_args(list(argv))
    values = vars(ns)
    positional = list(values.pop("_positional") or [])
    return values, positional, unknown


def _typed(argv: Sequence[str], spellings: Sequence[str]) -> str:
    """Which of an option's spellings the user typed (argparse names them all)."""
    for a in reversed(argv):
        for s in spellings:
            if a == s or a.startswith(s + "=") or (len(s) == 2 and a.startswith(s)):
                return s
    return spellings[0]


def scan(
    cmd: Command,
    argv: Sequence[str],
    *,
    extra_opts: Sequence[Opt] = (),
) -> tuple[dict[str, Any], list[str], list[str]]:
    """(options by dest, positional words, unknown options in the order given): for a
    command that answers unknown options itself (migrator, with the original's words).
    A missing value or a value given to a flag is an error here already."""
    opts = [*extra_opts, *cmd.opts]
    args = list(argv)
    # `--` ends options: what follows are words (argparse's intermixed mode loses that).
    tail = args[args.index("--") + 1:] if "--" in args else []
    head = args[:args.index("--")] if "--" in args else args
    found = _fast(opts, head)
    if found is not None:
        return found[0], found[1] + tail, []
    try:
        values, positional, unknown = _argparse(opts, head)
    except _Stop as stop:
        raise _translate(cmd, head, stop.message) from None
    words = [u for u in unknown if not u.startswith("-") or u == "-"]
    return values, positional + words + tail, [u for u in unknown if u not in words]


def parse(
    cmd: Command,
    argv: Sequence[str],
    *,
    extra_opts: Sequence[Opt] = (),
    max_positional: int | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Options by dest and the positional words of one command level; errors are exit 9
    (unknown option, extra word) or 3 (an option without its value)."""
    limit = cmd.max_positional if max_positional is None else max_positional
    label = cmd.path
    values, positional, unknown = scan(cmd, argv, extra_opts=extra_opts)
    if unknown:
        bad = unknown[0]
        raise UsageError(cmd.unknown.format(cmd=label, arg=bad, name=bad.partition("=")[0]))
    if len(positional) > limit:
        extra = positional[limit]
        raise UsageError(cmd.extra.format(cmd=label, arg=extra, name=extra))
    return values, positional


def _translate(cmd: Command, argv: Sequence[str], message: str) -> Exception:
    label = cmd.path
    what, _, why = message.partition(": ")
    spellings = what.removeprefix("argument ").split("/")
    if "expected one argument" in why:
        typed = _typed(argv, spellings)
        return MissingError(cmd.missing.format(cmd=label, arg=typed, name=typed))
    if "ignored explicit argument" in why:
        typed = _typed(argv, spellings)
        explicit = why.partition("ignored explicit argument ")[2].strip("'")
        if len(typed) == 2 and explicit and not any(a.startswith(typed + "=") for a in argv):
            # -PZ: a flag combined with a letter that is no option of this command
            bad = "-" + explicit[0]
            return UsageError(cmd.unknown.format(cmd=label, arg=bad, name=bad))
        return UsageError(f"{label} argument {typed} takes no value; see {label} --help")
    return UsageError(f"{label}: {message}; see {label} --help")
