"""A tiny hectic project with a running development cluster, for backup/restore/diff tests.

LOCAL_DIR is a short dir directly under /tmp: the temporary clusters' sockets live below
$LOCAL_DIR/focus/... and a unix socket path must stay under ~107 bytes.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from db_tool import privs
from db_tool.cli import database
from db_tool.cluster import build_url
from db_tool.settings import login_name
from tests.helpers import base_env, next_port, stop_quietly

ENTRYPOINT = """\
\\ir tables.sql
BEGIN;
SET LOCAL hectic.migration_mode = 'on';
INSERT INTO public.color (id, name) VALUES (1, 'red'), (2, 'green');
COMMIT;
INSERT INTO public.item (id, name) VALUES (1, 'one');
"""
TABLES = """\
CREATE TABLE public.item (id int PRIMARY KEY, name text) INHERITS (hectic.created_at);
CREATE TABLE public.color (id int PRIMARY KEY, name text)
    INHERITS (hectic.created_at, hectic.updated_at, hectic.immutable);
"""


@dataclass
class Project:
    root: Path
    env: dict[str, str]

    @property
    def focus(self) -> Path:
        return self.root / "focus"

    @property
    def wd(self) -> Path:
        return self.focus / "postgresql"

    @property
    def backup_dir(self) -> Path:
        return self.focus / "postgresql-backup"

    def url(self, db: str | None = None) -> str:
        return build_url(login_name(), db or self.env.get("PG_DATABASE", "testdb"),
                         self.wd / "sock", int(self.env["PG_PORT"]))

    def db(self, *argv: str, env: Mapping[str, str] | None = None) -> int:
        return database.main(list(argv), env=dict(env or self.env))

    def psql(self, sql: str, db: str | None = None) -> str:
        out = subprocess.run(
            ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", self.url(db), "-c", sql],
            capture_output=True, text=True, check=False,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def write(self, relpath: str, text: str) -> None:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def postmaster_pid(self) -> int:
        return int((self.wd / "data" / "postmaster.pid").read_text().split()[0])


def short_dir(prefix: str = "dbt-") -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    account = privs.server_account(None)
    if account is not None:
        # mkdtemp makes 0700 dirs; the server account must reach clusters below (as the
        # tool itself arranges with an ACL; quieter here).
        os.chmod(path, 0o711)
    return path


@contextlib.contextmanager
def project(cache: Path, **extra: str) -> Iterator[Project]:
    """A project dir (sources + one migration dir) with its dev cluster deployed and running."""
    root = short_dir()
    env = base_env(
        LOCAL_DIR=str(root), PG_PORT=str(next_port()), PG_SHARED_PRELOAD_LIBRARIES="",
        XDG_CACHE_HOME=str(cache), **extra,
    )
    for var in ("PGURL", "DB_URL", "PG_WORKING_DIR", "PG_DATABASE", "PG_LOG_PATH", "PAGER"):
        if var not in extra:
            env.pop(var, None)
    p = Project(root, env)
    p.write("db/src/entrypoint.sql", ENTRYPOINT)
    p.write("db/src/tables.sql", TABLES)
    (root / "db" / "migration").mkdir(parents=True)
    try:
        assert p.db("deploy", "-P") == 0
        yield p
    finally:
        stop_quietly(p.wd)
        for side in ("db1", "db2"):
            stop_quietly(p.focus / "postgresql-diff-tmp" / side)
        shutil.rmtree(root, ignore_errors=True)


LEFTOVERS = ("standby.signal", "recovery.signal", "postmaster.pid", "postmaster.opts")


def add_to_base(backup_dir: Path, extra: dict[str, bytes]) -> None:
    """Repack backup_dir/base.tar.gz with extra top-level files (as a standby's data has)."""
    base = backup_dir / "base.tar.gz"
    new = backup_dir / "base.new.tar.gz"
    with tarfile.open(base, "r:gz") as src, tarfile.open(new, "w:gz", compresslevel=1) as dst:
        for member in src:
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        for name, data in extra.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            dst.addfile(info, io.BytesIO(data))
    new.replace(base)


def leftovers() -> dict[str, bytes]:
    return {name: b"99999\n" if name == "postmaster.pid" else b"" for name in LEFTOVERS}


def processes_with(fragment: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if fragment.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found
