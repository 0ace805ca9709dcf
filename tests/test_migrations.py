"""Pure discovery/planning: in-memory inputs (and small temp dirs for discovery)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from db_tool.errors import Error
from db_tool.migrations import (
    DIR,
    Applied,
    Migration,
    discover,
    is_migration_name,
    section_lines,
    split_sections,
)
from db_tool.planning import HistoryMismatch, Target, plan, status
from tests.migrator_support import write


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def mig(i: int, *, up: bool = True, down: bool = True, content: str | None = None) -> Migration:
    name = f"2024010100000{i}-m{i}"
    p = Path("/nowhere") / name
    return Migration(name, DIR, p, p / "up.sql" if up else None, p / "down.sql" if down else None,
                     sha(content or name) if up else None)


def applied(*indexes: int) -> list[Applied]:
    return [Applied(mig(i).name, mig(i).hash or "") for i in indexes]


DISK = [mig(1), mig(2), mig(3)]


def names(p: object) -> list[tuple[str, str]]:
    return [(s.direction, s.migration.name[-2:]) for s in p.steps]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- Target.parse


@pytest.mark.parametrize(("direction", "arg", "expected"), [
    ("up", None, Target("up", 1)),  # the original: `up` alone is ONE step
    ("up", "all", Target("up")),
    ("up", "latest", Target("up")),
    ("up", "head", Target("up")),
    ("up", "2", Target("up", 2)),
    ("up", "0", Target("up", 0)),
    ("down", None, Target("down", 1)),
    ("down", "0", Target("down", 0)),
    ("down", "3", Target("down", 3)),
    ("to", "latest", Target("to", name="latest")),
    ("to", "20240101000001-m1", Target("to", name="20240101000001-m1")),
])
def test_target_parse(direction: str, arg: str | None, expected: Target) -> None:
    assert Target.parse(direction, arg) == expected


@pytest.mark.parametrize(("direction", "arg", "message"), [
    ("up", "two", "up argument not a number or 'all'"),
    ("up", "-1", "up argument not a number or 'all'"),
    ("up", "1.5", "up argument not a number or 'all'"),
    ("up", "", "up argument not a number or 'all'"),
    ("down", "x", "down argument not a number"),
    ("down", "all", "down argument not a number"),
    ("to", None, "no migration name specified"),
    ("to", "", "no migration name specified"),  # the original's `to ''` reverts everything
])
def test_target_parse_rejects_with_the_originals_words(
    direction: str, arg: str | None, message: str
) -> None:
    with pytest.raises(Error) as exc:
        Target.parse(direction, arg)
    assert exc.value.exit_code == 1
    assert exc.value.message.startswith(message)


# --------------------------------------------------------------------------- plan


@pytest.mark.parametrize(("done", "target", "expected"), [
    ((), Target("up"), [("up", "m1"), ("up", "m2"), ("up", "m3")]),
    ((1,), Target("up"), [("up", "m2"), ("up", "m3")]),
    ((), Target("up", 1), [("up", "m1")]),
    ((1,), Target("up", 2), [("up", "m2"), ("up", "m3")]),
    ((1, 2, 3), Target("down", 1), [("down", "m3")]),
    ((1, 2, 3), Target("down", 3), [("down", "m3"), ("down", "m2"), ("down", "m1")]),
    ((1, 2), Target("down", 2), [("down", "m2"), ("down", "m1")]),
    ((), Target("to", name="20240101000002-m2"), [("up", "m1"), ("up", "m2")]),
    ((1, 2, 3), Target("to", name="20240101000001-m1"), [("down", "m3"), ("down", "m2")]),
    ((1,), Target("to", name="latest"), [("up", "m2"), ("up", "m3")]),
    ((1,), Target("to", name="head"), [("up", "m2"), ("up", "m3")]),
    ((1,), Target("to", name="last"), [("up", "m2"), ("up", "m3")]),
    ((), Target("to", name="20240101000002"), [("up", "m1"), ("up", "m2")]),  # unique prefix
])
def test_plan_steps(done: tuple[int, ...], target: Target, expected: list[tuple[str, str]]) -> None:
    p = plan(DISK, applied(*done), target)
    assert names(p) == expected
    assert p.already is None and p.notices == []


@pytest.mark.parametrize(("done", "target", "phrase"), [
    ((1, 2, 3), Target("up"), "database already at 20240101000003-m3"),
    ((1, 2, 3), Target("to", name="latest"), "database already at 20240101000003-m3"),
    ((1, 2), Target("to", name="20240101000002-m2"), "database already at 20240101000002-m2"),
    ((1, 2), Target("up", 0), "database already at 20240101000002-m2"),
    ((1, 2), Target("down", 0), "database already at 20240101000002-m2"),
])
def test_plan_already_there(done: tuple[int, ...], target: Target, phrase: str) -> None:
    p = plan(DISK, applied(*done), target)
    assert p.steps == []
    assert p.already is not None and phrase in p.already


def test_plan_nothing_on_disk_and_nothing_applied_is_already_there() -> None:
    for target in (Target("up"), Target("to", name="latest")):
        p = plan([], [], target)
        assert p.steps == [] and p.already == "database already at clean state (no migrations)"


@pytest.mark.parametrize(("done", "target", "phrase"), [
    ((), Target("up", 4), "cannot migrate up 4 step(s): not enough migrations"),
    ((1, 2, 3), Target("up", 1), "cannot migrate up 1 step(s): not enough migrations"),
    ((1, 2), Target("up", 2), "cannot migrate up 2 step(s): not enough migrations"),
    ((), Target("up", 0), "cannot migrate up 0 step(s): not enough migrations"),
    ((), Target("down", 1), "cannot migrate down: no migrations applied"),
    ((), Target("down", 0), "cannot migrate down: no migrations applied"),
    ((1,), Target("down", 2), "cannot migrate down 2 step(s): would go before first migration"),
    ((), Target("to", name="20990101000000-nope"), "no migration named"),
    ((), Target("to", name="2024"), "ambiguous"),
])
def test_plan_edges_fail(done: tuple[int, ...], target: Target, phrase: str) -> None:
    with pytest.raises(Error) as exc:
        plan(DISK, applied(*done), target)
    assert phrase in exc.value.message
    assert exc.value.exit_code == (2 if phrase == "ambiguous" else 1)


def test_plan_refuses_missing_up_and_down() -> None:
    disk = [mig(1), mig(2, up=False), mig(3, down=False)]
    with pytest.raises(Error, match=r"migration up not found for 20240101000002-m2; expected "
                       r"either /nowhere/20240101000002-m2/up.sql or .*/up/entrypoint.sql"):
        plan(disk, applied(1), Target("up"))
    with pytest.raises(Error, match=r"migration down not found for 20240101000003-m3"):
        plan([mig(1), mig(2), disk[2]], applied(1, 2, 3), Target("down"))


MISMATCHES = [
    # (disk, db) and the position reported
    ([mig(1), mig(3)], [mig(1), mig(2)], 2),  # applied file removed from disk
    ([mig(2), mig(3)], [mig(1)], 1),  # first applied migration gone
    ([mig(1), mig(2), mig(3)], [mig(2)], 1),  # an earlier file appeared (not a prefix)
    ([mig(1)], [mig(1), mig(2)], 2),  # database has more than disk
    ([mig(1), mig(2), mig(3)], [mig(1), mig(3)], 2),  # gap
]


@pytest.mark.parametrize(("disk", "db", "position"), MISMATCHES)
def test_history_mismatch_report(disk: list[Migration], db: list[Migration], position: int) -> None:
    rows = [Applied(m.name, m.hash or "") for m in db]
    with pytest.raises(HistoryMismatch) as exc:
        plan(disk, rows, Target("up"))
    err = exc.value
    assert err.exit_code == 2
    text = err.message + "\n" + err.detail
    assert err.message == "Migration history mismatch detected!"
    assert f"Position: Migration #{position}" in text
    assert "Database has:" in text and "Filesystem has:" in text
    assert "Full filesystem migrations" in text and "Full database migrations" in text
    assert "--force" in text
    for m in disk + db:
        assert m.name in text


def test_modified_since_applied_warns_and_goes_on_as_the_original() -> None:
    disk = [mig(1, content="changed"), mig(2)]
    p = plan(disk, applied(1), Target("up"))
    assert names(p) == [("up", "m2")]
    assert len(p.notices) == 1
    assert "applied migration 20240101000001-m1 was modified since it was applied" in p.notices[0]
    assert sha("changed") in p.notices[0] and (mig(1).hash or "") in p.notices[0]


def test_modified_since_applied_refused_when_strict_unless_forced() -> None:
    disk = [mig(1, content="changed"), mig(2)]
    with pytest.raises(HistoryMismatch) as exc:
        plan(disk, applied(1), Target("up"), strict=True)
    assert exc.value.exit_code == 2
    assert "20240101000001-m1 was modified since it was applied" in exc.value.message
    assert "--strict" in exc.value.message
    assert names(plan(disk, applied(1), Target("up"), strict=True, force=True)) == [("up", "m2")]


def test_modified_compares_the_originals_uppercase_hash_lowercased() -> None:
    rows = [Applied(mig(1).name, (mig(1).hash or "").upper())]
    assert plan(DISK, rows, Target("up", 1)).notices == []


def test_force_uses_sets_past_a_mismatch() -> None:
    disk = [mig(1), mig(2), mig(3)]
    db = applied(1, 3)  # gap at m2
    assert names(plan(disk, db, Target("up"), force=True)) == [("up", "m2")]
    assert names(plan(disk, db, Target("down", 1), force=True)) == [("down", "m3")]
    gone = [Applied("20230101000000-gone", sha("x"))]
    p = plan(disk, gone, Target("up", 1), force=True)
    assert names(p) == [("up", "m1")] and p.notices
    with pytest.raises(Error, match="applied but not on disk"):
        plan(disk, gone, Target("down"), force=True)


def test_two_migrations_with_identical_content_plan_fine() -> None:
    disk = [mig(1, content="same"), mig(2, content="same")]
    assert names(plan(disk, [], Target("up"))) == [("up", "m1"), ("up", "m2")]


def test_status_rows() -> None:
    disk = [mig(1), mig(2, content="new"), mig(4)]
    db = [*applied(1, 2, 3)]
    rows = {r.name[-2:]: r.state for r in status(disk, db)}
    assert rows == {"m1": "applied", "m2": "modified", "m3": "missing", "m4": "pending"}


# --------------------------------------------------------------------------- sections


@pytest.mark.parametrize(("text", "up", "down"), [
    ("-- migrate:up\nA;\n-- migrate:down\nB;\n", "A;\n", "B;\n"),
    ("-- migrate:down\nB;\n-- migrate:up\nA;\n", "A;\n", "B;\n"),
    ("-- migrate:up transaction:false\nA;\n--migrate:down\n", "A;\n", ""),
    ("-- migrate:up\n\n\n-- migrate:down\n\n", "\n\n", "\n"),
    ("-- migrate:up\nA;", "A;", None),
    ("select 1;\n", None, None),
    ("-- migrate:upgrade\n", None, None),
    ("-- migrate:up_x\nA;\n", None, None),  # `_` is a word character: no marker
    ("-- migrate:up-x\nA;\n", "A;\n", None),
    ("\t--\t migrate:up\nA;\n", None, None),  # the marker starts its line
    ("--\t migrate:up\nA;\n", "A;\n", None),
    ("-- x migrate:up\nA;\n-- migrate:up\nB;\n", "B;\n", None),
    ("-- migrate:xx migrate:up\nA;\n", None, None),
    ("-- migrate:up\r\nA;\n", "A;\n", None),
    ("A; -- migrate:up\nB;\n", None, None),
    ("-- migrate:up", b"", None),
    ("-- migrate:down\n\n-- migrate:up\nA;\n", "A;\n", "\n"),
])
def test_split_sections(text: str, up: str | bytes | None, down: str | None) -> None:
    got = split_sections(text.encode())
    assert got == (up.encode() if isinstance(up, str) else up,
                   down.encode() if down is not None else None)


@pytest.mark.parametrize(("text", "lines"), [
    ("-- migrate:up\nA;\n-- migrate:down\nB;\n", {"up": 2, "down": 4}),
    ("\n\n-- migrate:down\n-- migrate:up", {"down": 4, "up": 4}),
    ("x\n-- migrate:up transaction:false\n\nA;\n", {"up": 3}),
    ("no markers\n", {}),
])
def test_section_lines(text: str, lines: dict[str, int]) -> None:
    assert section_lines(text.encode()) == lines


@pytest.mark.parametrize(("name", "expected"), [
    ("20240101000001-x", True),
    ("20240101000001-", True),  # the original's regex: any description, also none
    ("20240101000001", False),
    ("2024010100000-x", False),
    ("20240101000001x", False),
    ("2024010100000١-x", False),  # a non-ASCII digit is no [0-9]
    ("", False),
])
def test_is_migration_name(name: str, expected: bool) -> None:
    assert is_migration_name(name) is expected


def test_split_sections_rejects_duplicate_marker() -> None:
    with pytest.raises(Error, match="two '-- migrate:up' markers"):
        split_sections(b"-- migrate:up\n-- migrate:up\n")


# --------------------------------------------------------------------------- discovery


def test_discover_three_layouts_in_name_order(tmp_path: Path) -> None:
    write(tmp_path / "20240101000003-flat" / "up.sql", "create table a();\n")
    write(tmp_path / "20240101000003-flat" / "down.sql", "drop table a;\n")
    write(tmp_path / "20240101000001-entry" / "up" / "entrypoint.sql", "\\ir part.sql\n")
    write(tmp_path / "20240101000001-entry" / "up" / "part.sql", "select 1;\n")
    write(tmp_path / "20240101000001-entry" / "down" / "entrypoint.sql", "select 2;\n")
    write(tmp_path / "20240101000002-single.sql",
          "-- migrate:up\nselect 3;\n-- migrate:down\nselect 4;\n")
    write(tmp_path / "README.md", "x")
    write(tmp_path / "notes" / "up.sql", "x")
    write(tmp_path / "2024-bad" / "up.sql", "x")
    write(tmp_path / "20240101000009-x.txt", "not sql")
    found = discover(tmp_path)
    assert [(m.name, m.layout, m.missing) for m in found] == [
        ("20240101000001-entry", "entrypoint", []),
        ("20240101000002-single", "file", []),
        ("20240101000003-flat", "dir", []),
    ]
    entry, single, flat = found
    assert flat.hash == sha("create table a();\n")
    assert single.hash == sha("select 3;\n")
    assert single.up_sql == b"select 3;\n" and single.down_sql == b"select 4;\n"
    # the entrypoint alone is hashed, as the original's cksum of the file it runs
    assert entry.hash == sha("\\ir part.sql\n")
    write(tmp_path / "20240101000001-entry" / "up" / "part.sql", "select 11;\n")
    assert discover(tmp_path)[0].hash == entry.hash


def test_entrypoint_alone_hashes_like_a_plain_file(tmp_path: Path) -> None:
    write(tmp_path / "20240101000001-e" / "up" / "entrypoint.sql", "select 1;\n")
    assert discover(tmp_path)[0].hash == sha("select 1;\n")


def test_discover_missing_directions(tmp_path: Path) -> None:
    (tmp_path / "20240101000001-empty").mkdir()
    write(tmp_path / "20240101000002-noup" / "down.sql", "")
    write(tmp_path / "20240101000003-nodown" / "up" / "entrypoint.sql", "")
    write(tmp_path / "20240101000004-single.sql", "-- migrate:up\nselect 1;\n")
    write(tmp_path / "20240101000005-created-by-original.sql", "-- Write your migration SQL here\n")
    write(tmp_path / "20240101000006-down-only.sql", "-- migrate:down\nselect 1;\n")
    warnings: list[str] = []
    assert [m.missing for m in discover(tmp_path, warnings)] == [
        ["up.sql", "down.sql"], ["up.sql"], ["down/entrypoint.sql"], ["-- migrate:down"],
    ]
    assert len(warnings) == 2
    assert "20240101000005-created-by-original.sql: no '-- migrate:up' line" in warnings[0]
    assert "20240101000006-down-only.sql" in warnings[1]


def test_same_name_in_two_layouts_names_both(tmp_path: Path) -> None:
    write(tmp_path / "20240101000001-x" / "up.sql", "")
    write(tmp_path / "20240101000001-x.sql", "-- migrate:up\n")
    with pytest.raises(Error) as exc:
        discover(tmp_path)
    assert exc.value.exit_code == 2
    assert str(tmp_path / "20240101000001-x") in exc.value.message
    assert str(tmp_path / "20240101000001-x.sql") in exc.value.message


def test_flat_and_entrypoint_in_one_directory_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "20240101000001-x" / "up.sql", "")
    write(tmp_path / "20240101000001-x" / "up" / "entrypoint.sql", "")
    with pytest.raises(Error, match="mixes two layouts") as exc:
        discover(tmp_path)
    assert "up.sql" in exc.value.message and "/up/" in exc.value.message


def test_missing_directory_is_exit_3(tmp_path: Path) -> None:
    with pytest.raises(Error) as exc:
        discover(tmp_path / "nope")
    assert exc.value.exit_code == 3


def test_name_with_empty_description_is_a_migration_as_in_the_original(tmp_path: Path) -> None:
    write(tmp_path / "20240101000001-" / "up.sql", "select 1;\n")
    assert [m.name for m in discover(tmp_path)] == ["20240101000001-"]


def test_unreadable_up_file_is_a_one_line_error(tmp_path: Path) -> None:
    up = tmp_path / "20240101000001-x" / "up.sql"
    write(up, "select 1;\n")
    up.chmod(0)
    if os.access(up, os.R_OK):  # root reads a mode-0 file: a file whose read fails for root too
        up.unlink()
        up.symlink_to("/proc/self/mem")
        why = "Input/output error"
    else:
        why = "Permission denied"
    with pytest.raises(Error) as exc:
        discover(tmp_path)
    assert exc.value.exit_code == 1
    assert exc.value.message == f"cannot read migration file {up}: {why}; fix or remove it"


@pytest.mark.parametrize("layout", ["up.sql", "up/entrypoint.sql", "file"])
def test_broken_symlink_migration_file_is_a_one_line_error(tmp_path: Path, layout: str) -> None:
    if layout == "file":
        link = tmp_path / "20240101000001-x.sql"
    else:
        link = tmp_path / "20240101000001-x" / layout
        link.parent.mkdir(parents=True)
    link.symlink_to(tmp_path / "gone.sql")
    with pytest.raises(Error) as exc:
        discover(tmp_path)
    assert exc.value.exit_code == 1
    assert exc.value.message == (
        f"cannot read migration file {link}: it is a broken symbolic link to "
        f"{tmp_path / 'gone.sql'}; fix or remove it"
    )


def test_non_utf8_migration_name_is_a_one_line_error(tmp_path: Path) -> None:
    bad = os.fsencode(tmp_path) + b"/20240101000001-caf\xe9"
    os.makedirs(bad + b"/up")
    with open(bad + b"/up.sql", "wb") as fh:
        fh.write(b"select 1;\n")
    with pytest.raises(Error) as exc:
        discover(tmp_path)
    assert exc.value.exit_code == 1
    assert "migration name 20240101000001-caf\\xe9 is not valid UTF-8" in exc.value.message


def test_non_utf8_migration_directory_is_a_one_line_error(tmp_path: Path) -> None:
    bad = os.fsencode(tmp_path) + b"/migr\xe9"
    os.makedirs(bad + b"/20240101000001-x")
    with pytest.raises(Error) as exc:
        discover(os.fsdecode(bad))
    assert exc.value.exit_code == 1
    assert "migr\\xe9 is not a valid UTF-8 path" in exc.value.message
