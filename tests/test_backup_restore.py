"""database backup / restore against real clusters (issue 4)."""

from __future__ import annotations

import os
import pty
import shutil
import signal
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PG
from tests.dbproject import Project, add_to_base, project
from tests.helpers import run_cmd, script, tree_snapshot


@pytest.fixture
def proj(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with project(tmp_path_factory.getbasetemp() / "cache", PG_DATABASE="appdb") as p:
        yield p


def count_items(p: Project) -> int:
    return int(p.psql("SELECT count(*) FROM public.item"))


def test_backup_then_restore_keeps_the_backed_up_data(proj: Project) -> None:
    proj.psql("INSERT INTO public.item (id, name) VALUES (2, 'two')")
    assert proj.db("backup") == 0
    files = sorted(p.name for p in proj.backup_dir.iterdir())
    assert {"base.tar.gz", "pg_wal.tar.gz", "database_name"} <= set(files)
    assert (proj.backup_dir / "database_name").read_text().strip() == "appdb"
    assert not [p for p in proj.focus.iterdir() if ".tmp-" in p.name]

    proj.psql("INSERT INTO public.item (id, name) VALUES (3, 'after the backup')")
    assert count_items(proj) == 3
    before = proj.postmaster_pid()
    # The database name comes from the backup, not from PG_DATABASE.
    env = {k: v for k, v in proj.env.items() if k != "PG_DATABASE"}
    assert proj.db("restore", env=env) == 0
    assert proj.postmaster_pid() != before  # restarted on the restored data
    assert count_items(proj) == 2
    assert proj.psql("SELECT name FROM public.color ORDER BY id") == "red\ngreen"
    assert not [p for p in proj.wd.iterdir() if p.name.startswith("data.")]


def test_restore_archive_and_from_another_path(proj: Project, tmp_path: Path) -> None:
    assert proj.db("backup") == 0
    archive = tmp_path / "backup.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(proj.backup_dir, arcname="postgresql-backup")
    proj.psql("DELETE FROM public.item")
    assert proj.db("restore", "--archive", str(archive)) == 0
    assert count_items(proj) == 1
    assert not [p for p in proj.focus.iterdir() if p.name.startswith(".backup-archive-")]

    moved = tmp_path / "elsewhere"
    proj.backup_dir.rename(moved)
    proj.psql("DELETE FROM public.item")
    # Through the installed console script once.
    result = run_cmd([script("database"), "restore", str(moved)], proj.env)
    assert result.returncode == 0, result.stderr
    assert "appdb" in result.stdout
    assert count_items(proj) == 1


def test_failed_backup_leaves_the_previous_one_intact(proj: Project, tmp_path: Path) -> None:
    assert proj.db("backup") == 0
    before = tree_snapshot(proj.backup_dir)
    fake = tmp_path / "bin"
    fake.mkdir()
    from db_tool import pgbin

    real = pgbin.find().bin_dir
    for tool in ("initdb", "pg_ctl", "postgres", "psql", "pg_dump", "pg_config"):
        (fake / tool).symlink_to(real / tool)
    failing = fake / "pg_basebackup"
    # Writes part of a backup, then fails — as a full disk or a dropped connection would.
    failing.write_text('#!/bin/sh\nwhile [ "$1" != -D ]; do shift; done\n'
                       'echo partial > "$2/base.tar.gz"\necho "disk full" >&2\nexit 1\n')
    failing.chmod(failing.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    # The environment main() is given, not os.environ, says which PostgreSQL.
    assert proj.db("backup", env={**proj.env, "PG_BIN_DIR": str(fake)}) == 1
    assert tree_snapshot(proj.backup_dir) == before
    assert not [p for p in proj.focus.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_backup_needs_a_running_cluster(proj: Project) -> None:
    assert run_cmd([script("postgres-cleanup")], {**proj.env, "PG_WORKING_DIR": str(proj.wd)}
                   ).returncode == 0
    assert proj.db("backup") == 1
    assert not proj.backup_dir.exists()


def test_restore_refuses_a_non_backup_before_touching_the_cluster(
    proj: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_backup = tmp_path / "not-a-backup"
    not_backup.mkdir()
    (not_backup / "pg_wal.tar.gz").write_text("x")
    junk_archive = tmp_path / "junk.tar.gz"
    with tarfile.open(junk_archive, "w:gz") as tf:
        tf.add(not_backup, arcname="x")
    pid = proj.postmaster_pid()
    data = tree_snapshot(proj.wd / "data" / "base")
    inputs = tree_snapshot(tmp_path)
    capsys.readouterr()
    assert proj.db("restore", str(not_backup)) == 1
    assert "not a backup" in capsys.readouterr().err
    assert proj.db("restore", str(tmp_path / "missing")) == 1
    assert proj.db("restore", "--archive", str(junk_archive)) == 1
    assert proj.db("restore", "--archive", str(not_backup)) == 1  # a dir, not a .tar.gz
    assert proj.db("restore", "--archive") == 3
    assert proj.postmaster_pid() == pid
    assert tree_snapshot(proj.wd / "data" / "base") == data
    assert tree_snapshot(tmp_path) == inputs
    assert count_items(proj) == 1


def test_a_restore_that_fails_keeps_the_current_data(proj: Project) -> None:
    assert proj.db("backup") == 0
    base = proj.backup_dir / "base.tar.gz"
    base.write_bytes(base.read_bytes()[: os.path.getsize(base) // 2])  # truncated archive
    proj.psql("INSERT INTO public.item (id, name) VALUES (9, 'keep me')")
    pid = proj.postmaster_pid()
    assert proj.db("restore") == 1
    assert proj.postmaster_pid() == pid
    assert count_items(proj) == 2
    assert sorted(p.name for p in proj.wd.iterdir() if p.name.startswith("data")) == ["data"]


def test_cli_options_and_help(proj: Project, capsys: pytest.CaptureFixture[str],
                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for sub in ("backup", "restore", "normalize-backup", "diff"):
        assert proj.db(sub, "--help") == 0
        assert f"usage: database {sub}" in capsys.readouterr().out
        assert proj.db(sub, "--bogus") == 9
        assert "--bogus" in capsys.readouterr().err
    assert proj.db("backup", "extra") == 9
    # Without LOCAL_DIR the backup goes to $PWD/focus/postgresql-backup, as the original's.
    env = {k: v for k, v in proj.env.items() if k != "LOCAL_DIR"}
    env["PG_WORKING_DIR"] = str(proj.wd)
    monkeypatch.chdir(tmp_path)
    assert proj.db("backup", env=env) == 0
    assert (tmp_path / "focus" / "postgresql-backup" / "base.tar.gz").is_file()


@pytest.mark.parametrize("modern", [True, False])
def test_extract_refuses_members_escaping_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, modern: bool
) -> None:
    """Backups from elsewhere are untrusted archives: both the tarfile filter (Python >=
    3.11.4) and the hand-made checks for older Pythons refuse escapes."""
    import io

    from db_tool import backupdir as backup
    from db_tool.errors import Error

    if not modern:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python's tarfile has no extraction filters")

    def archive(name: str, member: tarfile.TarInfo) -> Path:
        path = tmp_path / name
        with tarfile.open(path, "w:gz") as tf:
            data = b"ok"
            good = tarfile.TarInfo("PG_VERSION")
            good.size = len(data)
            tf.addfile(good, io.BytesIO(data))
            tf.addfile(member, io.BytesIO(b"x" * member.size))
        return path

    evil = tarfile.TarInfo("../evil")
    evil.size = 1
    link = tarfile.TarInfo("pg_tblspc/1")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc"
    for n, member in enumerate((evil, link)):
        target = tmp_path / f"t{n}"
        target.mkdir()
        with pytest.raises(Error):
            backup.extract(archive(f"a{n}.tar.gz", member), target)
    assert not (tmp_path / "evil").exists()

    fine = tarfile.TarInfo("global/pg_control")
    fine.size, fine.mode = 3, 0o4777
    target = tmp_path / "fine"
    target.mkdir()
    backup.extract(archive("fine.tar.gz", fine), target)
    assert (target / "PG_VERSION").read_text() == "ok"
    assert (target / "global" / "pg_control").stat().st_mode & 0o7777 == 0o755


# ------------------------------------------------- interrupted runs and what they leave


def _basebackups(p: Project) -> list[int]:
    """pg_basebackup processes writing into this project's focus dir."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"pg_basebackup") and any(
                str(p.focus).encode() in a for a in argv):
            found.append(int(entry))
    return found


def _slow_bin(tmp_path: Path) -> Path:
    """PG_BIN_DIR whose pg_basebackup is the real one, throttled (same pid: exec)."""
    from db_tool import pgbin

    real = pgbin.find().bin_dir
    fake = tmp_path / "slowbin"
    fake.mkdir()
    for tool in real.iterdir():
        if tool.name != "pg_basebackup":
            (fake / tool.name).symlink_to(tool)
    slow = fake / "pg_basebackup"
    slow.write_text(f'#!/bin/sh\nexec {real / "pg_basebackup"} --max-rate=32k "$@"\n')
    slow.chmod(0o755)
    return fake


def _leftovers(p: Project) -> list[str]:
    return sorted(x.name for x in p.focus.iterdir() if ".tmp-" in x.name or ".old-" in x.name)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP])
def test_interrupted_backup_leaves_no_pg_basebackup_and_the_next_one_cleans_up(
    proj: Project, tmp_path: Path, sig: signal.Signals
) -> None:
    assert proj.db("backup") == 0
    before = tree_snapshot(proj.backup_dir)
    env = {**proj.env, "PG_BIN_DIR": str(_slow_bin(tmp_path))}
    child = subprocess.Popen([script("database"), "backup"], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _basebackups(proj) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _basebackups(proj), "pg_basebackup never started"
        time.sleep(1)  # let it write part of the backup
        child.send_signal(sig)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    deadline = time.monotonic() + 10
    while _basebackups(proj) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _basebackups(proj) == []  # died with us, also on kill -9
    assert tree_snapshot(proj.backup_dir) == before  # the previous backup is intact
    if sig == signal.SIGKILL:
        assert child.returncode == -signal.SIGKILL
        assert len(_leftovers(proj)) == 1  # the half-written backup: the next run removes it
    else:
        assert child.returncode == 130, err
        assert _leftovers(proj) == []
    # no WAL sender of the dead run stays behind holding the server
    deadline = time.monotonic() + 10
    while proj.psql("SELECT count(*) FROM pg_stat_replication") != "0":
        assert time.monotonic() < deadline, "a WAL sender stayed"
        time.sleep(0.1)
    result = run_cmd([script("database"), "backup"], proj.env)
    assert result.returncode == 0, result.stderr
    if sig == signal.SIGKILL:
        assert "left by a run that was killed" in result.stderr
    assert _leftovers(proj) == []


def test_backup_puts_back_a_previous_backup_a_killed_swap_moved_aside(proj: Project) -> None:
    assert proj.db("backup") == 0
    # killed between the two renames of the swap: only `.old-<dead pid>` holds the backup
    moved = proj.focus / ".postgresql-backup.old-999999"
    proj.backup_dir.rename(moved)
    before = tree_snapshot(moved)
    from db_tool.backupdir import sweep_swap

    sweep_swap(proj.backup_dir)
    assert tree_snapshot(proj.backup_dir) == before and not moved.exists()


def test_restore_puts_back_the_data_a_killed_restore_moved_aside(proj: Project) -> None:
    assert proj.db("backup") == 0
    proj.psql("INSERT INTO public.item (id, name) VALUES (5, 'current')")
    assert run_cmd([script("postgres-cleanup")], {**proj.env, "PG_WORKING_DIR": str(proj.wd)}
                   ).returncode == 0
    # killed after moving the data aside, before the restored data took its place, with a
    # half-unpacked copy next to it
    (proj.wd / "data").rename(proj.wd / "data.pre-restore-999999")
    (proj.wd / "data.restoring").mkdir()
    (proj.wd / "data.restoring" / "junk").write_bytes(b"x" * 1024)
    # a plain start finds its data again once a restore has run: here the next restore
    # itself recovers it first, then replaces it as asked
    result = run_cmd([script("database"), "restore"], proj.env)
    assert result.returncode == 0, result.stderr
    assert "put back" in result.stderr and "data.restoring" in result.stderr
    assert count_items(proj) == 1  # the backup's data
    assert sorted(p.name for p in proj.wd.iterdir() if p.name.startswith("data")) == ["data"]


def test_backup_of_the_server_the_url_names(proj: Project, pg: PG) -> None:
    # --url (or PGURL) naming another server: that server is backed up, not the project's.
    name = "marker_" + os.urandom(4).hex()
    pg.psql(f'CREATE DATABASE "{name}"')
    try:
        oid = pg.psql(f"SELECT oid FROM pg_database WHERE datname = '{name}'")
        assert proj.psql(f"SELECT count(*) FROM pg_database WHERE oid = {oid}") == "0"
        assert proj.db("--url", pg.url, "backup") == 0
        with tarfile.open(proj.backup_dir / "base.tar.gz") as tf:
            assert any(m.startswith(f"base/{oid}/") for m in tf.getnames())
        assert (proj.backup_dir / "database_name").read_text().strip() == "postgres"
    finally:
        pg.psql(f'DROP DATABASE "{name}"')


def test_backup_password_goes_to_the_environment_not_argv() -> None:
    from db_tool.commands.backup import without_password

    assert without_password("postgresql://u:s%40cret@h:5433/db?sslmode=require") == (
        "postgresql://u@h:5433/db?sslmode=require", "s@cret")
    assert without_password("postgresql://u@/db?host=/s&password=pw") == (
        "postgresql://u@/db?host=/s", "pw")
    assert without_password("host=h dbname=d") == ("host=h dbname=d", None)


def test_backup_progress_on_a_terminal_replaces_the_old_one_and_restore_drops_signals(
    proj: Project, tmp_path: Path
) -> None:
    p = proj
    assert p.db("backup") == 0
    first = tree_snapshot(p.backup_dir)
    p.psql("INSERT INTO public.item (id, name) VALUES (2, 'second backup')")

    # stderr on a terminal: pg_basebackup's own progress (-P) is shown.
    master, slave = pty.openpty()
    try:
        child = subprocess.Popen([script("database"), "backup"], env=p.env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        child.wait(timeout=120)
    finally:
        os.close(master)
    terminal = b"".join(chunks).decode(errors="replace")
    assert child.returncode == 0, terminal
    assert "100%" in terminal and "kB" in terminal, terminal  # "... kB (100%), 1/1 tablespace"

    # The second backup replaced the first, and nothing of the swap is left behind.
    assert tree_snapshot(p.backup_dir) != first
    assert not [e for e in p.focus.iterdir() if ".tmp-" in e.name or ".old-" in e.name]

    # A backup whose data carries standby/recovery signals (as one of a standby would):
    # restore removes them, so the server comes up as a primary, not as a standby.
    copy = tmp_path / "standby-backup"
    shutil.copytree(p.backup_dir, copy)
    add_to_base(copy, {"standby.signal": b"", "recovery.signal": b""})
    assert p.db("restore", str(copy)) == 0
    assert p.psql("SELECT pg_is_in_recovery()") == "f"
    assert p.psql("SELECT string_agg(name, ',' ORDER BY id) FROM public.item") == \
        "one,second backup"  # the data of the second backup


def test_without_local_dir_diff_restore_and_normalize_look_in_pwd_and_touch_nothing(
    tmp_path: Path,
) -> None:
    import subprocess

    from tests.helpers import base_env

    # As the original's ${LOCAL_DIR:-$PWD}: the backup is looked for in $PWD/focus; a missing
    # one is refused before anything is created (diff: 2, restore: 1, normalize-backup: 3).
    env = {k: v for k, v in base_env().items() if k not in ("LOCAL_DIR", "PG_WORKING_DIR")}
    env["PG_WORKING_DIR"] = str(tmp_path / "wd")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for argv, rc, words in ((["diff"], 2, "not a backup"), (["diff", "log"], 2, "no diff logs"),
                            (["restore"], 1, "not a backup"),
                            (["normalize-backup"], 3, "input backup directory not found")):
        result = subprocess.run([script("database"), *argv], env=env, cwd=cwd, text=True,
                                capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
                                check=False)
        assert result.returncode == rc, (argv, result.stderr)
        assert words in result.stderr and str(cwd / "focus") in result.stderr
    assert list(cwd.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd"]
