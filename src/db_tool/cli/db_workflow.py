"""`database deploy|hydrate|patch|test|check|status|log|pull_staging`: argv → commands → print.

The work lives in db_tool.commands.*; this module parses options (unknown → exit 9 naming
it), checks what must be there before anything starts (LOCAL_DIR, a URL), and prints results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from db_tool.errors import Error

if TYPE_CHECKING:  # --help imports this module for its text only
    from db_tool.cli.context import Context

HELPS = {
    "deploy": """\
usage: database deploy [-P|--no-patch] [-H|--no-hydrate] [-m|--mock] [--reuse] [-c|--cleanup]

Init the project's cluster (fresh: the old data is discarded) -> hydrate -> patch. Works in a
plain shell: it uses the URL of the cluster it just started, PGURL is not needed. Each step
says what it does and how long it took. The URL is printed on stdout.

  -P, --no-patch     skip the patch file
  -H, --no-hydrate   skip hydrate (bundle, secrets, entrypoint)
  -m, --mock         hydrate with psql -v USE_MOCK=1
      --reuse        start the existing cluster with its data (implies -H and -P)
  -c, --cleanup      stop the cluster after a successful deploy (the data stays)
""",
    "hydrate": """\
usage: database hydrate [-H|--no-hook] [-m|--mock]

Apply the hectic bundle, load secrets from the first dotenv source available
(HECTIC_DOTENV_CONTENT, a readable HECTIC_DOTENV_FILE, $LOCAL_DIR/.env.$ENVIRONMENT), then
run $DATABASE_SOURCE/entrypoint.sql with psql (ON_ERROR_STOP; its own directory as working
directory). Output goes to HYDRATE_LOG (default stdout; $PG_LOG_PATH/hydrate.stdout.log when
PG_LOG_PATH is set). Connection: --url, else PGURL, else DB_URL (none -> exit 3).

  -H, --no-hook   skip the bundle and the secrets; only run the entrypoint
  -m, --mock      psql -v USE_MOCK=1 (test with \\if :{?USE_MOCK} in your SQL)
""",
    "patch": """\
usage: database patch [-e|--edit]

Apply the patch file ${PROFILE_DIR:-$LOCAL_DIR}/test-data.sql with psql (created empty when
missing). Output goes to PATCH_LOG (default stdout; $PG_LOG_PATH/patch.stdout.log when
PG_LOG_PATH is set). Connection: --url, else PGURL, else DB_URL (none -> exit 3).

  -e, --edit   open the patch file in $EDITOR (default vi) and stop; nothing is applied
""",
    "test": """\
usage: database test

Run $DATABASE_DIR/test/test.sql so that it leaves no trace: inside a transaction that is
rolled back, or — when the file ends transactions itself (COMMIT, work after ROLLBACK) — in a
throw-away copy of the database (CREATE DATABASE ... TEMPLATE, needs no other session on it).
psql runs with -tA and ON_ERROR_STOP. TAP output (pgTAP: ok N / not ok N / 1..N) is counted.
Exit 0 when everything passed, 1 otherwise (also when test.sql is missing).
Connection: --url, else PGURL, else DB_URL (none -> exit 3).
""",
    "check": """\
usage: database check [-P|--no-patch] [-H|--no-hydrate] [-m|--mock] [--reuse]

The whole deploy (init -> hydrate -> patch) in a throw-away cluster under
$LOCAL_DIR/focus/postgresql-check-tmp, never touching the development cluster (which may be
running). The throw-away cluster is always removed: on success, failure, Ctrl-C and SIGTERM.
Options as for deploy (--reuse, as in the original, only skips hydrate and patch here).
""",
    "status": """\
usage: database status [--json]

Is the project's cluster running (pid), which PostgreSQL, its URL, the size of its data dir,
and how many migrations in MIGRATION_DIR are not applied yet (with --url: in that database).
Always exit 0 when the state could be read (see "running").

  --json   one JSON object instead of the table
""",
    "log": """\
usage: database log [list | <index> | <file name or unique substring>]
       database log -f|--follow

The server logs of the cluster (PG_LOG_PATH, else <working dir>/data/log).
  (nothing)   all log files, one after the other
  list        number the log files (by name, so oldest first)
  <index>     that number of `list`
  <name>      the file with that name, else the one file whose name contains it
  -f, --follow  the last lines of the newest log, then what the server writes (also into
                a file it rotates to) until Ctrl-C
On a terminal through $PAGER (default `less -FRX`; `database --no-pager log`, PAGER= or
PAGER=cat print instead), otherwise printed. Not found or ambiguous -> exit 1; no log dir
-> exit 1; no log files -> a warning, exit 0.
""",
    "pull_staging": """\
usage: database pull_staging

Dump tables of the staging database into the patch file (${PROFILE_DIR:-$LOCAL_DIR}/
test-data.sql): runs `ssh $STAGING_SSH_HOST pg_dump $STAGING_DUMP_FLAGS -t <table>...
--dbname=$STAGING_DB_URL` (each word quoted for the remote shell) and writes a header (host,
UTC time, generator), the dump, and a reset of each table's serial `id` sequence.

Required, checked first in this order (missing -> its name on stderr, exit 3):
  STAGING_SSH_HOST      ssh destination
  STAGING_DB_URL        connection string on the staging host
  STAGING_DUMP_TABLES   space-separated tables
  STAGING_DUMP_FLAGS    pg_dump flags, e.g. "--data-only --column-inserts"
A failed ssh or an empty dump -> exit 1 and the patch file is left exactly as it was (the new
one is written to a temporary file and renamed into place).
""",
}

def dispatch(ctx: Context, sub: str, opts: dict[str, Any], pos: list[str]) -> int:
    """`database SUB` with its options parsed (db_tool.cli.spec.DATABASE)."""
    if sub == "deploy":
        return _deploy(ctx, opts)
    if sub == "hydrate":
        return _hydrate(ctx, opts)
    if sub == "patch":
        return _patch(ctx, opts)
    if sub == "test":
        return _test(ctx)
    if sub == "check":
        return _check(ctx, opts)
    if sub == "status":
        return _status(ctx, opts)
    if sub == "log":
        if opts["follow"]:
            from db_tool.cli.db_pg import follow_log

            return follow_log(ctx, pos)
        return _log(ctx, pos[0] if pos else None)
    if sub == "pull_staging":
        return _pull_staging(ctx)
    raise AssertionError(sub)


def _url(ctx: Context) -> str:
    ctx.settings.require_local_dir()
    return ctx.settings.require_url()


def _deploy(ctx: Context, opts: dict[str, object]) -> int:
    from db_tool import output
    from db_tool.commands.deploy import deploy

    s = ctx.settings
    if ctx.url_given:
        output.warn("deploy ignores --url: it uses the URL of the cluster it starts")
    result = deploy(
        s, hydrate_db=not opts["no_hydrate"], patch_db=not opts["no_patch"],
        mock=bool(opts["mock"]), reuse=bool(opts["reuse"]), cleanup=bool(opts["cleanup"]),
        out=ctx.stdout,
    )
    done = [w for w, r in (("hydrated", result.hydrated), ("patched", result.patched)) if r]
    what = f" ({', '.join(done)})" if done else ""
    stopped = "; cluster stopped (--cleanup)" if result.stopped else ""
    output.ok(f"deploy done in {result.seconds:.2f}s{what}{stopped}")
    if not result.stopped:
        import shlex

        ctx.stdout.write(f"export PGURL={shlex.quote(result.url)}\n")
    return 0


def _hydrate(ctx: Context, opts: dict[str, object]) -> int:
    from db_tool import output
    from db_tool.commands.hydrate import hydrate, require_entrypoint

    url = _url(ctx)
    require_entrypoint(ctx.settings)
    result = hydrate(ctx.settings, url, hook=not opts["no_hook"], mock=bool(opts["mock"]),
                     out=ctx.stdout)
    parts = []
    if result.bundle_applied:
        parts.append("bundle applied")
        if result.secrets is not None:
            parts.append(f"{result.secrets} secret(s) from {result.secrets_from}")
        elif result.secrets_from is not None:
            parts.append(f"the dotenv from {result.secrets_from} is empty, no secrets loaded")
        else:
            parts.append("no dotenv source for secrets")
    parts.append(f"{result.entrypoint.name} ran")
    if result.log:
        parts.append(f"output in {result.log}")
    output.ok("hydrate: " + ", ".join(parts))
    return 0


def _patch(ctx: Context, opts: dict[str, object]) -> int:
    from db_tool import output
    from db_tool.commands.patch import apply_patch, edit

    s = ctx.settings
    s.require_local_dir()
    if opts["edit"]:
        result = edit(s)
        output.ok(f"edited {result.path} (not applied; run `database patch`)")
        return 0
    result = apply_patch(s, _url(ctx), out=ctx.stdout)
    where = f"; output in {result.log}" if result.log else ""
    output.ok(f"patch: applied {result.path}{where}")
    return 0


def _test(ctx: Context) -> int:
    from db_tool import output
    from db_tool.commands.testing import run_tests

    url = _url(ctx)
    result = run_tests(ctx.settings, url, out=ctx.stdout)
    if result.connection_failed:
        raise Error(f"cannot connect to the database to run the tests: "
                    f"{result.error or 'psql exit 2'}; "
                    "start it (`database init --reuse`) or fix --url/PGURL/DB_URL")
    how = ("inside a rolled-back transaction" if result.strategy == "transaction"
           else "in a throw-away copy of the database")
    tap = result.tap
    counts = ""
    if tap is not None:
        counts = f"{tap.passed} passed, {tap.failed} failed"
        if tap.todo:
            counts += f", {tap.todo} todo"
        if tap.skipped:
            counts += f" ({tap.skipped} skipped)"
        if tap.planned is not None:
            counts += f", {tap.planned} planned"
    if result.ok:
        output.ok(f"test: PASSED — {counts or 'no errors'} ({result.path}, ran {how})")
        return 0
    reasons = []
    if not result.psql_ok:
        reasons.append("stopped at an SQL error" + (f": {result.error}" if result.error else ""))
    if tap is not None:
        if tap.failures:
            reasons.append("; ".join(tap.failures[:10]))
        if tap.planned is not None and tap.planned != tap.ran:
            reasons.append(f"planned {tap.planned} tests but {tap.ran} ran")
    summary = f"{counts}: " if counts else ""
    # One error line, the command's own; the original's words ("tests failed") first.
    raise Error(f"tests failed: {summary}{' | '.join(reasons)} "
                f"({result.path}, ran {how})")


def _check(ctx: Context, opts: dict[str, object]) -> int:
    from db_tool import output
    from db_tool.commands.check import check

    skip = bool(opts["reuse"])
    result = check(ctx.settings, hydrate_db=not (opts["no_hydrate"] or skip),
                   patch_db=not (opts["no_patch"] or skip), mock=bool(opts["mock"]),
                   out=ctx.stdout)
    output.ok(f"check: PASSED in {result.seconds:.2f}s (throw-away cluster removed)")
    return 0


def _status(ctx: Context, opts: dict[str, object]) -> int:
    from db_tool.commands.status import status
    from db_tool.output import human_size

    st = status(ctx.settings, ctx.settings.url if ctx.url_given else None)
    if opts["json"]:
        import json

        ctx.stdout.write(json.dumps(st.to_dict(), indent=2) + "\n")
        return 0
    if st.running:
        state = f"running (pid {st.pid})"
    else:
        state = "stopped" if st.initialised else "not initialised (database deploy / init)"
    if st.migrations_pending is not None:
        migrations = f"{st.migrations_pending} pending in {st.migration_dir}"
    else:
        migrations = f"unknown ({st.migrations_note})"
    rows = [
        ("cluster", state),
        ("postgresql", st.postgresql or "not found"),
        ("url", st.url),
        ("branch", st.branch + (f" (branches: {', '.join(st.branches)})"
                                if st.branches and len(st.branches) > 1 else "")),
        ("working dir", st.working_dir),
        ("data size", human_size(st.data_size_bytes) if st.data_size_bytes is not None else "-"),
        ("migrations", migrations),
    ]
    for name, value in rows:
        ctx.stdout.write(f"{name + ':':<13}{value}\n")
    return 0


def _log(ctx: Context, selector: str | None) -> int:
    """As the original: `list` numbers the files; a selector shows one; nothing shows all of
    them (concatenated when not on a terminal, in the pager on one)."""
    from db_tool import output, proc
    from db_tool.commands.logs import log_files, select

    directory, files = log_files(ctx.settings)
    if not files:
        output.warn(f"no log files in {directory}")
        return 0
    if selector == "list":
        for i, p in enumerate(files, 1):
            ctx.stdout.write(f"{i:>2}  {p.name}\n")
        return 0
    chosen = files if selector is None else [select(files, selector)]
    if ctx.is_tty and ctx.pager():
        return proc.run_interactive([*ctx.pager(), *map(str, chosen)], env=ctx.settings.child_env)
    for path in chosen:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for chunk in iter(lambda: fh.read(65536), ""):
                ctx.stdout.write(chunk)
    ctx.stdout.flush()
    return 0


def _pull_staging(ctx: Context) -> int:
    from db_tool import output
    from db_tool.commands.patch import patch_file_of
    from db_tool.commands.staging import StagingConfig, pull

    s = ctx.settings
    cfg = StagingConfig.from_env(s.staging_vars)  # before anything else, LOCAL_DIR included
    s.require_local_dir()
    result = pull(cfg, patch_file_of(s), s.child_env)
    output.ok(f"pull_staging: wrote {result.path} ({result.size} bytes, "
              f"{len(result.tables)} table(s)); apply it with `database patch`")
    return 0
