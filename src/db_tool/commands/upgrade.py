"""upgrade: move the project's cluster to the PostgreSQL installation now in use.

pg_upgrade (of the new installation) when it has one, else pg_dumpall of the new installation
against the old server (started from the old binaries) restored into a fresh cluster. Either
way the old data dir stays as data.pre-upgrade-<major> until the new cluster has started, and
is kept after that for the user to remove; a failure puts it back as data/.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from db_tool import output, pgbin, proc, serverconf, template_cache, workdir
from db_tool.cluster import Cluster
from db_tool.errors import Error, NotInstalledError
from db_tool.project_settings import ProjectSettings

# What restoring a pg_dumpall into a fresh cluster always says: its superuser exists already.
_EXPECTED_RESTORE_ERRORS = ("already exists", "current user cannot be dropped")


@dataclass(frozen=True)
class Upgraded:
    old_major: int
    new_major: int
    method: str  # "pg_upgrade", "dump and restore", "" (nothing to do)
    kept: Path | None  # the old data dir


def _aside_name(wd: Path, old_major: int) -> Path:
    aside = wd / f"data.pre-upgrade-{old_major}"
    n = 1
    while aside.exists() or aside.is_symlink():
        n += 1
        aside = wd / f"data.pre-upgrade-{old_major}-{n}"
    return aside


def upgrade(settings: ProjectSettings, *, old_bin_dir: str | None = None,
            dump: bool = False) -> Upgraded:
    config = settings.cluster_config(reuse=True)
    new = Cluster(config)
    if not new.is_initialised():
        raise Error(f"no cluster in {new.datadir}: nothing to upgrade (`database init` makes "
                    "one)")
    new.check_working_dir()
    workdir.refuse_foreign_cluster(new.working_dir)
    raw = (new.datadir / "PG_VERSION").read_text().strip()
    if not raw.isdigit():
        raise Error(f"{new.datadir}/PG_VERSION says {raw!r}, which no PostgreSQL wrote")
    old_major, new_major = int(raw), new.install.major
    if old_major == new_major:
        return Upgraded(old_major, new_major, "", None)
    if old_major > new_major:
        raise Error(
            f"the cluster in {new.datadir} is PostgreSQL {old_major}, newer than "
            f"{new.install.describe()}: PostgreSQL cannot go back; set PG_BIN_DIR to a "
            f"PostgreSQL {old_major} bin dir — nothing was changed"
        )
    old_install = pgbin.find_major(old_major, old_bin_dir)
    if old_install is None:
        raise NotInstalledError(
            f"the cluster in {new.datadir} is PostgreSQL {old_major} and its binaries are "
            f"needed to read it, but none were found: install them (Debian/Ubuntu: apt-get "
            f"install postgresql-{old_major}) or pass --old-bin-dir DIR — nothing was changed"
        )
    old = Cluster(config, install=old_install)
    with new.locked():
        if old.is_running():
            old.stop_locked()
        use_pg_upgrade = not dump and new.install.has("pg_upgrade")
        if use_pg_upgrade:
            kept = _with_pg_upgrade(old, new)
        else:
            kept = _with_dump(old, new)
    return Upgraded(old_major, new_major, "pg_upgrade" if use_pg_upgrade
                    else "dump and restore", kept)


def _start_or_put_back(new: Cluster, kept: Path) -> None:
    """Start the new cluster; when it does not come up, the old data goes back to data/."""
    try:
        new.start_locked()
        new.ensure_database(new.database)
    except BaseException:
        with contextlib.suppress(Error):
            new.stop_locked()
        failed = new.working_dir / f"data.upgrade-failed-{new.install.major}"
        if failed.exists():
            shutil.rmtree(failed, ignore_errors=True)
        if new.datadir.exists():
            new.datadir.rename(failed)
        kept.rename(new.datadir)
        output.warn(f"the upgraded cluster did not start: the old one is back in "
                    f"{new.datadir}, the new one left in {failed} for a look")
        raise


def _has_checksums(old: Cluster, env: dict[str, str]) -> bool:
    if not old.install.has("pg_controldata"):
        return False  # db-tool's initdb never turned them on
    out = proc.run([old.install.tool("pg_controldata"), str(old.datadir)], user=old.run_as,
                   cwd="/", env=env, what="pg_controldata of the old cluster").out
    for line in out.splitlines():
        if line.startswith("Data page checksum version:"):
            return line.split(":", 1)[1].strip() not in ("0", "")
    return False


def _with_pg_upgrade(old: Cluster, new: Cluster) -> Path:
    wd = new.working_dir
    staging = wd / f"data.upgrading-{new.install.major}"
    if staging.exists():
        shutil.rmtree(staging)  # what an interrupted upgrade left
    new._prepare_dirs()
    account = new.run_as
    if account is not None:
        workdir.grant_server_access(old.working_dir, old.install, account)
    env = new.server_process_env()
    argv = template_cache.initdb_argv(new.install, new.superuser, staging)
    # pg_upgrade needs both with or both without page checksums (initdb 18 turns them on).
    checksums = _has_checksums(old, env)
    if checksums and new.install.major < 18:
        argv.append("--data-checksums")
    elif not checksums and new.install.major >= 18:
        argv.append("--no-data-checksums")
    if account is not None:
        staging.mkdir(mode=0o700)
        os.chown(staging, account.uid, account.gid)
    with output.step(f"initdb for PostgreSQL {new.install.major}"):
        proc.run(argv, user=account, cwd="/", env=env, what=f"initdb {staging}", tied=True)
    argv = [
        new.install.tool("pg_upgrade"), "-b", str(old.install.bin_dir),
        "-B", str(new.install.bin_dir), "-d", str(old.datadir), "-D", str(staging),
        "-U", new.superuser, "-s", str(new.sockdir), "-p", str(new.port), "-P", str(new.port),
    ]
    with output.step(f"pg_upgrade {old.install.major} -> {new.install.major}"):
        result = proc.run(argv, check=False, user=account, cwd=str(staging), env=env)
    if not result.ok:
        tail = "\n".join((result.out + result.err).strip().splitlines()[-15:])
        raise Error(
            f"pg_upgrade failed (exit {result.returncode}); the old cluster in {old.datadir} "
            f"is unchanged, pg_upgrade's logs are in {staging}/pg_upgrade_output.d",
            detail=tail,
        )
    for script_name in ("delete_old_cluster.sh", "update_extensions.sql"):
        (staging / script_name).unlink(missing_ok=True)
    kept = _aside_name(wd, old.install.major)
    old.datadir.rename(kept)
    staging.rename(new.datadir)
    serverconf.write_base_conf(new.datadir, serverconf.read_conf_file(new.config.conf_file),
                               new.run_as)
    _start_or_put_back(new, kept)
    return kept


def _with_dump(old: Cluster, new: Cluster) -> Path:
    wd = new.working_dir
    dump_file = wd / "data.upgrade-dump.sql"
    old.start_locked()
    try:
        with output.step(f"dumping the PostgreSQL {old.install.major} cluster"):
            proc.run([new.install.tool("pg_dumpall"), "-d", old.url_for("postgres"),
                      "--clean", "--if-exists", "-f", str(dump_file)], env=new.client_env(),
                     what="pg_dumpall of the old cluster")
    finally:
        old.stop_locked()
    kept = _aside_name(wd, old.install.major)
    old.datadir.rename(kept)
    try:
        new._fresh()
    except BaseException:
        if new.datadir.exists():
            shutil.rmtree(new.datadir, ignore_errors=True)
        kept.rename(new.datadir)
        raise
    _start_or_put_back(new, kept)
    with output.step(f"restoring into PostgreSQL {new.install.major}"):
        result = proc.run([new.install.tool("psql"), "-X", "-q", "-d", new.url_for("postgres"),
                           "-f", str(dump_file)], check=False, env=new.client_env())
    errors = [ln for ln in result.err.splitlines() if "ERROR:" in ln
              and not any(e in ln for e in _EXPECTED_RESTORE_ERRORS)]
    if errors or not result.ok:
        raise Error(
            f"restoring the dump into PostgreSQL {new.install.major} had errors; the old "
            f"cluster is kept in {kept} and the dump in {dump_file}",
            detail="\n".join(errors[:15] or result.err.splitlines()[-15:]),
        )
    os.unlink(dump_file)
    return kept
