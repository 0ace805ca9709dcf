"""Record: the base of the small value types on start-up-critical paths.

A NamedTuple needs typing at run time and a dataclass needs dataclasses (inspect, ast, …): a
no-op `migrator migrate` would spend more on those imports than on its query. A subclass lists
its fields in order as `__slots__ = _fields = (...)` and writes its own typed __init__; Record
gives it value equality, a hash, a repr and unpacking (`name, hash, at = row`) from them.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import ClassVar


class Record:
    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record) or type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __iter__(self) -> Iterator[object]:
        return iter(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__name__}({fields})"
