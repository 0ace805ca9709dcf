"""`db-tool-run PROG [ARGS...]`: the one Python entry point behind the sh launchers
(`database`, `db-tool`, `migrator`, `postgres-cleanup`, `db-ops`, `postgres-init`).

The launchers start it with SIGINT blocked (GNU `env --block-signal`): a Ctrl-C while the
interpreter starts and imports stays pending. Importing this module installs a hook that turns
an uncaught KeyboardInterrupt into `interrupted` and exit 130, and only then unblocks SIGINT,
so the pending Ctrl-C (or any later one that escapes the command's own handler) never prints
a traceback. Only here, not on `import db_tool`: a library user's process keeps its own hook.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # the types module only for an annotation (it is ~0.5 ms of every command)
    from types import TracebackType

PROGS = {
    "database": "db_tool.cli.database",
    "db-tool": "db_tool.cli.database",
    "migrator": "db_tool.cli.migrator",
    "postgres-cleanup": "db_tool.cli.postgres_cleanup",
    "db-ops": "db_tool.cli.db_ops",
    "postgres-init": "db_tool.cli.postgres_init",
}


def _interrupted_quietly(
    kind: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        import os

        try:
            sys.stderr.write("interrupted\n")
            sys.stderr.flush()
        finally:
            os._exit(130)
    sys.__excepthook__(kind, exc, tb)


def _unraisable_quietly(unraisable: sys.UnraisableHookArgs) -> None:
    # A Ctrl-C that lands in a callback Python cannot raise from (an import lock's weakref
    # callback) is reported as "Exception ignored ... Traceback" and the command goes on:
    # say nothing; the command finishes as if the key came a moment later.
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        return
    sys.__unraisablehook__(unraisable)


def _release_held_interrupt() -> None:
    # _signal, not signal: signal builds an IntEnum of every signal (enum costs milliseconds).
    import _signal  # type: ignore[import-not-found]

    if hasattr(_signal, "pthread_sigmask"):
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, [_signal.SIGINT])


sys.excepthook = _interrupted_quietly
sys.unraisablehook = _unraisable_quietly
_release_held_interrupt()


# The hook commands (shell hooks, traps, `$(postgres-init --print-env)`) and the migrator (a
# no-op `migrate`/`status` in a loop or a hook: the finalisation is a tenth of it) end without
# the interpreter's finalisation (a few ms of tearing down every module): they register no
# atexit work and leave no thread running (the migrator has waited for its psql and removed
# its temporary dir before main returns); their output is flushed first.
_EXIT_AT_ONCE = frozenset({"postgres-init", "postgres-cleanup", "migrator"})


def entry() -> None:
    args = sys.argv[1:]
    if not args or args[0] not in PROGS:
        sys.stderr.write(f"db-tool-run: error: the first argument names the command: "
                         f"{', '.join(PROGS)}\n")
        raise SystemExit(9)
    from db_tool import output
    from db_tool.cli import lean_pathlib

    lean_pathlib.install()  # pathlib without re and urllib.parse until they are used
    output.set_prog(args[0])  # info lines are named after the command typed
    # __import__ rather than importlib.import_module: importlib is not loaded otherwise.
    module = __import__(PROGS[args[0]], fromlist=["main"])
    rc = module.main(args[1:])
    if args[0] in _EXIT_AT_ONCE:
        _exit_at_once(rc)
    raise SystemExit(rc)


def _exit_at_once(rc: int) -> None:
    import os

    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # None: the descriptor was closed when we started
                stream.flush()
    except (OSError, ValueError):
        raise SystemExit(rc) from None  # let the interpreter report what it reports
    os._exit(rc)
