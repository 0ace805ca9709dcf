"""Record and Frozen: the base of the small value types on start-up-critical paths.

A NamedTuple needs typing at run time and a dataclass needs dataclasses (inspect, ast, …): a
no-op `migrator migrate` or the postgres-init hook would spend more on those imports and on
generating the classes than on their work. A subclass lists its fields in order as
`__slots__ = _fields = (...)` and writes its own typed __init__.

- Record gives value equality, a hash, a repr and unpacking (`name, hash, at = row`) from the
  fields; its __init__ assigns them plainly.
- Frozen is a Record that cannot change after __init__ (which sets its fields with _set), copied
  with changes by replace() and pickled by its fields — what @dataclass(frozen=True) gave.
  Fields named in _hidden take no part in ==, hash() or repr() (field(compare=False, repr=False)).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import ClassVar, Self


class Record:
    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _hidden: ClassVar[frozenset[str]] = frozenset()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def _key(self) -> tuple[object, ...]:
        if not self._hidden:
            return self._values()
        return tuple(getattr(self, n) for n in self._fields if n not in self._hidden)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Record)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __iter__(self) -> Iterator[object]:
        return iter(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields
                          if n not in self._hidden)
        return f"{type(self).__name__}({shown})"


class Frozen(Record):
    __slots__ = ()

    def _set(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: use .replace({name}=...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def replace(self, **changes: object) -> Self:
        """A copy with some fields changed (dataclasses.replace)."""
        unknown = sorted(set(changes) - set(self._fields))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(unknown)}")
        new = object.__new__(type(self))
        for n in self._fields:
            object.__setattr__(new, n, changes[n] if n in changes else getattr(self, n))
        return new

    def __getstate__(self) -> dict[str, object]:
        return {n: getattr(self, n) for n in self._fields}

    def __setstate__(self, state: dict[str, object]) -> None:
        self._set(**state)
