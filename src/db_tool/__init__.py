"""db-tool: per-project throw-away PostgreSQL clusters, the hectic SQL bundle and a migrator.

First thing on import (every console script imports this package before anything else): a
Ctrl-C that arrives before a command's own handler is in place — while modules are still
being imported, or after it returned — ends the process quietly with exit 130 instead of a
Python traceback. Only sys and os are used here: both are loaded before any script runs.
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

__version__ = "0.1.0"
