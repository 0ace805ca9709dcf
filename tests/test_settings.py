"""settings.py, the only module that reads the environment: what each variable becomes, and
the proof that nothing else reads it (a scan of the source, and commands run in-process with
os.environ swapped for an empty mapping and the whole environment passed as env=)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from db_tool import project_settings, settings
from db_tool.errors import Error, MissingError
from db_tool.project_settings import ProjectSettings
from db_tool.settings import ClusterConfig, Runtime
from tests.conftest import Cli
from tests.migrator_support import flat

SRC = Path(__file__).resolve().parent.parent / "src" / "db_tool"

# Modules that may still read the environment themselves, each with its reason. settings.py
# is the reader; everything else gets values from it (or settings.runtime()).
ALLOWED: dict[str, str] = {
    "settings.py": "the one reader of the environment",
}
_ENV_ATTRS = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def _env_reads(path: Path) -> list[str]:
    """`os.environ`, `os.getenv(...)` & co, `from os import environ`, and shutil.which()
    without path= (it reads PATH from os.environ) in one module: 'line: what' each."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr in _ENV_ATTRS
                and isinstance(node.value, ast.Name) and node.value.id == "os"):
            found.append(f"{node.lineno}: os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"{node.lineno}: from os import {a.name}" for a in node.names
                      if a.name in _ENV_ATTRS]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "which" and isinstance(node.func.value, ast.Name)
              and node.func.value.id == "shutil"):
            path = next((k.value for k in node.keywords if k.arg == "path"),
                        node.args[2] if len(node.args) > 2 else None)
            if path is None:
                found.append(f"{node.lineno}: shutil.which without path=")
            elif not _never_none(path):
                found.append(f"{node.lineno}: shutil.which path= may be None")
    return found


def _never_none(expr: ast.expr) -> bool:
    """A path= that cannot be None (shutil.which then reads os.environ's PATH): a string, a
    non-None constant, os.defpath, `x or <such>`, `<such> if c else <such>` — a bare name or
    attribute may hold None, so it needs the fallback spelled out."""
    if isinstance(expr, ast.Constant):
        return expr.value is not None
    if isinstance(expr, ast.JoinedStr):
        return True
    if isinstance(expr, ast.Attribute):
        return (expr.attr == "defpath" and isinstance(expr.value, ast.Name)
                and expr.value.id == "os")
    if isinstance(expr, ast.BoolOp) and isinstance(expr.op, ast.Or):
        return _never_none(expr.values[-1])
    if isinstance(expr, ast.IfExp):
        return (_never_none(expr.body) or _guarded_by_none_test(expr.test, expr.body)) and (
            _never_none(expr.orelse) or _guarded_by_none_test(expr.test, expr.orelse, True))
    return False


def _guarded_by_none_test(test: ast.expr, branch: ast.expr, negated: bool = False) -> bool:
    """`x if x is not None else …` / `… if x is None else x`: the branch is x, known not None."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value is None):
        return False
    is_not = isinstance(test.ops[0], ast.IsNot)
    return (is_not != negated) and ast.dump(test.left) == ast.dump(branch)


@pytest.mark.slow
def test_no_module_but_settings_reads_the_environment() -> None:
    offenders = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = str(path.relative_to(SRC))
        reads = _env_reads(path)
        if reads and rel not in ALLOWED:
            offenders[rel] = reads
    assert offenders == {}, "read the variable in settings.py and pass the value down"
    assert _env_reads(SRC / "settings.py"), "the scan no longer sees settings.py's own reads"


def _raw_env_uses(path: Path) -> list[str]:
    """`x.env` read as a value (settings.env, ctx.settings.env, …): the raw environment a
    settings object used to carry. A call (psql.env(...)) is a function, not the field."""
    tree = ast.parse(path.read_text(), str(path))
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return [f"{n.lineno}: {ast.unparse(n)}" for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and n.attr == "env" and id(n) not in called]


def test_no_settings_object_carries_the_raw_environment() -> None:
    uses = {str(p.relative_to(SRC)): found for p in sorted(SRC.rglob("*.py"))
            if (found := _raw_env_uses(p))}
    assert uses == {}, "give the value a field in settings.py (or pass child_env on)"
    for cls in (Runtime, ClusterConfig, ProjectSettings, settings.MigratorSettings):
        assert not hasattr(cls, "env"), cls


def test_the_raw_env_scan_tells_a_field_from_a_function(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("f(settings.env)\nx = ctx.settings.env['A']\npsql.env(url=u)\n")
    assert _raw_env_uses(module) == ["1: settings.env", "2: ctx.settings.env"]


def test_the_scan_finds_every_form_of_reading(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os, shutil\nfrom os import environ\nos.environ.get('A')\n"
                      "os.getenv('B')\nshutil.which('psql')\nshutil.which('psql', path='/x')\n"
                      "shutil.which('psql', path=None)\nshutil.which('psql', path=p)\n"
                      "shutil.which('psql', path=s.path)\nshutil.which('a', 1, p or os.defpath)\n"
                      "shutil.which('a', path=os.defpath if p is None else p)\n"
                      "shutil.which('a', path=p if p is not None else os.defpath)\n"
                      "shutil.which('a', path=p if p is None else os.defpath)\n")
    assert sorted(_env_reads(module)) == [
        "13: shutil.which path= may be None", "2: from os import environ", "3: os.environ",
        "4: os.getenv", "5: shutil.which without path=", "7: shutil.which path= may be None",
        "8: shutil.which path= may be None", "9: shutil.which path= may be None"]


@pytest.fixture
def no_os_environ(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """os.environ replaced by an empty mapping for the test; returns the real environment
    (plus a marker only the env= argument carries), to pass as main(argv, env=...)."""
    full = {**os.environ, "DB_TOOL_TEST_MARK": "from-env-argument"}
    monkeypatch.setattr(os, "environ", {})
    return full


def _psql_recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A PG_BIN_DIR whose psql records its marker variable, then runs the real psql."""
    from db_tool import pgbin

    real = pgbin.find({"PATH": "/usr/bin:/bin"}).tool("psql")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "psql-calls.log"
    (bindir / "psql").write_text(
        f'#!/bin/sh\necho "mark=$DB_TOOL_TEST_MARK" >> "{log}"\nexec "{real}" "$@"\n')
    (bindir / "psql").chmod(0o755)
    return bindir, log


@pytest.mark.slow
def test_migrator_with_os_environ_swapped_out_uses_only_the_env_given_to_main(
    no_os_environ: dict[str, str], db_url: str, tmp_path: Path, cli: Cli
) -> None:
    """PG_BIN_DIR (which psql), DB_URL, MIGRATION_DIR, HECTIC_LOG and the child's environment
    all come from env=: with os.environ empty, none of it could come from anywhere else."""
    bindir, log = _psql_recorder(tmp_path)
    mdir = tmp_path / "migration"
    flat(mdir, "20240101000001-a", "CREATE TABLE swapped () INHERITS (hectic.created_at);\n")
    env = {**no_os_environ, "PG_BIN_DIR": str(bindir), "DB_URL": db_url,
           "MIGRATION_DIR": str(mdir)}
    rc, out, err = cli("migrator", ["migrate", "up", "all"], env)
    assert rc == 0, err
    assert "applied 20240101000001-a" in out
    calls = log.read_text().splitlines()
    assert calls and set(calls) == {"mark=from-env-argument"}


def test_hectic_log_and_color_come_from_the_env_given_to_main(
    no_os_environ: dict[str, str], tmp_path: Path, cli: Cli
) -> None:
    env = {**no_os_environ, "LOCAL_DIR": str(tmp_path), "FORCE_COLOR": "1"}
    rc, _, err = cli("database", ["cleanup"], env)
    assert rc == 0, err
    assert "\033[36m" in err and "nothing to clean up" in err  # FORCE_COLOR of env=: no tty
    rc, _, err = cli("database", ["cleanup"], {**env, "HECTIC_LOG": "error"})
    assert rc == 0 and err == ""  # the info line is below HECTIC_LOG=error


def test_postgres_init_with_os_environ_swapped_out_starts_the_cluster_of_env(
    no_os_environ: dict[str, str], cluster_env: dict[str, str], cli: Cli
) -> None:
    from tests.helpers import psql

    env = {**no_os_environ, **cluster_env}
    rc, out, err = cli("postgres-init", ["--print-env"], env)
    assert rc == 0, err
    assert f"port={cluster_env['PG_PORT']}" in out
    os.environ.update(cluster_env)  # helpers.psql runs the real psql with our environment
    try:
        assert psql(cluster_env, "select current_database()") == "testdb"
    finally:
        os.environ.clear()


# ----------------------------------------------------------------------------- import cost


def test_importing_settings_loads_no_dataclasses_typing_or_urllib() -> None:
    """settings, cli.common and cli.context are on every hot path (the postgres-init hook,
    postgres-cleanup, the migrator), project_settings on every `database` command: a fresh
    interpreter importing them, and building the Runtime every main() installs, loads none of
    the costly modules."""
    import subprocess
    import sys

    heavy = ["dataclasses", "inspect", "ast", "typing", "urllib", "urllib.parse", "pathlib",
             "re", "shlex", "contextlib"]
    code = ("import sys\nimport db_tool.settings, db_tool.cli.common, db_tool.cli.context\n"
            "import db_tool.project_settings\n"
            "db_tool.settings.use({'HOME': '/h', 'PATH': '/bin'})\n"
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n")
    run = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(SRC.parent)}, check=True)
    assert run.stdout.strip() == "[]", run.stdout + run.stderr


def test_settings_values_are_immutable_compared_by_fields_and_copied_with_replace(
    tmp_path: Path,
) -> None:
    import copy
    import pickle

    c = ClusterConfig(working_dir=tmp_path, port=6000, caller_env=(("A", "1"),))
    with pytest.raises(AttributeError, match="immutable"):
        c.port = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del c.port  # type: ignore[misc]
    other = c.replace(port=6001)
    assert (other.port, other.working_dir, other.caller_env, c.port) == (
        6001, tmp_path, (("A", "1"),), 6000)
    assert c.replace(caller_env=()) == c  # caller_env is not compared (nor shown)
    assert hash(c.replace(caller_env=())) == hash(c)
    assert c != other and c != "x"
    assert "port=6000" in repr(c) and "caller_env" not in repr(c)
    with pytest.raises(TypeError, match="no field nope"):
        c.replace(nope=1)
    for clone in (pickle.loads(pickle.dumps(c)), copy.copy(c), copy.deepcopy(c)):
        assert clone == c and clone.caller_env == c.caller_env
    m = settings.MigratorSettings.from_env({"DB_URL": "postgresql:///a", "PGHOST": "/s"})
    assert m.replace(migration_dir="/m").migration_dir == "/m"
    assert (m.db_url, dict(m.libpq)) == ("postgresql:///a", {"PGHOST": "/s"})


# ---------------------------------------------------------------------------------- Runtime


def test_runtime_reads_its_variables_once_from_the_given_env() -> None:
    rt = Runtime.from_env({"HECTIC_LOG": " Warn ", "NO_COLOR": "1", "PG_BIN_DIR": "/x/bin",
                           "PATH": "/p", "DB_TOOL_PROGRESS_INTERVAL": "2",
                           "XDG_CACHE_HOME": "/c", "OTHER": "kept"})
    assert (rt.log_level, rt.color, rt.pg_bin_dir, rt.path) == (
        settings.LOG_LEVELS["warn"], False, "/x/bin", "/p")
    assert rt.progress_interval() == 2.0
    assert rt.cache_locations.xdg_cache_home == "/c"
    assert rt.child_env["OTHER"] == "kept"
    with pytest.raises(TypeError):
        rt.child_env["OTHER"] = "changed"  # type: ignore[index]


def test_runtime_defaults_and_a_bad_progress_interval_fails_only_when_used() -> None:
    rt = Runtime.from_env({"HECTIC_LOG": "nonsense", "DB_TOOL_PROGRESS_INTERVAL": "soon"})
    assert (rt.log_level, rt.color, rt.pg_bin_dir) == (settings.LOG_LEVELS["info"], None, None)
    with pytest.raises(MissingError, match="DB_TOOL_PROGRESS_INTERVAL='soon'"):
        rt.progress_interval()


def test_use_installs_the_runtime_and_forget_goes_back_to_the_process_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HECTIC_LOG", "debug")
    assert settings.runtime().log_level == settings.LOG_LEVELS["debug"]
    installed = settings.use({"HECTIC_LOG": "error"})
    assert settings.runtime() is installed
    assert settings.runtime().log_level == settings.LOG_LEVELS["error"]
    settings.forget()
    assert settings.runtime().log_level == settings.LOG_LEVELS["debug"]


# ---------------------------------------------------------------------------- ClusterConfig


def test_cluster_config_defaults(tmp_path: Path) -> None:
    c = ClusterConfig.from_env({"PG_WORKING_DIR": str(tmp_path / "wd")})
    assert (c.working_dir, c.port, c.database, c.reuse, c.preload, c.preload_explicit) == (
        tmp_path / "wd", 5432, "testdb", False, "pg_cron", False)
    assert (c.url_var, c.no_tty, c.use_spare, c.keep_previous, c.pg_bin_dir) == (
        "PGURL", False, True, True, None)
    assert c.superuser == settings.login_name()


def test_cluster_config_reads_every_variable(tmp_path: Path) -> None:
    c = ClusterConfig.from_env({
        "LOCAL_DIR": str(tmp_path), "PG_PORT": "6543", "PG_DATABASE": "app", "PG_REUSE": "",
        "PG_LOG_PATH": "logs", "PG_CONF_FILE": str(tmp_path / "c.conf"),
        "PG_SHARED_PRELOAD_LIBRARIES": " a, b ", "PG_DISABLE_LOGGING": "1",
        "PG_URL_VAR": "APP_URL", "NO_TTY": "1", "PG_OS_USER": "pgrunner",
        "DB_TOOL_NO_SPARE": "1", "DB_TOOL_KEEP_PREVIOUS": "no", "PG_BIN_DIR": "/pg/bin",
        "HOME": str(tmp_path / "home"),
    })
    assert c.working_dir == tmp_path / "focus" / "postgresql"  # LOCAL_DIR's default
    assert (c.port, c.database, c.reuse) == (6543, "app", True)  # PG_REUSE: set is enough
    assert c.log_path == Path("logs").absolute()
    assert (c.preload, c.preload_list(), c.preload_explicit) == ("a, b", ["a", "b"], True)
    assert (c.disable_logging, c.url_var, c.no_tty, c.os_user) == (True, "APP_URL", True,
                                                                   "pgrunner")
    assert (c.use_spare, c.keep_previous, c.pg_bin_dir) == (False, False, "/pg/bin")
    assert tmp_path / "home" in c.homes


@pytest.mark.parametrize("env, code, words", [
    ({}, 1, "PG_WORKING_DIR or LOCAL_DIR is required"),
    ({"PG_WORKING_DIR": "/w", "PG_PORT": "0"}, 3, "PG_PORT='0' is not a port number"),
    ({"PG_WORKING_DIR": "/w", "PG_PORT": "x"}, 3, "PG_PORT='x' is not a port number"),
    ({"PG_WORKING_DIR": "/w\n"}, 3, "contains a line break"),
    ({"PG_WORKING_DIR": "/w", "PG_DATABASE": "a\rb"}, 3, "contains a line break"),
    ({"PG_WORKING_DIR": "/w", "PG_URL_VAR": "1X"}, 3, "not a valid shell variable name"),
    ({"PG_WORKING_DIR": "/w", "PG_URL_VAR": "PATH"}, 3, "would overwrite a variable"),
    ({"PG_WORKING_DIR": "/w", "PG_URL_VAR": "LD_PRELOAD"}, 3, "would overwrite a variable"),
])
def test_cluster_config_refusals(env: dict[str, str], code: int, words: str) -> None:
    with pytest.raises(Error) as refused:
        ClusterConfig.from_env(env)
    assert int(refused.value.exit_code) == code and words in refused.value.message


def test_cluster_config_overrides_win(tmp_path: Path) -> None:
    c = ClusterConfig.from_env({"PG_WORKING_DIR": "/ignored"}, working_dir=tmp_path,
                               ephemeral=True, port=7000)
    assert (c.working_dir, c.ephemeral, c.port) == (tmp_path, True, 7000)


# -------------------------------------------------------------------------- ProjectSettings


def test_project_settings_defaults_follow_the_seed_readme(tmp_path: Path) -> None:
    local = tmp_path / "proj"
    s = ProjectSettings.from_env({"LOCAL_DIR": str(local)})
    assert s.database_dir == local / "db"
    assert s.migration_dir == local / "db" / "migration"
    assert s.database_source == local / "db" / "src"
    assert s.patch_file == local / "test-data.sql"
    assert s.working_dir == local / "focus" / "postgresql"
    assert (s.hydrate_log, s.patch_log, s.url, s.environment) == (None, None, None, None)

    logs = tmp_path / "logs"
    s = ProjectSettings.from_env({"LOCAL_DIR": str(local), "DATABASE_DIR": str(tmp_path / "d"),
                                  "PROFILE_DIR": str(tmp_path / "prof"),
                                  "PG_LOG_PATH": str(logs), "ENVIRONMENT": "staging"})
    assert s.migration_dir == tmp_path / "d" / "migration"  # follows DATABASE_DIR
    assert s.database_source == tmp_path / "d" / "src"
    assert s.patch_file == tmp_path / "prof" / "test-data.sql"
    assert s.hydrate_log == logs / "hydrate.stdout.log"
    assert s.patch_log == logs / "patch.stdout.log"
    assert s.environment == "staging"

    s = ProjectSettings.from_env({"LOCAL_DIR": str(local), "PG_LOG_PATH": str(logs),
                                  "HYDRATE_LOG": str(tmp_path / "h.log"),
                                  "PATCH_LOG": str(tmp_path / "p.log"),
                                  "MIGRATION_DIR": str(tmp_path / "m"),
                                  "DATABASE_SOURCE": str(tmp_path / "s"),
                                  "PG_WORKING_DIR": str(tmp_path / "wd")})
    assert (s.hydrate_log, s.patch_log) == (tmp_path / "h.log", tmp_path / "p.log")
    assert (s.migration_dir, s.database_source) == (tmp_path / "m", tmp_path / "s")
    assert s.working_dir == tmp_path / "wd"


def test_project_settings_url_precedence_and_its_source(tmp_path: Path) -> None:
    env = {"LOCAL_DIR": str(tmp_path), "PGURL": "postgresql:///a", "DB_URL": "postgresql:///b"}
    assert (ProjectSettings.from_env(env).url, ProjectSettings.from_env(env).url_source) == (
        "postgresql:///a", "PGURL")
    s = ProjectSettings.from_env(env, url="postgresql:///c")
    assert (s.url, s.url_source) == ("postgresql:///c", "--url")
    s = ProjectSettings.from_env({"LOCAL_DIR": str(tmp_path), "DB_URL": "postgresql:///b"})
    assert (s.url, s.url_source) == ("postgresql:///b", "DB_URL")


def test_project_settings_without_local_dir_use_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = ProjectSettings.from_env({})
    assert (s.local_dir, s.local_dir_is_cwd) == (tmp_path, True)
    assert s.hydrate_entrypoint == tmp_path / "db" / "src" / "entrypoint.sql"
    s = ProjectSettings.from_env({"HYDRATE_ENTRYPOINT": "/abs/e.sql"})
    assert s.hydrate_entrypoint == Path("/abs/e.sql")


class _Recorder(dict[str, str]):
    """A dict that notes every variable looked up in it."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)


def test_project_settings_keep_every_variable_their_readers_look_up(tmp_path: Path) -> None:
    """ProjectSettings keeps the cluster's, pull_staging's and the dotenv's variables, not the
    environment: each reader must find all it asks for among the names kept."""
    from db_tool.commands.hydrate import find_dotenv
    from db_tool.commands.staging import StagingConfig

    asked: set[str] = set()
    for env in ({"LOCAL_DIR": str(tmp_path)},
                {name: "1" for name in settings.CLUSTER_VARIABLES} | {"PG_WORKING_DIR": "/w",
                                                                     "PG_URL_VAR": "X"}):
        rec = _Recorder(env)
        ClusterConfig.from_env(rec, caller_env=())
        asked |= rec.asked
    assert asked <= set(settings.CLUSTER_VARIABLES)
    rec = _Recorder({name: "x" for name in project_settings.STAGING_VARIABLES})
    StagingConfig.from_env(rec)
    assert rec.asked == set(project_settings.STAGING_VARIABLES)
    rec = _Recorder({"LOCAL_DIR": str(tmp_path), "ENVIRONMENT": "dev"})
    find_dotenv(rec)
    assert rec.asked == set(project_settings.DOTENV_VARIABLES)


def test_project_settings_build_the_cluster_config_of_their_environment(tmp_path: Path) -> None:
    env = {"LOCAL_DIR": str(tmp_path), "PG_PORT": "6001", "PG_DATABASE": "app", "OTHER": "o",
           "STAGING_SSH_HOST": "h", "HECTIC_DOTENV_CONTENT": "A=1", "PAGER": "more",
           "EDITOR": "ed", "DB_URL": "postgresql:///x", "XDG_CACHE_HOME": "/c"}
    s = ProjectSettings.from_env(env)
    config = s.cluster_config()
    assert config == ClusterConfig.from_env(env)
    assert dict(config.caller_env) == env == dict(s.child_env)  # children get all of it
    assert (config.port, config.database, config.working_dir) == (
        6001, "app", tmp_path / "focus" / "postgresql")
    assert dict(s.staging_vars) == {"STAGING_SSH_HOST": "h"}
    assert dict(s.dotenv_vars) == {"HECTIC_DOTENV_CONTENT": "A=1", "LOCAL_DIR": str(tmp_path)}
    assert (s.pager, s.editor, s.migrator.db_url) == ("more", "ed", "postgresql:///x")
    assert s.cache_locations.xdg_cache_home == "/c"
    assert "OTHER" not in s.cluster_vars


def test_project_settings_check_the_cluster_variables_only_when_a_cluster_is_needed(
    tmp_path: Path,
) -> None:
    s = ProjectSettings.from_env({"LOCAL_DIR": str(tmp_path), "PG_PORT": "x"})
    with pytest.raises(MissingError, match="PG_PORT='x' is not a port number"):
        s.cluster_config()


def test_require_url_names_every_place_it_looked(tmp_path: Path) -> None:
    s = ProjectSettings.from_env({"LOCAL_DIR": str(tmp_path)})
    with pytest.raises(MissingError) as missing:
        s.require_url()
    assert "tried --url, PGURL, DB_URL" in missing.value.message
    assert str(tmp_path / "focus" / "postgresql") in missing.value.message
