"""The one place where exceptions become a message and an exit code."""

from __future__ import annotations

import os
import sys

from db_tool.errors import Error, ExitCode

TYPE_CHECKING = False  # typing costs ~7 ms: every command's start-up imports this module
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


def guarded(prog: str, body: Callable[[], int]) -> int:
    from db_tool import output

    was = output.set_prog(prog)  # unless the launcher named the command already
    try:
        return _guarded(prog, body)
    finally:
        output.reset_prog(was)


def _guarded(prog: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except Error as exc:
        sys.stderr.write(f"{prog}: error: {exc.message}\n")
        if exc.detail:
            sys.stderr.write(exc.detail.rstrip("\n") + "\n")
        return int(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # stdout closed early (e.g. `| head`): not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return int(ExitCode.GENERIC)
    except Exception as exc:
        if _caused_by_interrupt(exc):
            sys.stderr.write(f"{prog}: interrupted\n")
            return int(ExitCode.INTERRUPTED)
        import traceback

        traceback.print_exc()
        sys.stderr.write(
            f"{prog}: this is a bug in db-tool (exit {int(ExitCode.BUG)}); please report it "
            "with the traceback above\n"
        )
        return int(ExitCode.BUG)


def _caused_by_interrupt(exc: BaseException) -> bool:
    """Whether a Ctrl-C is what raised exc: Python 3.11 wraps a KeyboardInterrupt that lands
    in a class's __set_name__ (a module defining its classes while it is imported, e.g. a
    cached_property) in RuntimeError("Error calling __set_name__ ...")."""
    cause, hops = exc.__cause__, 0
    while cause is not None and hops < 8:
        if isinstance(cause, KeyboardInterrupt):
            return True
        cause, hops = cause.__cause__, hops + 1
    return False


def env_dict(env: Mapping[str, str] | None) -> dict[str, str]:
    """The environment a main(argv, env=...) runs with (None: the process's), installed as the
    process's settings.Runtime so output, psql and every child see env, not os.environ."""
    from db_tool import settings

    return dict(settings.use(settings.environ() if env is None else env).child_env)
