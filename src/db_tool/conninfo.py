"""Connection strings: build the project's socket URL, and keep passwords out of argv.

A password given in a URL (`postgresql://u:secret@host/db`, `?password=secret`) or in a
key=value conninfo (`password=secret`) would be visible to every local user in `ps` if the URL
went on a child's command line. `without_password()` splits it off; the caller passes the
cleaned URL in argv and the password as PGPASSWORD in the child's environment (readable only
by the same account and root).
"""

from __future__ import annotations

TYPE_CHECKING = False  # pathlib only for the annotation (psql imports this on every migrate)
if TYPE_CHECKING:
    from pathlib import Path

_URL_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def _pct(text: str, safe: bytes = b"") -> str:
    # urllib.parse.quote without importing urllib (start-up cost on every shell hook).
    return "".join(
        chr(b) if b in _URL_SAFE or b in safe else f"%{b:02X}" for b in text.encode("utf-8")
    )


def build_url(user: str, database: str, sockdir: Path | str, port: int) -> str:
    host = _pct(str(sockdir), b"/")
    return f"postgresql://{_pct(user)}@/{_pct(database)}?host={host}&port={port}"


def unpct(text: str, errors: str = "replace") -> str:
    """A URL part %-decoded (urllib.parse.unquote, without importing urllib: start-up cost);
    errors="strict" raises UnicodeDecodeError for bytes that are no UTF-8."""
    if "%" not in text:
        return text
    import re  # only here: a no-op `migrate`/`status` with a plain URL does without it

    raw = re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]),
                 text.encode("utf-8"))
    return raw.decode("utf-8", errors)


# key = value pairs of a libpq conninfo string; the value is 'quoted' (\' and \\ escapes) or bare.
_KV_PASSWORD = r"(?:^|(?<=\s))password\s*=\s*('(?:[^'\\]|\\.)*'|\S*)\s*"


def _kv_unquote(value: str) -> str:
    import re

    if value.startswith("'") and value.endswith("'") and len(value) >= 2:
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def without_password(url: str) -> tuple[str, str | None]:
    """(the URL with every password removed, the password or None)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        import re

        match = re.search(_KV_PASSWORD, url)
        if match is None or "://" in url:
            return url, None
        cleaned = (url[: match.start()] + url[match.end() :]).strip()
        return cleaned, _kv_unquote(match.group(1))
    password: str | None = None
    end = len(rest)
    for stop in ("/", "?"):
        pos = rest.find(stop)
        if pos != -1:
            end = min(end, pos)
    authority, tail = rest[:end], rest[end:]
    at = authority.rfind("@")
    if at != -1:
        user, colon, secret = authority[:at].partition(":")
        if colon:
            password = unpct(secret)
            authority = user + authority[at:]
    path, qmark, query = tail.partition("?")
    if qmark:
        kept = []
        for item in query.split("&"):
            key, _, value = item.partition("=")
            if unpct(key) == "password":
                password = unpct(value)
            else:
                kept.append(item)
        tail = path + ("?" + "&".join(kept) if kept else "")
    return f"{scheme}://{authority}{tail}", password
