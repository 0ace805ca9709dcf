"""db-ops: argument handling, dotenv resolution and a real load (in-process and installed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from db_tool import bundle
from db_tool.cli import db_ops
from db_tool.errors import Error
from tests.conftest import Cli

if TYPE_CHECKING:
    from tests.conftest import PG

BAD_URL = "postgresql://nobody@/nowhere?host=/nonexistent-socket-dir&port=1"
# What db-ops says on stderr before it connects (the original's `log notice`).
NOTICE = "db-ops: apply hectic bundle and load secrets\n"


def secrets_of(pg: PG, url: str) -> str:
    return pg.psql("SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM hectic.secret",
                   url)


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize("argv", [["--help"], ["-h"], [], ["-u", "x", "--help"]])
def test_global_help_exits_0(argv: list[str], cli: Cli) -> None:
    code, out, err = cli("db-ops", argv)
    assert (code, err) == (0, "")
    for word in ("secrets load", "--url", "PGURL", "DB_URL", "HECTIC_DOTENV_CONTENT",
                 "HECTIC_DOTENV_FILE", "LOCAL_DIR", "ENVIRONMENT"):
        assert word in out
    assert out.startswith(db_ops.HELP.rstrip() + "\n\nExamples:\n  db-ops ")


# As the original: `db-ops secrets` alone prints the help of `secrets load` and exits 0.
@pytest.mark.parametrize("argv", [["secrets"], ["secrets", "-h"], ["secrets", "--help"],
                                  ["secrets", "load", "--help"],
                                  ["secrets", "load", "-f", "x.env", "-h"]])
def test_secrets_load_help_exits_0(argv: list[str], cli: Cli) -> None:
    code, out, err = cli("db-ops", argv)
    assert (code, err) == (0, "")
    assert out.startswith(db_ops.HELP_SECRETS_LOAD.rstrip() + "\n\nExamples:\n  db-ops ")
    for word in ("--dotenv-file", "HECTIC_DOTENV_CONTENT", "$LOCAL_DIR/.env.$ENVIRONMENT",
                 "exit codes"):
        assert word in out


@pytest.mark.parametrize(("argv", "needle"), [
    (["--wat"], "argument --wat does not exist"),
    (["--bogus=1", "secrets", "load"], "argument --bogus=1 does not exist"),
    (["-f", "x.env", "secrets", "load"], "argument -f does not exist"),
    (["vault", "load"], "subcommand vault does not exist"),
    (["secrets", "dump"], "secrets subcommand dump does not exist"),
    (["secrets", "-u", "x", "load"], "secrets subcommand -u does not exist"),
    (["secrets", "load", "--wat"], "secrets load argument --wat does not exist"),
    (["secrets", "load", "extra"], "secrets load subcommand extra does not exist"),
])
def test_unknown_arguments_exit_9(
    argv: list[str], needle: str, cli: Cli
) -> None:
    code, out, err = cli("db-ops", argv)
    assert code == 9
    assert out == ""
    assert err.startswith(f"db-ops: error: {needle}")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("argv", [["-u"], ["--url"], ["secrets", "load", "-u"],
                                  ["secrets", "load", "--dotenv-file"],
                                  ["secrets", "load", "-f"]])
def test_missing_option_value_exits_3(argv: list[str], cli: Cli) -> None:
    code, out, err = cli("db-ops", argv)
    assert (code, out) == (3, "")
    assert err == f"db-ops: error: missing value for {argv[-1]}\n"


def test_url_is_required(cli: Cli, monkeypatch: pytest.MonkeyPatch,
                         ) -> None:
    monkeypatch.setenv("HECTIC_DOTENV_CONTENT", "A=1")
    code, _, err = cli("db-ops", ["secrets", "load"])
    assert code == 3
    assert err.splitlines() == ["db-ops: error: PGURL or DB_URL is required; export one or "
                                "pass --url"]


def test_dotenv_source_is_required(cli: Cli,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGURL", BAD_URL)
    code, _, err = cli("db-ops", ["secrets", "load"])
    assert code == 3
    assert err.startswith("db-ops: error: dotenv source is required (HECTIC_DOTENV_CONTENT, "
                          "readable dotenv file, or $LOCAL_DIR/.env.$ENVIRONMENT)")
    # LOCAL_DIR without ENVIRONMENT (or the file missing) is still no source.
    monkeypatch.setenv("LOCAL_DIR", "/nonexistent")
    monkeypatch.setenv("ENVIRONMENT", "prod")
    assert cli("db-ops", ["secrets", "load"])[0] == 3


@pytest.mark.parametrize("how", ["option", "long option", "env"])
@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_named_dotenv_file_must_be_readable(
    how: str, kind: str, tmp_path: Path, cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (root reads any file whatever its mode, so "unreadable" is exercised with a directory)
    path = tmp_path / "missing.env" if kind == "missing" else tmp_path
    # Even a readable fallback does not rescue a bad named file.
    (tmp_path / ".env.dev").write_text("A=1\n")
    monkeypatch.setenv("LOCAL_DIR", str(tmp_path))
    monkeypatch.setenv("ENVIRONMENT", "dev")
    monkeypatch.setenv("PGURL", BAD_URL)
    argv = ["secrets", "load"]
    if how == "option":
        argv += ["-f", str(path)]
    elif how == "long option":
        argv += [f"--dotenv-file={path}"]
    else:
        monkeypatch.setenv("HECTIC_DOTENV_FILE", str(path))
    code, _, err = cli("db-ops", argv)
    assert code == 3
    assert err.splitlines() == [f"db-ops: error: dotenv file is not readable: {path}"]


def test_database_failure_is_one_error_line_and_exit_1(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HECTIC_DOTENV_CONTENT", "A=1")
    code, out, err = cli("db-ops", ["--url", BAD_URL, "secrets", "load"])
    assert code == 1
    assert out == ""
    assert err.startswith(
        f"{NOTICE}db-ops: error: applying the hectic bundle failed: connection to ")


# ---------------------------------------------------------------- resolve_dotenv (no database)


def test_resolve_dotenv_order(tmp_path: Path) -> None:
    named = tmp_path / "named.env"
    named.write_text("N=1\n")
    explicit = tmp_path / "explicit.env"
    explicit.write_text("E=1\n")
    (tmp_path / ".env.dev").write_text("F=1\n")
    env = {"HECTIC_DOTENV_CONTENT": "C=1", "HECTIC_DOTENV_FILE": str(named),
           "LOCAL_DIR": str(tmp_path), "ENVIRONMENT": "dev"}
    assert bundle.resolve_dotenv(env, str(explicit)) == ("C=1", "HECTIC_DOTENV_CONTENT")
    del env["HECTIC_DOTENV_CONTENT"]
    assert bundle.resolve_dotenv(env, str(explicit)) == ("E=1\n", str(explicit))
    assert bundle.resolve_dotenv(env) == ("N=1\n", f"HECTIC_DOTENV_FILE={named}")
    del env["HECTIC_DOTENV_FILE"]
    assert bundle.resolve_dotenv(env) == ("F=1\n", str(tmp_path / ".env.dev"))
    assert bundle.resolve_dotenv({**env, "ENVIRONMENT": "prod"}) is None
    assert bundle.resolve_dotenv({}) is None
    # An empty variable counts as unset.
    assert bundle.resolve_dotenv({**env, "HECTIC_DOTENV_CONTENT": "",
                                  "HECTIC_DOTENV_FILE": ""}) == ("F=1\n",
                                                                 str(tmp_path / ".env.dev"))


def test_resolve_dotenv_lenient_mode_for_hydrate(tmp_path: Path) -> None:
    (tmp_path / ".env.dev").write_text("F=1\n")
    env = {"HECTIC_DOTENV_FILE": str(tmp_path / "missing"), "LOCAL_DIR": str(tmp_path),
           "ENVIRONMENT": "dev"}
    with pytest.raises(Error, match="dotenv file is not readable") as info:
        bundle.resolve_dotenv(env)
    assert info.value.exit_code == 3
    # "when set and readable": a set-but-unreadable file is skipped, with no fallback.
    assert bundle.resolve_dotenv(env, strict=False) is None


def test_resolve_dotenv_rejects_invalid_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.env"
    bad.write_bytes(b"A=caf\xe9\n")
    with pytest.raises(Error, match="not valid UTF-8"):
        bundle.resolve_dotenv({}, str(bad))


# ---------------------------------------------------------------- against a database


def test_secrets_load_from_file(
    pg: PG, db_url: str, tmp_path: Path, cli: Cli
) -> None:
    dotenv = tmp_path / "my secrets.env"
    dotenv.write_text("# prod\nAPI_KEY='k$$ey'\nDB_PASS=\"p;w\\\"\n")
    code, out, err = cli("db-ops", ["-u", db_url, "secrets", "load", "-f", str(dotenv)])
    assert (code, err) == (0, NOTICE)
    assert out == (f"db-ops: hectic bundle {bundle.VERSION} applied; 2 secrets loaded "
                   f"from {dotenv}\n")
    assert secrets_of(pg, db_url) == 'API_KEY=k$$ey,DB_PASS=p;w\\'
    assert pg.psql("SELECT version FROM hectic.version", db_url) == bundle.VERSION
    # Again: idempotent bundle, secrets replaced.
    dotenv.write_text("ONLY=1\n")
    assert cli("db-ops", ["secrets", "load", "--url", db_url, "--dotenv-file", str(dotenv)])[0] == 0
    assert secrets_of(pg, db_url) == "ONLY=1"


def test_sources_and_url_precedence(
    pg: PG, db_url: str, tmp_path: Path, cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    file_env = tmp_path / "file.env"
    file_env.write_text("FROM=file\n")
    (tmp_path / ".env.staging").write_text("FROM=local_dir\n")
    monkeypatch.setenv("LOCAL_DIR", str(tmp_path))
    monkeypatch.setenv("ENVIRONMENT", "staging")
    # PGURL wins over DB_URL.
    monkeypatch.setenv("PGURL", db_url)
    monkeypatch.setenv("DB_URL", BAD_URL)
    assert cli("db-ops", ["secrets", "load"])[0] == 0
    assert secrets_of(pg, db_url) == "FROM=local_dir"
    monkeypatch.setenv("HECTIC_DOTENV_FILE", str(file_env))
    assert cli("db-ops", ["secrets", "load"])[0] == 0
    assert secrets_of(pg, db_url) == "FROM=file"
    monkeypatch.setenv("HECTIC_DOTENV_CONTENT", "FROM=content")
    code, out, _ = cli("db-ops", ["secrets", "load", "-f", str(file_env)])
    assert code == 0
    assert "1 secret loaded from HECTIC_DOTENV_CONTENT" in out
    assert secrets_of(pg, db_url) == "FROM=content"
    # --url wins over PGURL; DB_URL is used when PGURL is absent.
    monkeypatch.setenv("PGURL", BAD_URL)
    assert cli("db-ops", ["--url", db_url, "secrets", "load"])[0] == 0
    monkeypatch.delenv("PGURL")
    monkeypatch.setenv("DB_URL", db_url)
    monkeypatch.setenv("HECTIC_DOTENV_CONTENT", "FROM=db_url")
    assert cli("db-ops", ["secrets", "load"])[0] == 0
    assert secrets_of(pg, db_url) == "FROM=db_url"


@pytest.mark.parametrize("content", ["", "\n", "\n\n\n"])
def test_empty_dotenv_applies_the_bundle_and_keeps_the_secrets(
    pg: PG, db_url: str, tmp_path: Path, content: str, cli: Cli
) -> None:
    """As the original: an empty dotenv (only newlines) loads nothing, the bundle still runs."""
    bundle.apply(db_url)
    bundle.load_secrets(db_url, "KEEP=1\n")
    dotenv = tmp_path / "empty.env"
    dotenv.write_text(content)
    code, out, err = cli("db-ops", ["secrets", "load", "-u", db_url, "-f", str(dotenv)])
    assert (code, err) == (0, NOTICE)
    assert out == (f"db-ops: hectic bundle {bundle.VERSION} applied; the dotenv from {dotenv} "
                   "is empty, hectic.secret left as it was\n")
    assert secrets_of(pg, db_url) == "KEEP=1"


def test_export_lines_bom_and_crlf_in_a_dotenv_file(
    pg: PG, db_url: str, tmp_path: Path, cli: Cli
) -> None:
    dotenv = tmp_path / "shell.env"
    dotenv.write_bytes(b"\xef\xbb\xbfFIRST=1\r\n"
                       b"export SECOND='two'\r\n"
                       b"  export\tTHIRD = 3\n"
                       b"export=4\n"
                       b"exported=5\n"
                       b"NOT_EXPORT=export x\n")
    code, out, err = cli("db-ops", ["secrets", "load", "--url", db_url, "--dotenv-file",
                                    str(dotenv)])
    assert (code, err) == (0, NOTICE), err
    assert "6 secrets loaded" in out
    assert secrets_of(pg, db_url) == ("FIRST=1,NOT_EXPORT=export x,SECOND=two,THIRD=3,"
                                      "export=4,exported=5")


def test_bad_dotenv_line_fails_with_exit_1(
    db_url: str, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HECTIC_DOTENV_CONTENT", "GOOD=1\nsecret-without-equals\n")
    code, _, err = cli("db-ops", ["-u", db_url, "secrets", "load"])
    assert code == 1
    assert err.removeprefix(NOTICE).splitlines()[0] == (
        'db-ops: error: loading secrets failed: hectic.load_secrets_from_env: line 2 has no "="'
    )
    assert "secret-without-equals" not in err


def test_installed_console_script(pg: PG, db_url: str, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "db-ops"
    assert script.exists(), "pip install -e '.[test]' installs the db-ops console script"
    dotenv = tmp_path / ".env.ci"
    dotenv.write_text("NON_ASCII=ключ 🔑\nQUOTES='a\"b'\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PGURL", "DB_URL", "HECTIC_DOTENV_CONTENT", "HECTIC_DOTENV_FILE")}
    env.update({"DB_URL": db_url, "LOCAL_DIR": str(tmp_path), "ENVIRONMENT": "ci"})
    done = subprocess.run([str(script), "secrets", "load"], env=env, capture_output=True,
                          text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "2 secrets loaded" in done.stdout
    assert secrets_of(pg, db_url) == "NON_ASCII=ключ 🔑,QUOTES=a\"b"
    done = subprocess.run([str(script), "secrets", "load", "--nope"], env=env,
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 9
    assert done.stderr.startswith("db-ops: error: secrets load argument --nope does not exist")
