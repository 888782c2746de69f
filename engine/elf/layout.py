"""Data layouts — the structs, unions and enums the livepatch's code uses, as the debug information
describes them.

In: a `DebugInfo` (dwarf.py). Out: `Layouts`: every complete named struct, union and enum type
(and every typedef naming an anonymous one) with its `Layout`: size, each member's offset, bit
field position and type, each enumerator's value; and `TypeUse`: which of those types the
entries rooted at some functions and variables reach, and by what path, for the message.

A type is spelled without its typedefs and qualifiers (`unsigned int`, `struct list_head *`,
`char[16]`), so renaming a typedef or adding `const` is no layout change. An anonymous struct or
union is spelled with its own members, so a change inside one is a change of the type around it.
Types are named and compared by name: the running kernel's objects of a type keep the layout the
original object was built with.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import field
from enum import StrEnum

from ..core.records import record
from .dwarf import (
    AT_ABSTRACT_ORIGIN,
    AT_BIT_OFFSET,
    AT_BIT_SIZE,
    AT_BYTE_SIZE,
    AT_CONST_VALUE,
    AT_COUNT,
    AT_DATA_BIT_OFFSET,
    AT_DATA_MEMBER_LOCATION,
    AT_DECLARATION,
    AT_SPECIFICATION,
    AT_TYPE,
    AT_UPPER_BOUND,
    TAG_ARRAY,
    TAG_ATOMIC,
    TAG_BASE,
    TAG_CONST,
    TAG_ENUMERATION,
    TAG_ENUMERATOR,
    TAG_FORMAL_PARAMETER,
    TAG_MEMBER,
    TAG_POINTER,
    TAG_REFERENCE,
    TAG_RESTRICT,
    TAG_STRUCTURE,
    TAG_SUBRANGE,
    TAG_SUBROUTINE_TYPE,
    TAG_TYPEDEF,
    TAG_UNION,
    TAG_UNSPECIFIED,
    TAG_VARIABLE,
    TAG_VOLATILE,
    DebugInfo,
    Die,
)


class TypeKind(StrEnum):
    """What a named type is; the value is the C keyword (and the report's word)."""

    STRUCT = "struct"
    UNION = "union"
    ENUM = "enum"


_AGGREGATES = {TAG_STRUCTURE: TypeKind.STRUCT, TAG_UNION: TypeKind.UNION, TAG_ENUMERATION: TypeKind.ENUM}
_QUALIFIERS = frozenset({TAG_CONST, TAG_VOLATILE, TAG_RESTRICT, TAG_ATOMIC})
_MAX_DEPTH = 12  # anonymous aggregates spelled inside each other, at most


@record
class Member:
    """One member of a struct or union: where it sits and what it is."""

    name: str
    offset: int            # bytes from the start of the struct
    bit_offset: int | None  # bit fields: the first bit, counted from the struct's start
    bit_size: int | None
    type: str              # the member's type, spelled (see the module docstring)

    @property
    def place(self) -> tuple[int, int | None, int | None, str]:
        """What the layout compares: everything but the name (a renamed member moves nothing)."""
        return self.offset, self.bit_offset, self.bit_size, self.type

    def __str__(self) -> str:
        bits = f", bits {self.bit_offset}+{self.bit_size}" if self.bit_size is not None else ""
        return f"{self.name} ({self.type}) at {self.offset}{bits}"


@record
class Layout:
    """A complete struct, union or enum type."""

    kind: TypeKind
    name: str   # how it is named: "struct foo", or the typedef naming an anonymous type
    size: int | None
    members: tuple[Member, ...] = ()
    enumerators: tuple[tuple[str, int], ...] = ()

    def changes(self, new: Layout) -> list[str]:
        """How `new` differs from this layout, in words; empty when the running kernel's objects
        of this type are still read right by code built with `new` (an enum may gain values)."""
        out = []
        if self.size != new.size:
            out.append(f"size {self.size} -> {new.size}")
        if self.kind is TypeKind.ENUM:
            values = dict(new.enumerators)
            out.extend(f"{name} = {value} -> {values[name]}" if name in values else f"{name} = {value} removed"
                       for name, value in self.enumerators if values.get(name) != value)
            return out
        if [m.place for m in self.members] == [m.place for m in new.members]:
            return out
        before = {m.name: m for m in self.members}
        after = {m.name: m for m in new.members}
        out.extend(f"new member {m}" for name, m in after.items() if name not in before)
        out.extend(f"member {m} removed" for name, m in before.items() if name not in after)
        out.extend(f"{name}: {m.type} at {_where(m)} -> {after[name].type} at {_where(after[name])}"
                   for name, m in before.items() if name in after and after[name].place != m.place)
        return out or ["members reordered"]


def _where(m: Member) -> str:
    return f"{m.offset}" + (f" bits {m.bit_offset}+{m.bit_size}" if m.bit_size is not None else "")


@record(frozen=False)
class Layouts:
    """The named types of one object, their layouts, and how each type entry is spelled."""

    info: DebugInfo
    by_name: dict[str, set[Layout]] = field(default_factory=dict)
    name_of: dict[int, str] = field(default_factory=dict)  # type entry offset -> its name here
    spelled: dict[int, str] = field(default_factory=dict)

    def spell(self, offset: int | None, depth: int = 0) -> str:
        """The type at `offset` in C-like words, without typedefs and qualifiers."""
        if offset is None:
            return "void"
        known = self.spelled.get(offset)
        if known is not None:
            return known
        die = self.info.die(offset)
        text = "?" if die is None or depth > _MAX_DEPTH else self._spell(die, depth)
        self.spelled[offset] = text
        return text

    def _spell(self, die: Die, depth: int) -> str:
        tag = die.tag
        if tag in (TAG_BASE, TAG_UNSPECIFIED):
            return die.name or "?"
        if tag in _AGGREGATES:
            if die.name is not None:
                return f"{_AGGREGATES[tag]} {die.name}"
            return self._anonymous(die, depth)
        if tag == TAG_TYPEDEF:  # the typedef of an anonymous type is that type's name (and compared as one)
            target = _strip(self.info, die.ref(AT_TYPE))
            if die.name is not None and target is not None and target.tag in _AGGREGATES and target.name is None:
                return die.name
            return self.spell(die.ref(AT_TYPE), depth + 1)
        if tag in _QUALIFIERS:
            return self.spell(die.ref(AT_TYPE), depth + 1)
        if tag in (TAG_POINTER, TAG_REFERENCE):
            return f"{self.spell(die.ref(AT_TYPE), depth + 1)} *"
        if tag == TAG_ARRAY:
            return self.spell(die.ref(AT_TYPE), depth + 1) + "".join(
                f"[{_count(self.info.dies[c])}]" for c in die.children if self.info.dies[c].tag == TAG_SUBRANGE)
        if tag == TAG_SUBROUTINE_TYPE:
            params = ", ".join(self.spell(self.info.dies[c].ref(AT_TYPE), depth + 1) for c in die.children
                               if self.info.dies[c].tag == TAG_FORMAL_PARAMETER)
            return f"fn({params}) -> {self.spell(die.ref(AT_TYPE), depth + 1)}"
        return f"?{tag:#x}"

    def _anonymous(self, die: Die, depth: int) -> str:
        kind = _AGGREGATES[die.tag]
        if die.tag == TAG_ENUMERATION:
            return f"enum {{{', '.join(f'{n}={v}' for n, v in _enumerators(self.info, die))}}}"
        members = "; ".join(f"{m.type} {m.name}@{_where(m)}" for m in self._members(die, depth + 1))
        return f"{kind} {{{members}}}"

    def _members(self, die: Die, depth: int, prefix: str = "", base: int = 0) -> Iterator[Member]:
        """The members, with the members of an anonymous struct or union member in its place, as C
        reaches them (`mm->mmap_base`), and those of a named member of an anonymous type as
        `pair.lo`; offsets from the start of the outermost type."""
        for child in die.children:
            m = self.info.dies[child]
            if m.tag != TAG_MEMBER:
                continue
            offset = base + (m.number(AT_DATA_MEMBER_LOCATION) or 0)
            bit_size = m.number(AT_BIT_SIZE)
            inner = _strip(self.info, m.ref(AT_TYPE))
            if (bit_size is None and inner is not None and inner.tag in (TAG_STRUCTURE, TAG_UNION)
                    and inner.name is None and depth <= _MAX_DEPTH):
                inner_prefix = prefix if m.name is None else f"{prefix}{m.name}."
                yield from self._members(inner, depth + 1, inner_prefix, offset)
                continue
            bit_offset = m.number(AT_DATA_BIT_OFFSET)
            if bit_size is not None and bit_offset is None:
                bit_offset = _dwarf2_bit_offset(m, offset - base, bit_size, self.info.little_endian)
            if bit_offset is not None and bit_size is not None:
                bit_offset += base * 8
                offset = bit_offset // 8
            yield Member(prefix + (m.name or "(anonymous)"), offset, bit_offset, bit_size,
                         self.spell(m.ref(AT_TYPE), depth))

    def layout(self, die: Die, name: str) -> Layout:
        if die.tag == TAG_ENUMERATION:
            return Layout(TypeKind.ENUM, name, die.number(AT_BYTE_SIZE), (), tuple(_enumerators(self.info, die)))
        return Layout(_AGGREGATES[die.tag], name, die.number(AT_BYTE_SIZE), tuple(self._members(die, 1)))


def _count(subrange: Die) -> str:
    count = subrange.number(AT_COUNT)
    if count is not None:
        return str(count)
    upper = subrange.number(AT_UPPER_BOUND)
    return "" if upper is None else str(upper + 1)


def _enumerators(info: DebugInfo, die: Die) -> Iterator[tuple[str, int]]:
    for child in die.children:
        e = info.dies[child]
        value = e.number(AT_CONST_VALUE)
        if e.tag == TAG_ENUMERATOR and value is not None:
            yield e.name or "", value


def _dwarf2_bit_offset(m: Die, offset: int, bit_size: int, little_endian: bool) -> int:
    """DWARF 2 to 4 bit fields count from the storage unit's most significant bit: the same first
    bit counted from the struct's start, as DW_AT_data_bit_offset does (on a big-endian machine the
    most significant bit is the first)."""
    from_msb = m.number(AT_BIT_OFFSET) or 0
    if not little_endian:
        return offset * 8 + from_msb
    storage = m.number(AT_BYTE_SIZE) or 0
    return offset * 8 + storage * 8 - from_msb - bit_size


def layouts(info: DebugInfo) -> Layouts:
    """Every complete named struct, union and enum of the object, and each typedef that names an
    anonymous one (`typedef struct { ... } atomic_t;`)."""
    out = Layouts(info)
    for die in info.dies.values():
        tag = die.tag
        if tag in _AGGREGATES and die.name is not None and not die.attrs.get(AT_DECLARATION):
            _add(out, die, f"{_AGGREGATES[tag]} {die.name}")
        elif tag == TAG_TYPEDEF and die.name is not None:
            target = _strip(info, die.ref(AT_TYPE))
            if target is not None and target.tag in _AGGREGATES and target.name is None:
                _add(out, target, die.name)
    return out


def _add(out: Layouts, die: Die, name: str) -> None:
    out.name_of.setdefault(die.offset, name)
    out.by_name.setdefault(name, set()).add(out.layout(die, name))


def _strip(info: DebugInfo, offset: int | None) -> Die | None:
    """The type under any qualifiers."""
    die = info.die(offset)
    while die is not None and die.tag in _QUALIFIERS:
        die = info.die(die.ref(AT_TYPE))
    return die


@record
class Change:
    """A type whose layout differs between the two objects."""

    name: str
    before: Layout
    after: Layout
    how: tuple[str, ...]


def changed_types(orig: Layouts, patched: Layouts) -> dict[str, Change]:
    """The named types both objects define whose layouts differ. A name defined more than once in
    one object (a local struct in a function) is compared only when each side has one layout."""
    out = {}
    for name, after in patched.by_name.items():
        before = orig.by_name.get(name)
        if before is None or before == after or len(before) != 1 or len(after) != 1:
            continue
        (b,), (a,) = before, after
        how = b.changes(a)
        if how:
            out[name] = Change(name, b, a, tuple(how))
    return out


@record
class Root:
    """Where a use of types starts: an entry of a function or variable, and how to say it."""

    label: str   # the function, e.g. "do_exit"; empty for a variable (its entry names it)
    die: int


@record(frozen=False)
class TypeUse:
    """The type entries reached from the roots, each with the entry that reached it first (a root:
    None and its label). The words of a path are made only for the paths a message shows."""

    layouts: Layouts
    came_from: dict[int, tuple[int | None, str]] = field(default_factory=dict)  # entry -> (previous, label)

    def path(self, offset: int) -> list[str]:
        """How a root reaches the type entry at `offset`: `[f, parameter p (struct a *), member ...]`."""
        steps = []
        at: int | None = offset
        while at is not None:
            previous, label = self.came_from[at]
            step = label
            if previous is not None:
                before = self.layouts.info.dies[previous]
                step = _step(self.layouts, before) if before.ref(AT_TYPE) == at else ""
            if step:
                steps.append(step)
            at = previous
        return list(reversed(steps))

    def reached(self) -> Iterator[tuple[str, int]]:
        """(type name, entry) of every named type reached, each name once (its first entry)."""
        seen = set()
        for offset in self.came_from:
            name = self.layouts.name_of.get(offset)
            if name is not None and name not in seen:
                seen.add(name)
                yield name, offset


def type_use(lay: Layouts, roots: Iterable[Root]) -> TypeUse:
    """Breadth first from the roots through every type reference: the types of a function's
    parameters, variables, return value and inlined callees (through their abstract origins),
    pointed-to types, members' types, array elements. A type reached by any path is used: code
    that holds a pointer to a struct may follow any of its pointers."""
    info = lay.info
    use = TypeUse(lay)
    queue: deque[int] = deque()

    def visit(offset: int | None, previous: int | None, step: str) -> None:
        if offset is not None and offset not in use.came_from and offset in info.dies:
            use.came_from[offset] = (previous, step)
            queue.append(offset)

    for root in roots:
        visit(root.die, None, root.label)
    while queue:
        at = queue.popleft()
        die = info.dies[at]
        for ref in (AT_TYPE, AT_ABSTRACT_ORIGIN, AT_SPECIFICATION):
            visit(die.ref(ref), at, "")
        for child in die.children:
            visit(child, at, "")
    return use


def _step(lay: Layouts, die: Die) -> str:
    """What following `die`'s type is, in a path: a member, parameter or variable with its type."""
    if die.tag not in (TAG_MEMBER, TAG_FORMAL_PARAMETER, TAG_VARIABLE):
        return ""
    what = {TAG_MEMBER: "member", TAG_FORMAL_PARAMETER: "parameter", TAG_VARIABLE: "variable"}[die.tag]
    owner = lay.info.die(die.parent)
    where = ""
    if die.tag == TAG_MEMBER and owner is not None:
        where = (lay.name_of.get(owner.offset) or "(anonymous)") + "."
    return f"{what} {where}{die.name or '(anonymous)'} ({lay.spell(die.ref(AT_TYPE))})"


def variable_type(lay: Layouts, die: Die) -> str:
    """A variable's type, spelled; through its declaration when this entry completes one."""
    ref = die.ref(AT_TYPE)
    if ref is None:
        spec = lay.info.die(die.ref(AT_SPECIFICATION))
        ref = spec.ref(AT_TYPE) if spec is not None else None
    return lay.spell(ref)
