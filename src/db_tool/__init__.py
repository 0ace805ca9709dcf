"""db-tool: per-project throw-away PostgreSQL clusters, the hectic SQL bundle and a migrator.

First thing on import (every command imports this package before anything else): a Ctrl-C
that arrives before a command's own handler is in place — while the interpreter starts or
modules are still being imported, or after the command returned — ends the process quietly
with exit 130 instead of a Python traceback.
"""

import sys as _sys


def _interrupted_quietly(kind, exc, tb):  # type: ignore[no-untyped-def]
    if issubclass(kind, KeyboardInterrupt):
        import os

        try:
            _sys.stderr.write("interrupted\n")
            _sys.stderr.flush()
        finally:
            os._exit(130)
    _sys.__excepthook__(kind, exc, tb)


_sys.excepthook = _interrupted_quietly


def _release_held_interrupt() -> None:
    # The sh launchers start Python with SIGINT blocked (scripts/*): a Ctrl-C pressed during
    # the interpreter's start-up is pending, and arrives here, where the hook above handles it.
    import signal  # cheap here: the console script's `import re` has loaded enum already

    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


_release_held_interrupt()

__version__ = "0.1.0"
