"""`record`: the engine's record classes, dataclasses made cheaply.

In: a class with annotated fields. Out: the same class as a dataclass, immutable by type
(`frozen=True` is the default: mypy --strict, which the tests run, rejects every assignment to a
field), compared by value unless `eq=False` (then by identity), and printed like a dataclass.

Why not `@dataclass(frozen=True)`: Python generates each dataclass method by compiling source
text when the class is made, on every start of the command. A frozen dataclass adds two guard
methods (`__setattr__`, `__delattr__`) to the `__init__` and `__repr__` every class gets; for the
engine's ~100 record classes that was a fifth of the `klpdiff` command's start-up. Here the guards
are the type checker's, `__repr__` is one shared function, and a frozen record compared by value
keeps a field-wise `__hash__`, as a frozen dataclass has.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar, overload

if TYPE_CHECKING:
    from typing import dataclass_transform
else:  # a marker for type checkers only; Python 3.10's typing has none
    def dataclass_transform(**_: object) -> Callable[[Any], Any]:
        return lambda decorated: decorated

_T = TypeVar("_T")


@reprlib.recursive_repr()
def record_repr(self: Any) -> str:
    """`Name(field=value, ...)`, the fields a dataclass's generated `__repr__` shows."""
    shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
    return f"{type(self).__qualname__}({shown})"


@overload
def record(cls: type[_T], /) -> type[_T]: ...


@overload
def record(*, eq: bool = True, frozen: bool = True, slots: bool = False) -> Callable[[type[_T]], type[_T]]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[_T] | None = None, /, *, eq: bool = True, frozen: bool = True,
           slots: bool = False) -> type[_T] | Callable[[type[_T]], type[_T]]:
    """Make `cls` a record (see the module's docstring); `frozen=False` for one the stages fill in."""

    def make(target: type[_T]) -> type[_T]:
        made: type[_T] = dataclass(target, eq=eq, repr=False, unsafe_hash=eq and frozen, slots=slots)
        if "__repr__" not in target.__dict__:
            made.__repr__ = record_repr  # type: ignore[method-assign]
        return made

    return make if cls is None else make(cls)
