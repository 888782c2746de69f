"""Read-only views that rule expressions see, and the schemas derived from them.

In: an `ElfObject` and what a stage knows of a symbol, section, relocation or entry. Out: the views and
environments a compiled rule is evaluated on, and each environment's schema (the names a rule may use,
checked when the rule is compiled).

A view wraps one symbol or section of an `ElfObject`; an environment is what one
kind of rule sees (`sym`, `section`, `status`, an entry's fields…). The names a
rule may use are exactly the public properties and fields of its environment's
classes that hold text, numbers, true/false or another view (`schema_of`), so a
view and what rules may ask of it cannot drift apart. Each stage passes the view
that holds what it knows: classification rules see a `SymbolView`, later stages a
`StagedSymbolView` (also `included`, `child`), relocation targets and entry
fields a `TargetView` (`addend`, `status`, `owner`, `livepatch`). Views are immutable records
(records.py) with slots: a diff creates one per symbol and section.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar, get_type_hints

from ..core.records import record
from ..elf.model import (
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


@record(eq=False, slots=True)
class SectionView:
    """A section as rules see it."""

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


def section_key(sec: Section) -> tuple[str, int, int, int]:
    """Everything a SectionView shows is a function of this (keep it so when adding a property)."""
    return sec.name, sec.type, sec.flags, sec.size


@record(eq=False, slots=True)
class SymbolView:
    """A symbol as classification rules see it: what the object says of it."""

    obj: ElfObject
    s: Symbol

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
    def function(self) -> bool:
        """A function, or the section symbol of code (a reference to code before any symbol)."""
        if self.s.type == STT_SECTION and self.s.is_defined:
            return self.obj.sections[self.s.shndx].is_text
        return self.s.type == STT_FUNC

    @property
    def object(self) -> bool:
        return self.s.type == STT_OBJECT


@record(eq=False, slots=True)
class StagedSymbolView(SymbolView):
    """A symbol once the stages after classification know more: whether the output carries it
    (`included` reads the set the caller passes) and whether it is a compiler-split part of another."""

    included_set: Container[int] = _EMPTY
    is_child: Callable[[Symbol], bool] | None = None

    @property
    def included(self) -> bool:
        return self.s.index in self.included_set

    @property
    def child(self) -> bool:
        return self.is_child is not None and self.is_child(self.s)


@record(eq=False, slots=True)
class TargetView(StagedSymbolView):
    """What a reference reaches (a relocation's target, a special-section entry's field): the symbol,
    the addend relative to it, what the diff found of it, which kernel object owns it, and whether the
    livepatch core resolves a reference to it."""

    addend: int = 0
    owner_of: Callable[[Symbol], str] | None = None
    status_of: Callable[[Symbol], str] | None = None
    resolved_by_klp: Callable[[Symbol], bool] | None = None

    @property
    def status(self) -> str:
        """What the diff found of the symbol it reaches: `same`, `changed` or `new` ("" when it is not
        defined in the object)."""
        if not self.s.is_defined or self.status_of is None:
            return ""
        return self.status_of(self.s)

    @property
    def owner(self) -> str:
        """The kernel object that owns what a reference to this symbol reaches (klp.klp_owner): "" when
        the livepatch carries it itself."""
        if self.s.index in self.included_set:
            return ""
        return self.owner_of(self.s) if self.owner_of is not None else "?"

    @property
    def livepatch(self) -> bool:
        """The livepatch core resolves a reference to it (a `.klp.sym` relocation): something of the running
        kernel that is not exported. False when the livepatch carries it, and without a kernel symbol
        table (--symtab), which names no livepatch symbols."""
        if self.s.index in self.included_set or self.resolved_by_klp is None:
            return False
        return self.resolved_by_klp(self.s)


@record(eq=False, slots=True)
class SymbolEnv:
    """Environment for `SYMBOL_SCHEMA` predicates: `sym` and its `section`."""

    sym: SymbolView
    section: SectionView


def symbol_key(obj: ElfObject, sym: Symbol) -> tuple[object, ...]:
    """Everything a SymbolEnv shows is a function of this (keep it so when adding a property;
    `function` reads the section only for a section symbol, whose section is in the key)."""
    sec = obj.section_of(sym)
    return sym.name, sym.type, sym.bind, sym.size, sym.is_defined, None if sec is None else section_key(sec)


def symbol_env(obj: ElfObject, sym: Symbol) -> SymbolEnv:
    sec = obj.section_of(sym)
    return SymbolEnv(SymbolView(obj, sym), SectionView(sec if sec is not None else _NO_SECTION))


@record(eq=False, slots=True)
class SectionEnv:
    """Environment for `SECTION_SCHEMA` predicates: the `section`."""

    section: SectionView


@record(eq=False, slots=True)
class ChangeSectionView(SectionView):
    """A refusal predicate's `section`: also how many function bodies it holds (`functions`)."""

    functions: int = 0


@record(eq=False, slots=True)
class ChangeEnv:
    """Environment for refusal predicates."""

    sym: StagedSymbolView
    section: ChangeSectionView
    status: str
    has_ftrace: bool
    through_callers: bool = False  # no ftrace site, but patched through its callers (include.redirects)
    callers_problem: str = ""      # why it cannot be, when it has no ftrace site


@record(eq=False, slots=True)
class RelocEnv:
    """Environment for relocation rules (refusals and local calls): the function the relocation is in,
    its section, that function's status, and the relocation's target (who owns it, whether the
    livepatch core resolves it)."""

    sym: StagedSymbolView
    section: SectionView
    status: str
    target: TargetView


# ------------------------------------------------------------------------------------------------
# special-section entries

_T = TypeVar("_T")


def _member(members: dict[str, _T], name: str) -> _T:
    """A view's named member, as an attribute: an unknown name is an AttributeError, as for any object."""
    try:
        return members[name]
    except KeyError:
        raise AttributeError(name) from None


@record
class TableView:
    """`table` in an entry predicate: the section's name and the named groups of the rule's pattern."""

    name: str
    groups: dict[str, str]

    def __getattr__(self, group: str) -> str:
        value: str = _member(self.__dict__["groups"], group)
        return value


@record
class EntryContext:
    """`context` in entry rules, and what the entries' views need to know about the running kernel."""

    patching_module: bool
    owner_of: Callable[[Symbol], str] | None = None  # klp.klp_owner for a symbol of the patched object
    resolved_by_klp: Callable[[Symbol], bool] | None = None  # would a reference to it be a .klp.sym one?


@record
class EntryEnv:
    """What an entry predicate or message sees: each field's target, the table, the context."""

    fields: dict[str, TargetView]
    table: TableView
    context: EntryContext

    def __getattr__(self, name: str) -> TargetView:
        view: TargetView = _member(self.__dict__["fields"], name)
        return view


@record
class StringEnv:
    """What a string filter sees: one string of the section."""

    string: str


# ------------------------------------------------------------------------------------------------
# schemas

Leaf = (str, int, bool)


def schema_of(cls: type) -> dict[str, Any]:
    """The names a rule may use on an instance of `cls`: its public fields and properties whose type is
    text, a number, true/false (a leaf) or another view of this module (its own schema, nested)."""
    out: dict[str, Any] = {}
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)] if is_dataclass(cls) else []
    names += [n for n, v in vars_of(cls).items() if isinstance(v, property)]
    for name in names:
        if name.startswith("_"):
            continue
        attr = vars_of(cls).get(name)
        kind = get_type_hints(attr.fget)["return"] if isinstance(attr, property) and attr.fget else hints.get(name)
        if kind in Leaf:
            out[name] = kind
        elif isinstance(kind, type) and kind.__module__ == __name__ and is_dataclass(kind):
            out[name] = schema_of(kind)  # another view (the ELF records views wrap are not for rules)
    return out


def vars_of(cls: type) -> dict[str, Any]:
    """Attributes defined by `cls` and its bases (the nearest definition wins)."""
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        found.update(vars(klass))
    return found


def entry_schema(field_names: Iterable[str], table_groups: Iterable[str] = ()) -> dict[str, Any]:
    """An entry predicate names the entry's fields (each is the target of its relocation), the
    `table` it is in (its name and the named groups of the rule's name pattern) and the context."""
    schema: dict[str, Any] = {name: schema_of(TargetView) for name in field_names}
    schema["table"] = {**schema_of(TableView), **{group: str for group in table_groups}}
    schema["context"] = schema_of(EntryContext)
    return schema


# Each rule kind's schema, derived from its environment when first asked (PEP 562): a diff whose
# rules come from the rule cache compiles no expression and never needs one.
_SCHEMAS_OF: dict[str, type] = {"SYMBOL_SCHEMA": SymbolEnv, "CHANGE_SCHEMA": ChangeEnv, "SECTION_SCHEMA": SectionEnv,
                                "STRING_SCHEMA": StringEnv, "RELOC_SCHEMA": RelocEnv}
_schemas: dict[str, dict[str, Any]] = {}


def __getattr__(name: str) -> dict[str, Any]:
    env = _SCHEMAS_OF.get(name)
    if env is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _schemas:
        _schemas[name] = schema_of(env)
    return _schemas[name]
