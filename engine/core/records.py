"""`record`: the engine's record classes, dataclasses made cheaply.

In: a class with annotated fields. Out: the same class as a dataclass, immutable by type
(`frozen=True` is the default: mypy --strict, which the tests run, rejects every assignment to a
field), compared by value unless `eq=False` (then by identity), and printed like a dataclass.

Why not `@dataclass(frozen=True)`: Python generates each dataclass method by compiling source
text when the class is made, on every start of the command. A frozen dataclass compared by value
gets six (`__init__`, `__repr__`, `__eq__`, `__hash__` and the guards `__setattr__`, `__delattr__`);
for the engine's ~100 record classes that was a third of the `klpdiff` command's start-up. Here
only `__init__` is generated: the guards are the type checker's, and `__repr__`, `__eq__` and
`__hash__` are shared functions that read a class's compared fields with one `attrgetter` (a
frozen record compared by value hashes them, as a frozen dataclass does; a mutable one is
unhashable, as a mutable dataclass is).
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import ClassVar, TypeVar, dataclass_transform, overload

_T = TypeVar("_T")


class _Shared:
    """The methods every record class is given (copied onto it, not inherited: a record has no
    base class of klpdiff's own)."""

    _record_key: ClassVar[Callable[[object], object]]  # the values of the compared fields

    @reprlib.recursive_repr()
    def __repr__(self) -> str:
        """`Name(field=value, ...)`, the fields a dataclass's generated `__repr__` shows."""
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)  # type: ignore[arg-type]
        return f"{type(self).__qualname__}({shown})"

    def __eq__(self, other: object) -> bool:
        """Equal when of the same class with equal compared fields, as a dataclass's `__eq__`."""
        if type(other) is not type(self):
            return NotImplemented
        key = type(self)._record_key
        return self is other or key(self) == key(other)

    def __hash__(self) -> int:
        """The hash of the compared fields' values, as a frozen dataclass's `__hash__`."""
        return hash(type(self)._record_key(self))


def _key(names: list[str]) -> Callable[[object], object]:
    """What a record is compared and hashed by: its compared fields' values."""
    return attrgetter(*names) if names else lambda _obj: ()


@overload
def record(cls: type[_T], /) -> type[_T]: ...


@overload
def record(*, eq: bool = True, frozen: bool = True, slots: bool = False) -> Callable[[type[_T]], type[_T]]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[_T] | None = None, /, *, eq: bool = True, frozen: bool = True,
           slots: bool = False) -> type[_T] | Callable[[type[_T]], type[_T]]:
    """Make `cls` a record (see the module's docstring); `frozen=False` for one the stages fill in."""

    def make(target: type[_T]) -> type[_T]:
        made: type[_T] = dataclass(target, eq=False, repr=False, slots=slots)
        own = target.__dict__
        if "__repr__" not in own:
            made.__repr__ = _Shared.__repr__  # type: ignore[method-assign]
        if eq and "__eq__" not in own:
            every = fields(made)  # type: ignore[arg-type]
            if any(f.hash is not None and f.hash != f.compare for f in every):
                raise TypeError(f"{target.__qualname__}: a record hashes exactly the fields it compares")
            made._record_key = _key([f.name for f in every if f.compare])  # type: ignore[attr-defined]
            made.__eq__ = _Shared.__eq__  # type: ignore[method-assign,assignment]
            if "__hash__" not in own:  # a class's own __hash__ stays, as a dataclass leaves it
                made.__hash__ = _Shared.__hash__ if frozen else None  # type: ignore[method-assign,assignment]
        return made

    return make if cls is None else make(cls)
