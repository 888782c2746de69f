"""Read-only views that rule expressions see (the attributes named in ruleset.py schemas).

A view wraps one symbol or section of an `ElfObject` and answers the attribute
names of `SYMBOL_ATTRS` / `SECTION_ATTRS`; `included` reads a set the caller
passes, so the same view class serves every stage.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass

from .model import (
    SHF_WRITE,
    SHT_NOBITS,
    STT_FUNC,
    STT_OBJECT,
    STT_SECTION,
    ElfObject,
    Section,
    Symbol,
)

_NO_SECTION = Section(0, "", 0, 0, 0, 0, 0, 0, 0, b"")
_EMPTY: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class SectionView:
    sec: Section

    @property
    def name(self) -> str:
        return self.sec.name

    @property
    def text(self) -> bool:
        return self.sec.is_text

    @property
    def alloc(self) -> bool:
        return self.sec.is_alloc

    @property
    def write(self) -> bool:
        return bool(self.sec.flags & SHF_WRITE)

    @property
    def strings(self) -> bool:
        return self.sec.is_strings

    @property
    def nobits(self) -> bool:
        return self.sec.type == SHT_NOBITS

    @property
    def size(self) -> int:
        return self.sec.size


@dataclass(frozen=True, slots=True)
class SymbolView:
    obj: ElfObject
    s: Symbol
    included_set: Container[int] = _EMPTY
    is_child: Callable[[Symbol], bool] | None = None
    addend: int = 0
    owner_of: Callable[[Symbol], str] | None = None

    @property
    def name(self) -> str:
        return self.s.name

    @property
    def type(self) -> str:
        return self.s.type_name

    @property
    def bind(self) -> str:
        return self.s.bind_name

    @property
    def size(self) -> int:
        return self.s.size

    @property
    def section(self) -> str:
        sec = self.obj.section_of(self.s)
        return sec.name if sec is not None else ""

    @property
    def defined(self) -> bool:
        return self.s.is_defined

    @property
    def included(self) -> bool:
        return self.s.index in self.included_set

    @property
    def function(self) -> bool:
        """A function, or the section symbol of code (a reference to code before any symbol)."""
        if self.s.type == STT_SECTION and self.s.is_defined:
            return self.obj.sections[self.s.shndx].is_text
        return self.s.type == STT_FUNC

    @property
    def object(self) -> bool:
        return self.s.type == STT_OBJECT

    @property
    def child(self) -> bool:
        return self.is_child is not None and self.is_child(self.s)

    @property
    def owner(self) -> str:
        """The kernel object that owns what a reference to this symbol reaches (klp.klp_owner): "" when
        the livepatch carries it itself."""
        if self.s.index in self.included_set:
            return ""
        return self.owner_of(self.s) if self.owner_of is not None else "?"


@dataclass(frozen=True, slots=True)
class SymbolEnv:
    """Environment for `SYMBOL_SCHEMA` predicates: `sym` and its `section`."""

    sym: SymbolView
    section: SectionView


def symbol_env(obj: ElfObject, sym: Symbol, is_child: Callable[[Symbol], bool] | None = None) -> SymbolEnv:
    sec = obj.section_of(sym)
    return SymbolEnv(SymbolView(obj, sym, is_child=is_child), SectionView(sec if sec is not None else _NO_SECTION))


@dataclass(frozen=True, slots=True)
class SectionEnv:
    section: SectionView


@dataclass(frozen=True, slots=True)
class ChangeSectionView(SectionView):
    """A refusal predicate's `section`: also how many function bodies it holds (`functions`)."""

    functions: int = 0


def function_bodies(obj: ElfObject, shndx: int, is_prefix: Callable[[Symbol], bool]) -> int:
    """Distinct function start addresses in a section (aliases of one body count once, padding
    symbols in front of a function not at all)."""
    return len({obj.symbols[i].value for i in obj.symbols_in.get(shndx, [])
                if obj.symbols[i].type == STT_FUNC and not is_prefix(obj.symbols[i])})


@dataclass(frozen=True, slots=True)
class ChangeEnv:
    """Environment for refusal predicates."""

    sym: SymbolView
    section: ChangeSectionView
    status: str
    has_ftrace: bool
    through_callers: bool = False  # no ftrace site, but patched through its callers (include.redirects)
    callers_problem: str = ""      # why it cannot be, when it has no ftrace site


@dataclass(frozen=True, slots=True)
class RelocEnv:
    """Environment for relocation rules (refusals and local calls): the function the relocation is in,
    its section, that function's status, and the relocation's target."""

    sym: SymbolView
    section: SectionView
    status: str
    target: SymbolView
