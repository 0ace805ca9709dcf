"""Named exit codes and the one exception type the CLIs turn into a message + exit code."""

from __future__ import annotations


class ExitCode:
    """The exit codes by name: plain ints (an IntEnum would import enum, functools and
    collections, a tenth of a no-op `migrate`, on every command)."""

    OK = 0
    GENERIC = 1  # generic error
    AMBIGUOUS = 2  # ambiguous arguments or state (e.g. migration history mismatch)
    MISSING = 3  # missing required argument or environment variable
    MIGRATION_FAILED = 4  # a migration's SQL failed
    NO_TABLE = 5  # a table named with --inherits does not exist
    UNKNOWN = 9  # argument or command not found
    BUG = 13  # program bug or unexpected system state
    INTERRUPTED = 130
    NOT_INSTALLED = 127  # a required program is missing


class Error(Exception):
    """A failure we understand: one line for the user (with the fix) and an exit code."""

    exit_code: int = ExitCode.GENERIC

    def __init__(self, message: str, exit_code: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
        # Extra lines (psql's error, a log tail) printed after the one-line message.
        self.detail = detail

    @property
    def message(self) -> str:
        return str(self.args[0])


class UsageError(Error):
    exit_code = ExitCode.UNKNOWN


class MissingError(Error):
    exit_code = ExitCode.MISSING


class NotInstalledError(Error):
    exit_code = ExitCode.NOT_INSTALLED


class suppress:
    """contextlib.suppress without contextlib (its import, ~3 ms, is a twentieth of a stop):
    the modules on the hook paths use this one."""

    __slots__ = ("_kinds",)

    def __init__(self, *kinds: type[BaseException]) -> None:
        self._kinds = kinds

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> bool:
        return kind is not None and issubclass(kind, self._kinds)
