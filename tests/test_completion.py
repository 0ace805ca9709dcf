"""`database completion bash|zsh|fish`: the scripts load in their shells and complete what the
commands' grammar (db_tool.cli.spec) says, through the real launchers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from db_tool.cli import completion
from db_tool.cli.spec import DATABASE, MIGRATOR
from tests.helpers import base_env, run_cmd, script


def _script(shell: str, tmp_path: Path) -> Path:
    r = run_cmd([script("database"), "completion", shell], base_env())
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    path = tmp_path / f"db-tool.{shell}"
    path.write_text(r.stdout)
    return path


def _bash_complete(path: Path, words: list[str]) -> list[str]:
    """COMPREPLY for the command line `words` (the last one is being completed)."""
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    code = (f"source {path}; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; "
            "_db_tool_complete; printf '%s\\n' \"${COMPREPLY[@]}\"")
    r = subprocess.run(["bash", "--norc", "-c", code], capture_output=True, text=True,
                       timeout=30, check=False)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    return [line for line in r.stdout.splitlines() if line]


def test_bash_script_registers_all_commands(tmp_path: Path) -> None:
    path = _script("bash", tmp_path)
    r = subprocess.run(["bash", "--norc", "-c", f"source {path}; complete -p"],
                       capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 0, r.stderr
    for name in completion.NAMES:
        assert f"-F _db_tool_complete {name}" in r.stdout or \
            f"_db_tool_complete {name}\n" in r.stdout + "\n", (name, r.stdout)


def test_bash_completes_subcommands_options_and_words(tmp_path: Path) -> None:
    path = _script("bash", tmp_path)
    assert set(_bash_complete(path, ["database", ""])) >= set(DATABASE.subs)
    assert _bash_complete(path, ["database", "dep"]) == ["deploy"]
    assert _bash_complete(path, ["db-tool", "sta"]) == ["status"]  # the alias
    assert set(_bash_complete(path, ["database", "deploy", "--no-"])) == {
        "--no-patch", "--no-hydrate", "--no-pager"}  # the global --no-pager too
    assert _bash_complete(path, ["database", "-u", "URL", "branch", "cr"]) == ["create"]
    assert _bash_complete(path, ["database", "log", "l"]) == ["list"]
    assert set(_bash_complete(path, ["database", "completion", ""])) == {
        "bash", "zsh", "fish", "--url", "--inherits", "--quiet", "--no-pager", "-u", "-i",
        "-q", "--help"}
    # after an option that takes a value: nothing of ours (the shell completes files)
    assert _bash_complete(path, ["database", "diff", "--output", ""]) == []
    # `database migrator` completes as migrator
    assert set(_bash_complete(path, ["database", "migrator", "migrate", ""])) >= {
        "up", "down", "to", "--force"}
    assert _bash_complete(path, ["migrator", "-d", "x", "st"]) == ["status"]
    assert _bash_complete(path, ["db-ops", "secrets", ""]) == ["load", "--help"]
    assert "--print-env" in _bash_complete(path, ["postgres-init", "--"])
    assert _bash_complete(path, ["postgres-cleanup", "--v"]) == ["--version"]


def test_completion_offers_exactly_the_grammar() -> None:
    """Generated from cli/spec: every subcommand and option is offered at its level."""
    found = {level.path: level for level in completion.levels()}
    for name, sub in DATABASE.subs.items():
        if sub.passthrough is None:
            level = found[f"database {name}"]
            for opt in [*sub.opts, *DATABASE.opts]:
                assert set(opt.names) <= set(level.words)
    for name, sub in MIGRATOR.subs.items():
        assert {n for o in sub.opts for n in o.names} <= set(found[f"migrator {name}"].words)


@pytest.mark.skipif(shutil.which("zsh") is None,
                    reason="zsh is not installed (./dev setup installs it)")
def test_zsh_script_loads_and_completes(tmp_path: Path) -> None:
    path = _script("zsh", tmp_path)
    # compadd is a builtin of zsh's completion widgets: outside one, print what it was given.
    code = (f"autoload -Uz compinit && compinit -u -d {tmp_path}/zcompdump; source {path}; "
            "print -r -- ${_comps[database]} ${_comps[migrator]} ${_comps[postgres-init]}; "
            "compadd() { shift; print -l -- ${(P)1} }; "
            "words=(database branch ''); CURRENT=3; _db_tool")
    r = subprocess.run(["zsh", "-f", "-c", code], capture_output=True, text=True, timeout=30,
                       check=False)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "_db_tool _db_tool _db_tool"
    assert {"create", "list", "switch", "drop", "reset", "current"} <= set(lines[1:])


@pytest.mark.skipif(shutil.which("fish") is None,
                    reason="fish is not installed (./dev setup installs it)")
def test_fish_script_is_valid_and_completes(tmp_path: Path) -> None:
    path = _script("fish", tmp_path)
    r = subprocess.run(["fish", "--no-config", "-n", str(path)], capture_output=True,
                       text=True, timeout=30, check=False)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    r = subprocess.run(["fish", "--no-config", "-c",
                        f"source {path}; complete -C 'database bra'; "
                        "__db_tool_words migrator migrate"],
                       capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 0, r.stderr
    lines = [line.split("\t")[0] for line in r.stdout.splitlines()]
    assert "branch" in lines
    assert {"up", "down", "to"} <= set(lines)


def test_unknown_shell_is_exit_9_and_none_is_exit_3() -> None:
    r = run_cmd([script("database"), "completion", "tcsh"], base_env())
    assert r.returncode == 9 and "bash, zsh or fish" in r.stderr
    r = run_cmd([script("database"), "completion"], base_env())
    assert r.returncode == 3 and "database completion bash|zsh|fish" in r.stderr
