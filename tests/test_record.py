"""record.Record / record.Frozen: the value types used instead of dataclasses on hot paths."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from db_tool.record import Frozen, Record


class Point(Record):
    __slots__ = _fields = ("x", "y")

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y


class Conf(Frozen):
    __slots__ = _fields = ("name", "secret")
    _hidden = frozenset({"secret"})

    def __init__(self, name: str, secret: str = "") -> None:
        self._set(name=name, secret=secret)


class Other(Record):
    __slots__ = _fields = ("x", "y")

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y


def test_record_compares_hashes_shows_and_unpacks_by_its_fields() -> None:
    assert Point(1, 2) == Point(1, 2)
    assert Point(1, 2) != Point(2, 1)
    assert Point(1, 2) != Other(1, 2)  # another type with the same fields is not equal
    assert hash(Point(1, 2)) == hash(Point(1, 2))
    assert repr(Point(1, 2)) == "Point(x=1, y=2)"
    x, y = Point(3, 4)
    assert (x, y) == (3, 4)


def test_frozen_refuses_changes_and_copies_with_replace() -> None:
    conf = Conf("a", "s3cret")
    with pytest.raises(AttributeError, match="immutable"):
        conf.name = "b"  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del conf.name
    changed = conf.replace(name="b")
    assert (changed.name, changed.secret, conf.name) == ("b", "s3cret", "a")
    with pytest.raises(TypeError, match="no field nope"):
        conf.replace(nope=1)


def test_hidden_fields_take_no_part_in_equality_hash_or_repr() -> None:
    assert Conf("a", "one") == Conf("a", "two")
    assert hash(Conf("a", "one")) == hash(Conf("a", "two"))
    assert "one" not in repr(Conf("a", "one"))
    assert Conf("a") != Conf("b")


def test_frozen_survives_pickling_with_every_field() -> None:
    back = pickle.loads(pickle.dumps(Conf("a", "s")))
    assert (back.name, back.secret) == ("a", "s")


def test_importing_record_loads_no_typing_or_dataclasses() -> None:
    code = ("import sys, db_tool.record; "
            "print(sorted({'typing', 'dataclasses', 'inspect'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
