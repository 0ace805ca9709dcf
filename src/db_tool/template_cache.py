"""The template cache: fresh clusters are copies of one initdb per installation.

    <cache>/templates/<key>/data      a finished cluster (initdb + the project's database)
    <cache>/templates/<key>/ready     marker: `data` is complete
    <cache>/templates/<key>/spares/   ready-* : finished copies, claimed by rename
    <cache>/templates/<key>/lock      serialises building the template

Everything here takes explicit values (installation, server account, superuser, database,
cache dir); nothing reads the environment or a Cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from db_tool import fslock, pgbin, pgwire, proc

__all__ = ["Template", "discard", "initdb", "provide"]


@dataclass(frozen=True)
class Template:
    """What a template is made of and where it is cached (cache_dir None: no cache)."""

    install: pgbin.PgInstall
    account: proc.RunAs | None
    superuser: str
    database: str
    cache_dir: Path | None
    use_spare: bool = True

    def key(self) -> str:
        import hashlib

        account = self.account
        owner = f"{account.uid}:{account.gid}" if account else f"{os.getuid()}:{os.getgid()}"
        material = "|".join(
            [self.install.fingerprint(), self.superuser, owner, "no-locale,UTF8,trust", "v2",
             self.database]
        )
        return hashlib.sha256(material.encode()).hexdigest()[:20]

    @property
    def path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / "templates" / self.key()


def initdb_argv(install: pgbin.PgInstall, superuser: str, target: Path) -> list[str]:
    argv = [
        install.tool("initdb"), "-D", str(target), "-U", superuser,
        "--auth=trust", "--no-locale", "-E", "UTF8", "--no-sync",
    ]
    if install.major >= 14:
        argv.append("--no-instructions")
    return argv


def initdb(spec: Template, target: Path, env: Mapping[str, str]) -> None:
    account = spec.account
    if account is not None:
        target.mkdir(mode=0o700)
        os.chown(target, account.uid, account.gid)
    proc.run(
        initdb_argv(spec.install, spec.superuser, target), user=account, cwd="/", env=env,
        what=f"initdb {target}",
    )


def provide(spec: Template, datadir: Path, env: Mapping[str, str]) -> Path | None:
    """Make `datadir` a fresh cluster; returns the template dir used (None: plain initdb)."""
    template = spec.path
    if template is None:
        initdb(spec, datadir, env)
        return None
    ready = template / "ready"
    if not ready.is_file():
        _build(spec, template, datadir, env)
    if spec.use_spare and _claim_spare(template, datadir):
        return template
    # cp -a keeps ownership (root → PG_OS_USER) and modes (0700) in one fast pass.
    proc.run(["cp", "-a", str(template / "data"), str(datadir)], what="copy template")
    return template


# A spare is a finished copy of the template kept next to it; claiming one is a rename,
# which costs nothing, where copying ~1000 files can take a second on a slow disk. After a
# fresh cluster has started, one spare is prepared again in the background.
def _claim_spare(template: Path, datadir: Path) -> bool:
    spares = template / "spares"
    try:
        candidates = sorted(p for p in spares.iterdir() if p.name.startswith("ready-"))
    except FileNotFoundError:
        return False
    for spare in candidates:
        try:
            spare.rename(datadir)
            return True
        except FileNotFoundError:
            continue  # claimed by a concurrent init
        except OSError:
            return False  # e.g. the cache is on another filesystem: copy instead
    return False


def refill_spare(template: Path | None, use_spare: bool) -> None:
    if template is None or not use_spare:
        return
    spares = template / "spares"
    spares.mkdir(exist_ok=True)
    now = time.time()
    for entry in spares.iterdir():
        if entry.name.startswith("ready-"):
            return
        if entry.name.startswith("tmp-"):
            try:
                if now - entry.stat().st_mtime < 300:
                    return  # being prepared
            except FileNotFoundError:
                continue
            shutil.rmtree(entry, ignore_errors=True)  # left by a killed copy
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    # Detached and silent: the caller (a shell hook, $(...)) must not wait for it.
    subprocess.Popen(
        ["sh", "-c", 'cp -a "$1" "$2" && mv "$2" "$3" || rm -rf "$2"', "db-tool-spare",
         str(template / "data"), str(spares / f"tmp-{tag}"), str(spares / f"ready-{tag}")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        close_fds=True, start_new_session=True, cwd="/",
    )


def _build(spec: Template, template: Path, datadir: Path, env: Mapping[str, str]) -> None:
    template.mkdir(parents=True, exist_ok=True)
    with fslock.exclusive(template / "lock", waiting="another run is building the template"):
        if (template / "ready").is_file():
            return
        # initdb into our own data dir (the server account can reach it), create the
        # database in single-user mode (no socket needed), then cache a copy.
        initdb(spec, datadir, env)
        create_database_offline(spec, datadir, env)
        staging = template / "data.tmp"
        if staging.exists():
            shutil.rmtree(staging)
        proc.run(["cp", "-a", str(datadir), str(staging)], what="cache template")
        if (template / "data").exists():
            shutil.rmtree(template / "data")
        staging.rename(template / "data")
        os.sync()
        (template / "ready").write_text(spec.install.describe() + "\n")
        shutil.rmtree(datadir)


def create_database_offline(spec: Template, datadir: Path, env: Mapping[str, str]) -> None:
    name = spec.database
    if name in ("postgres", "template0", "template1") or "\n" in name:
        return  # exists already / cannot be fed line-wise: created after start instead
    proc.run(
        [spec.install.tool("postgres"), "--single", "-D", str(datadir), "-F",
         "-c", "listen_addresses=", "-c", "logging_collector=off", "postgres"],
        input=f"CREATE DATABASE {pgwire.quote_ident(name)}\n",
        user=spec.account, cwd="/", env=env, what="create database in template",
    )


def drop(spec: Template) -> None:
    """Forget the template (its copy turned out broken): the next fresh init rebuilds it."""
    template = spec.path
    if template is not None:
        (template / "ready").unlink(missing_ok=True)
        shutil.rmtree(template / "spares", ignore_errors=True)


def discard(path: Path, parent: Path) -> None:
    """Remove a directory of ours without waiting: rename now, delete in the background."""
    trash = parent / f".trash-{os.getpid()}-{time.monotonic_ns()}"
    path.rename(trash)
    subprocess.Popen(
        ["rm", "-rf", "--", str(trash)], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True,
        start_new_session=True,
    )
