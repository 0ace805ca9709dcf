"""Run SQL through psql: files, strings and small queries.

Values reach SQL only as psql variables (-v name=value, referenced as :'name' in the SQL),
never pasted into SQL text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from functools import cache

from db_tool import proc
from db_tool.conninfo import without_password
from db_tool.errors import NotInstalledError

FIELD_SEP = "\x1f"
RECORD_SEP = "\x1e"


@cache
def _psql_for(pg_bin_dir: str | None, path: str | None) -> str:
    if pg_bin_dir:
        candidate = os.path.join(pg_bin_dir, "psql")
        if os.access(candidate, os.X_OK):
            return candidate
    found = _which("psql", path or os.defpath)
    if found:
        return found
    from db_tool import pgbin

    try:
        return pgbin.find().tool("psql")
    except NotInstalledError:
        raise NotInstalledError(
            "psql not found: install the PostgreSQL client (apt-get install postgresql-client) "
            "or set PG_BIN_DIR"
        ) from None


def _which(name: str, path: str) -> str | None:
    """shutil.which(name, path=path) for a bare name, without importing shutil (it loads bz2
    and lzma before `migrate` can start psql)."""
    seen = set()
    for directory in path.split(os.pathsep):
        if directory in seen:
            continue
        seen.add(directory)
        candidate = os.path.join(directory, name)
        if (os.path.exists(candidate) and os.access(candidate, os.X_OK)
                and not os.path.isdir(candidate)):
            return candidate
    return None


def psql_path(url: str | None = None) -> str:
    """PG_BIN_DIR's psql, else the one on PATH, else the found installation's (settings).
    Debian's pg_wrapper on PATH is stepped over for a url it cannot redirect (direct_psql)."""
    from db_tool.settings import runtime

    rt = runtime()
    found = _psql_for(rt.pg_bin_dir, rt.path)
    if url is not None and not rt.pg_bin_dir:
        return direct_psql(found, url, rt.child_env) or found
    return found


PG_WRAPPER = "/usr/share/postgresql-common/pg_wrapper"
PG_BINROOT = "/usr/lib/postgresql"


def direct_psql(
    found: str, url: str, env: Mapping[str, str], *, wrapper: str = PG_WRAPPER,
    binroot: str = PG_BINROOT,
) -> str | None:
    """The psql binary Debian's pg_wrapper would exec, when `found` is that wrapper and url
    leaves it nothing else to decide; None: run `found` as it is.

    pg_wrapper is a Perl script (~50 ms per psql run, more than a whole no-op migrate). For
    psql it always runs the newest <binroot>/<version>/bin/psql; its other work is picking a
    cluster (PGCLUSTER, --cluster, user_clusters, the default cluster) and exporting that
    cluster's PGHOST/PGPORT/PGDATABASE, and PGSYSCONFDIR (where pg_service.conf is read).
    A postgresql:// URL naming one host, its port and a database overrides the first three;
    without PGCLUSTER/PGSERVICE/service= nothing reads the last."""
    try:
        if os.path.realpath(found) != wrapper:
            return None
    except OSError:
        return None
    if env.get("PGCLUSTER") or env.get("PGSERVICE") or not _names_host_port_db(url):
        return None
    newest: tuple[tuple[int, ...], str] | None = None
    try:
        versions = os.listdir(binroot)
    except OSError:
        return None
    for version in versions:
        candidate = os.path.join(binroot, version, "bin", "psql")
        try:
            key = tuple(int(part) for part in version.split("."))
        except ValueError:
            continue
        if os.access(candidate, os.X_OK) and (newest is None or key > newest[0]):
            newest = (key, candidate)
    return newest[1] if newest else None


def _names_host_port_db(url: str) -> bool:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return False
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    hostport = netloc.rpartition("@")[2]
    params = dict(pair.partition("=")[::2] for pair in query.split("&") if pair)
    if "service" in params or "," in hostport or "," in params.get("host", ""):
        return False
    if hostport.startswith("["):
        host, _, port = hostport[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = hostport.partition(":")
    return (bool(params.get("host") or host) and bool(params.get("port") or port)
            and bool(params.get("dbname") or path))


def base_argv(
    url: str,
    *,
    variables: Mapping[str, str] | None = None,
    on_error_stop: bool = True,
    quiet: bool = True,
) -> list[str]:
    # A password in the URL would be visible in `ps` to every local user: it goes to the
    # child's environment instead (env(url=...)).
    safe_url, _ = without_password(url)
    argv = [psql_path(url), "-X", "--no-psqlrc", "-d", safe_url]
    if quiet:
        argv.append("-q")
    if on_error_stop:
        argv += ["-v", "ON_ERROR_STOP=1"]
    for name, value in (variables or {}).items():
        argv += ["-v", f"{name}={value}"]
    return argv


def env(appname: str = "db-tool", url: str | None = None) -> dict[str, str]:
    """The environment for a psql child: a developer's PGDATABASE must not redirect it, and
    the password of `url` (kept out of argv by base_argv) travels as PGPASSWORD."""
    from db_tool.settings import runtime

    child = dict(runtime().child_env)
    child.pop("PGDATABASE", None)
    child.setdefault("PGAPPNAME", appname)
    if url is not None:
        _, password = without_password(url)
        if password is not None:
            child["PGPASSWORD"] = password
    return child


# psql prints `psql:<file>:12: ERROR:  message` (or `psql: error: ...` when it cannot connect).
_ERROR_LINE = re.compile(
    r"^(?:(?:psql:.*?:\d+: )?(?:ERROR|FATAL):\s+|psql: error: )(.*)$", re.MULTILINE
)


def split_error(text: str) -> tuple[str, str]:
    """(the first ERROR/FATAL message in psql's output, the lines after it: DETAIL, HINT,
    CONTEXT); ("", text) when there is none. NOTICEs before it are dropped."""
    match = _ERROR_LINE.search(text)
    if match is None:
        return "", text.strip()
    return match.group(1).strip(), text[match.end() :].strip()


def first_error(text: str) -> str:
    return split_error(text)[0]


def run_sql(
    url: str,
    sql: str,
    *,
    variables: Mapping[str, str] | None = None,
    check: bool = True,
    what: str | None = None,
    extra_args: Sequence[str] = (),
) -> proc.Result:
    """Feed SQL text on stdin (psql -f -)."""
    argv = base_argv(url, variables=variables) + list(extra_args) + ["-f", "-"]
    return proc.run(argv, env=env(url=url), input=sql, check=check, what=what or "psql")


def query(
    url: str, sql: str, *, variables: Mapping[str, str] | None = None
) -> list[list[str]]:
    """Rows of a single query as lists of text (NULL → empty string)."""
    argv = base_argv(url, variables=variables) + [
        "-A", "-t", "-F", FIELD_SEP, "-R", RECORD_SEP, "-f", "-",
    ]
    result = proc.run(argv, env=env(url=url), input=sql, what="psql query")
    text = result.out
    if text.endswith("\n"):
        text = text[:-1]
    if not text:
        return []
    return [rec.split(FIELD_SEP) for rec in text.split(RECORD_SEP) if rec != ""]
