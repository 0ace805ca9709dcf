"""The one argument parser of the five commands (db_tool.cli.parser over db_tool.cli.spec),
through the real launchers: exit 9 for an unknown option or word, 3 for a missing value, the
`--opt=value` / `--opt value` / `-oVALUE` forms, combined short flags, `--`, a help with a
usage line and examples for every command and subcommand, --version on all five, and the
no-argument rule (help on stdout; the original's exit code)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from db_tool import __version__
from db_tool.cli import db_branch, db_ops, postgres_init
from db_tool.cli.database import HELP as DATABASE_HELP
from db_tool.cli.database import sub_help
from db_tool.cli.parser import Command, Opt, parse, scan
from db_tool.cli.spec import COMMANDS, DATABASE, DB_OPS, MIGRATOR, POSTGRES_INIT
from db_tool.errors import ExitCode, MissingError, UsageError
from tests.helpers import BIN, run_cmd, script


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No project variable of the caller; LOCAL_DIR an empty dir that must stay empty."""
    env = {k: os.environ[k] for k in ("HOME", "LANG", "PG_BIN_DIR", "XDG_CACHE_HOME")
           if k in os.environ}
    env["PATH"] = f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    env["LOCAL_DIR"] = str(tmp_path)
    env.update(extra)
    return env


# ------------------------------------------------------------------ unknown 9, missing 3

@pytest.mark.parametrize(("cmd", "argv", "named"), [
    ("database", ["status", "--wat"], "--wat"),
    ("database", ["--wat", "status"], "--wat"),
    ("database", ["deploy", "-PH", "--wat"], "--wat"),  # -PH itself parsed fine
    ("database", ["backup", "extra"], "extra"),
    ("database", ["branch", "list", "--wat"], "--wat"),
    ("migrator", ["list", "--wat"], "--wat"),
    ("db-ops", ["--wat"], "--wat"),
    ("db-ops", ["secrets", "load", "--wat"], "--wat"),
    ("postgres-init", ["--wat"], "--wat"),
    ("postgres-cleanup", ["--wat"], "--wat"),
    ("postgres-cleanup", ["extra"], "extra"),
])
def test_unknown_option_or_word_exits_9_naming_it(cmd: str, argv: list[str], named: str,
                                                  tmp_path: Path) -> None:
    r = run_cmd([script(cmd), *argv], clean_env(tmp_path))
    assert r.returncode == ExitCode.UNKNOWN, r.stderr
    assert r.stdout == ""
    assert r.stderr.startswith(f"{cmd}: error: ") and named in r.stderr
    assert len(r.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("cmd", "argv"), [
    ("database", ["-u"]),
    ("database", ["status", "--url"]),
    ("database", ["-i"]),
    ("database", ["diff", "--tables"]),
    ("database", ["normalize-backup", "-o"]),
    ("database", ["branch", "create", "x", "--from"]),
    ("database", ["cache", "prune", "--older-than"]),
    ("migrator", ["-u"]),
    ("migrator", ["create", "--name"]),
    ("db-ops", ["--url"]),
    ("db-ops", ["secrets", "load", "-f"]),
])
def test_missing_option_value_exits_3_naming_the_option(cmd: str, argv: list[str],
                                                        tmp_path: Path) -> None:
    r = run_cmd([script(cmd), *argv], clean_env(tmp_path))
    assert r.returncode == ExitCode.MISSING, r.stderr
    assert r.stderr.startswith(f"{cmd}: error: ") and argv[-1] in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_flag_given_a_value_exits_9(tmp_path: Path) -> None:
    r = run_cmd([script("database"), "status", "--json=yes"], clean_env(tmp_path))
    assert r.returncode == ExitCode.UNKNOWN
    assert "--json takes no value" in r.stderr


# ------------------------------------------------------------------ value forms, --, -PH

@pytest.mark.slow
@pytest.mark.parametrize("form", [["--url", "{u}"], ["--url={u}"], ["-u", "{u}"], ["-u{u}"],
                                  ["-qu", "{u}"]])
def test_every_value_form_reaches_the_command(form: list[str], db_url: str,
                                              tmp_path: Path) -> None:
    args = [a.replace("{u}", db_url) for a in form]
    r = run_cmd([script("database"), *args, "psql", "-tAc", "select 40 + 2"],
                clean_env(tmp_path))
    assert (r.returncode, r.stdout) == (0, "42\n"), r.stderr


def test_options_after_the_subcommand_and_their_value_forms(tmp_path: Path) -> None:
    env = clean_env(tmp_path, XDG_CACHE_HOME=str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    for argv in (["cache", "prune", "--older-than", "5", "--dry-run"],
                 ["cache", "--older-than=5", "prune", "-n"]):
        r = run_cmd([script("database"), *argv], env)
        assert r.returncode == 0, r.stderr
        assert "would remove 0 entries" in r.stderr


def test_combined_short_flags_are_each_flag() -> None:
    opts, pos = parse(DATABASE.sub("check"), ["-PHm"])
    assert (opts["no_patch"], opts["no_hydrate"], opts["mock"], pos) == (True, True, True, [])
    opts, _ = parse(DATABASE.sub("deploy"), ["-Pc", "--reuse"])
    assert opts["no_patch"] and opts["cleanup"] and opts["reuse"] and not opts["no_hydrate"]
    # a combined letter that is no option is named, not its neighbour
    with pytest.raises(UsageError, match="argument -Z does not exist"):
        parse(DATABASE.sub("deploy"), ["-PZ"])
    with pytest.raises(UsageError, match="-P takes no value"):
        parse(DATABASE.sub("deploy"), ["-P=x"])


@pytest.mark.parametrize(("sub", "argv"), [
    ("migrate", ["-u", "postgresql:///x", "-d", "m", "up", "all"]),
    ("migrate", ["-u", "u1", "up", "-u", "u2", "-f"]),
    ("migrate", ["-v", "a=1", "--set", "b=2", "up"]),
    ("migrate", ["--db-url", "", "up"]),
    ("status", ["--migration-dir", "a dir", "--json", "--exit-code"]),
])
def test_values_as_the_next_word_parse_as_argparse_does(sub: str, argv: list[str]) -> None:
    from db_tool.cli import parser

    opts = [*MIGRATOR.opts, *MIGRATOR.sub(sub).opts]
    fast = parser._fast(opts, argv)
    assert fast is not None  # answered without importing argparse
    values, positional, unknown = parser._argparse(opts, argv)
    assert (fast[0], fast[1], unknown) == (values, positional, [])


@pytest.mark.parametrize("argv", [["-u"], ["-u", "-f"], ["-u=x"], ["-ux"], ["--db-url=x"]])
def test_values_that_need_argparse_go_to_it(argv: list[str]) -> None:
    from db_tool.cli import parser

    assert parser._fast([*MIGRATOR.opts, *MIGRATOR.sub("migrate").opts], argv) is None


def test_double_dash_ends_options(tmp_path: Path) -> None:
    r = run_cmd([script("database"), "bundle", "--", "path"], clean_env(tmp_path))
    assert r.returncode == 0 and r.stdout.strip().endswith(".sql"), r.stderr
    r = run_cmd([script("database"), "deploy", "-P", "--", "-H"], clean_env(tmp_path))
    assert r.returncode == ExitCode.UNKNOWN and "'-H'" in r.stderr  # a word now, not a flag
    _, pos = parse(DATABASE.sub("log"), ["--", "-f"])
    assert pos == ["-f"]


def test_parser_errors_are_our_exit_codes() -> None:
    cmd = Command("x", max_positional=1)
    with pytest.raises(UsageError):
        parse(cmd, ["a", "b"])
    with pytest.raises(MissingError):
        parse(DATABASE.sub("diff"), ["--output"])
    with pytest.raises(UsageError, match="--no-cron takes no value"):
        parse(DATABASE.sub("diff"), ["--no-cron=1"])
    with pytest.raises(UsageError, match="--no does not exist"):  # no abbreviations
        parse(DATABASE.sub("diff"), ["--no"])


# ------------------------------------------------------------------ help

def _database_paths() -> list[list[str]]:
    paths: list[list[str]] = []
    for name, sub in DATABASE.subs.items():
        paths.append([name])
        paths += [[name, action] for action in sub.subs]
    return paths


@pytest.mark.parametrize("path", _database_paths(), ids=" ".join)
def test_every_database_subcommand_has_its_own_help(path: list[str], tmp_path: Path) -> None:
    argv = [script("database"), *path, "--help"]
    r = run_cmd(argv, clean_env(tmp_path))
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    first = r.stdout.splitlines()[0]
    owner = "migrator" if path[0] == "migrator" else "postgres-init" if path[0] == \
        "postgres-init" else "database"
    assert first.startswith(f"usage: {owner}"), first
    if owner == "database":
        assert path[0] in first
    examples = r.stdout.split("\nExamples:\n", 1)
    assert len(examples) == 2, r.stdout
    assert re.search(rf"^  .*\b{owner}\b", examples[1], re.M), examples[1]
    assert r.stdout != DATABASE_HELP
    assert list(tmp_path.iterdir()) == []
    if len(path) == 1 and path[0] not in ("migrator", "postgres-init", "psql"):
        r2 = run_cmd([script("database"), "help", path[0]], clean_env(tmp_path))
        assert (r2.returncode, r2.stdout) == (0, r.stdout)


@pytest.mark.parametrize("argv", [
    ["migrator", "--help"], ["migrator", "migrate", "--help"], ["migrator", "init", "--help"],
    ["migrator", "create", "--help"], ["migrator", "list", "--help"],
    ["migrator", "status", "--help"], ["migrator", "fetch", "--help"],
    ["db-ops", "--help"], ["db-ops", "secrets", "--help"], ["db-ops", "secrets", "load", "-h"],
    ["postgres-init", "--help"], ["postgres-cleanup", "-h"], ["database", "-h"],
], ids=" ".join)
def test_help_of_the_other_commands_has_usage_and_examples(argv: list[str],
                                                           tmp_path: Path) -> None:
    r = run_cmd([script(argv[0]), *argv[1:]], clean_env(tmp_path))
    assert (r.returncode, r.stderr) == (0, "")
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"usage: {argv[0]}")
    if len(argv) > 2 and argv[0] == "migrator":
        usage = r.stdout.split("\n\n", 1)[0]
        assert argv[1] in usage  # the subcommand's own help, not the global one
    assert "\nExamples:\n" in r.stdout
    after = r.stdout.split("\nExamples:\n", 1)[1]
    assert 1 <= len([e for e in after.splitlines() if e.startswith("  ")]) <= 3


def test_every_option_of_the_grammar_is_in_its_help() -> None:
    """The help texts are prose; this keeps them from drifting off the grammar."""
    def check(cmd: Command, text: str) -> None:
        for opt in cmd.opts:
            for name in opt.names:
                assert name in text, f"{cmd.path}: {name} missing from its help"

    check(DATABASE, DATABASE_HELP)
    for name, sub in DATABASE.subs.items():
        if sub.passthrough is None:
            check(sub, sub_help(name))
        for action in sub.subs.values():
            check(action, db_branch.HELP)
    check(DB_OPS, db_ops.HELP)
    check(DB_OPS.sub("secrets", "load"), db_ops.HELP_SECRETS_LOAD)
    check(POSTGRES_INIT, postgres_init.HELP)
    from db_tool.cli import migrator

    check(MIGRATOR, migrator.HELP)
    for sub in MIGRATOR.subs.values():
        check(sub, migrator.HELP)


# ------------------------------------------------------------------ version, no arguments

@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_version_on_all_five(cmd: str, tmp_path: Path) -> None:
    r = run_cmd([script(cmd), "--version"], clean_env(tmp_path))
    assert (r.returncode, r.stderr) == (0, "")
    assert f"db-tool {__version__}" in r.stdout and r.stdout.startswith(cmd)
    assert len(r.stdout.splitlines()) == 1


def test_migrator_short_version_keeps_the_original_line(tmp_path: Path) -> None:
    r = run_cmd([script("migrator"), "-V"], clean_env(tmp_path))
    assert r.returncode == 0 and r.stdout.startswith("migrator version 0.0.1 ")


@pytest.mark.parametrize(("argv", "code"), [
    (["database"], 1), (["database", "branch"], 1), (["database", "bundle"], 1),
    (["migrator"], 0), (["db-ops"], 0), (["db-ops", "secrets"], 0),
])
def test_no_arguments_is_the_help_on_stdout_with_the_originals_exit_code(
        argv: list[str], code: int, tmp_path: Path) -> None:
    r = run_cmd([script(argv[0]), *argv[1:]], clean_env(tmp_path))
    assert (r.returncode, r.stderr) == (code, "")
    assert r.stdout.startswith("usage: ")
    assert list(tmp_path.iterdir()) == []


def test_hooks_without_arguments_do_their_work_not_the_help(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    del env["LOCAL_DIR"]
    r = run_cmd([script("postgres-cleanup")], env)
    assert (r.returncode, r.stdout) == (0, "")
    assert r.stderr.startswith("postgres-cleanup: ") and "nothing to stop" in r.stderr
    r = run_cmd([script("postgres-init")], env)
    assert r.returncode == 1 and r.stdout == ""  # it tried to start: no working dir
    assert "usage:" not in r.stderr


@pytest.mark.parametrize("cmd", ["database", "db-tool"])
def test_messages_are_named_after_the_command_typed(cmd: str, tmp_path: Path) -> None:
    r = run_cmd([script(cmd), "stauts"], clean_env(tmp_path))
    assert r.returncode == 1 and r.stderr.startswith(f"{cmd}: error: ")
    r = run_cmd([script(cmd), "cleanup"], clean_env(tmp_path))  # an info line, not db-tool:
    assert r.returncode == 0 and r.stderr.startswith(f"{cmd}: "), r.stderr
    r = run_cmd([script(cmd), "-u"], clean_env(tmp_path))
    assert (r.returncode, r.stderr) == (3, f"{cmd}: error: -u needs a value; see database "
                                           "--help\n")


def test_every_level_of_the_grammar_builds_a_parser() -> None:
    """argparse refuses two options with one spelling: no level (with the globals it is
    parsed with) may have such a clash; an unknown option is then reported, not a bug."""
    def levels(cmd: Command, globals_: list[Opt]) -> list[tuple[Command, list[Opt]]]:
        found = [(cmd, globals_)]
        for sub in cmd.subs.values():
            found += levels(sub, globals_)
        return found

    cases = levels(DATABASE, list(DATABASE.opts)) + levels(MIGRATOR, list(MIGRATOR.opts))
    cases += [(c, []) for c in (DB_OPS, DB_OPS.sub("secrets", "load"), POSTGRES_INIT)]
    for cmd, globals_ in cases:
        extra = [] if cmd is DATABASE or cmd is MIGRATOR else globals_
        _, _, unknown = scan(cmd, ["--zz=1"], extra_opts=extra)
        assert unknown == ["--zz=1"], cmd.path
