"""The hectic SQL bundle: the ordered files under sql/, applying them, and loading secrets.

The bundle is plain SQL usable without Python (`database bundle sql` / `database bundle path`);
only version.sql is a template, rendered with VERSION.
"""

from __future__ import annotations

import os

from db_tool.errors import Error, MissingError

TYPE_CHECKING = False  # pathlib and typing only where used: the no-op `migrate` reads VERSION
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

# The one place the bundle version lives; version.sql holds a placeholder for it.
VERSION = "0.1.0"

PLACEHOLDER = "@HECTIC_VERSION@"
NAMES = ("version", "secret", "migration", "inheritance")
_SQL_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "sql")


def sql_file(name: str) -> str:
    """The path of one bundle file (`version`: the unrendered template)."""
    return os.path.join(_SQL_DIR, f"{name}.sql")


def files() -> list[Path]:
    """The bundle files in the order they must run (version.sql is the unrendered template)."""
    from pathlib import Path

    return [Path(sql_file(name)) for name in NAMES]


def _rendered(path: str | os.PathLike[str]) -> str:
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if os.path.basename(path) == "version.sql":
        if PLACEHOLDER not in text:
            raise Error(f"{os.fspath(path)} lacks the {PLACEHOLDER} placeholder", exit_code=13)
        text = text.replace(PLACEHOLDER, VERSION)
    return text


def render() -> str:
    """The whole bundle as one SQL script with the version filled in (for psql -f or \\i)."""
    parts = []
    for name in NAMES:
        text = _rendered(sql_file(name))
        parts.append(f"-- ==== hectic bundle {VERSION}: {name}.sql ====\n{text.rstrip()}\n")
    return "\n".join(parts)


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    from db_tool import cachedir
    from db_tool.settings import cache_locations_from, runtime

    locations = runtime().cache_locations if env is None else cache_locations_from(env)
    base = cachedir.choose(locations, None, "bundle cache")
    if base is None:
        raise Error(
            "no writable cache directory for the rendered bundle (tried XDG_CACHE_HOME, "
            "HOME/.cache, TMPDIR): set XDG_CACHE_HOME to a writable directory"
        )
    return base / "bundle" / VERSION


def materialized_paths(env: Mapping[str, str] | None = None) -> list[Path]:
    """Ordered paths for `\\i`: the rendered version file in the cache dir, then the others.

    The cache file is rewritten (atomically) only when missing or different, so concurrent
    callers never see a half-written file.
    """
    target = cache_dir(env) / "version.sql"
    text = _rendered(files()[0])
    try:
        current = target.read_text(encoding="utf-8")
    except OSError:
        current = None
    if current != text:
        tmp = target.with_name(f".version.sql.{os.getpid()}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, target)
        except OSError as exc:
            raise Error(
                f"cannot write the rendered bundle to {target}: {exc.strerror}; "
                "set XDG_CACHE_HOME to a writable directory"
            ) from None
    return [target, *files()[1:]]


def apply(url: str) -> None:
    """Apply the whole bundle in one psql process and one transaction (all or nothing)."""
    from db_tool import psql  # lazily: VERSION and files() serve start-up-critical paths

    result = psql.run_sql(
        url,
        render(),
        check=False,
        extra_args=["--single-transaction"],
        what="applying the hectic bundle",
    )
    if not result.ok:
        message, detail = _psql_failure(result.err)
        raise Error(f"applying the hectic bundle failed: {message}", detail=detail)


def _psql_failure(stderr: str) -> tuple[str, str]:
    from db_tool import psql

    message, rest = psql.split_error(stderr)
    return (message, rest) if message else ("psql failed", rest)


def _copy_text_escape(data: bytes) -> str:
    out = []
    for byte in data:
        if byte == 0x5C:
            out.append("\\\\")
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def normalize_dotenv(content: str) -> str:
    """What the SQL loader should see: without a leading UTF-8 BOM, and `export KEY=v` lines
    as `KEY=v` (shell-style dotenv files). Line numbers stay the same, so the loader's errors
    still point at the right line; nothing else changes."""
    import re  # here: `migrate` and `status` import this module but load no secrets

    content = content.removeprefix("\ufeff")
    # `export` then blanks then a key and "=": drop the `export` word (the key keeps its place).
    return re.sub(r"^([ \t]*)export[ \t]+(?=[^=\n]*\S[^=\n]*=)", r"\1", content,
                  flags=re.MULTILINE)


def dotenv_is_empty(content: str) -> bool:
    """Nothing but newlines: the original then loads nothing (its shell `$(cat file)` drops
    trailing newlines and an empty result skips the load), so hectic.secret keeps its rows."""
    return content.strip("\n") == ""


def load_secrets(url: str, content: str) -> int:
    """Replace hectic.secret with the pairs in `content` (dotenv); returns how many are stored.

    The content travels as COPY data on psql's stdin: never pasted into SQL, never in argv
    (world-readable in /proc and limited to 128 KiB per argument). The bundle must be applied
    (ours or the original's: both have hectic.load_secrets_from_env(text) RETURNS void).
    """
    try:
        data = normalize_dotenv(content).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Error(f"dotenv content is not valid UTF-8 (at character {exc.start})",
                    exit_code=3) from None
    if b"\x00" in data:
        raise Error("dotenv content contains a NUL byte, which PostgreSQL text cannot hold",
                    exit_code=3)
    script = (
        "SET client_encoding = 'UTF8';\n"
        "BEGIN;\n"
        "CREATE TEMPORARY TABLE hectic_dotenv (content text NOT NULL) ON COMMIT DROP;\n"
        "COPY hectic_dotenv (content) FROM STDIN;\n"
        f"{_copy_text_escape(data)}\n"
        "\\.\n"
        "SELECT hectic.load_secrets_from_env(content)::text AS hectic_loaded FROM hectic_dotenv"
        " \\gset\n"
        "SELECT pg_catalog.count(*) FROM hectic.secret;\n"
        "COMMIT;\n"
    )
    from db_tool import psql

    try:
        rows = psql.query(url, script)
    except Error as exc:
        if not exc.detail:
            raise
        message, detail = _psql_failure(exc.detail)
        raise Error(f"loading secrets failed: {message}", detail=detail) from None
    if len(rows) != 1 or not rows[0][0].isdigit():
        raise Error(f"loading secrets: unexpected psql output {rows!r}", exit_code=13)
    return int(rows[0][0])


def resolve_dotenv(
    env: Mapping[str, str],
    explicit_file: str | None = None,
    *,
    strict: bool = True,
) -> tuple[str, str] | None:
    """Find the dotenv content and say where it came from, or None when there is none.

    Order: HECTIC_DOTENV_CONTENT; else `explicit_file`, else HECTIC_DOTENV_FILE; else
    $LOCAL_DIR/.env.$ENVIRONMENT when readable (only when no file is named). With strict
    (db-ops), a named file that cannot be read is an error (exit 3); without it (database
    hydrate: "when set and readable") it yields None. An empty variable counts as unset.
    """
    content = env.get("HECTIC_DOTENV_CONTENT")
    if content:
        return content, "HECTIC_DOTENV_CONTENT"
    named: list[tuple[str, str]] = []
    if explicit_file:
        named.append((explicit_file, explicit_file))
    elif env.get("HECTIC_DOTENV_FILE"):
        path = env["HECTIC_DOTENV_FILE"]
        named.append((path, f"HECTIC_DOTENV_FILE={path}"))
    for path, where in named:
        text = _read(path)
        if text is not None:
            return text, where
        if strict:
            raise MissingError(f"dotenv file is not readable: {path}")
    if not named and env.get("LOCAL_DIR") and env.get("ENVIRONMENT"):
        path = os.path.join(env["LOCAL_DIR"], f".env.{env['ENVIRONMENT']}")
        text = _read(path)
        if text is not None:
            return text, path
    return None


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MissingError(f"dotenv file is not valid UTF-8: {path} (byte {exc.start})") from None
