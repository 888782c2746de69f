"""Special-section entries as part of the function they describe.

In: an object, its `Roles`, its relocation index, `--struct-size` overrides. Out:
`EntryTables` — the layout of each special section (found once here; the include
stage plans with it) and, per function, the entries that point into it with a
signature of each: what the kernel reads from the entry, with the places that
move with unrelated code (offsets inside the function, offsets inside a table of
anonymous replacement code) replaced by what is there.

The compare stage holds a function changed when its entries differ (an
ALTERNATIVE's CPU feature, an exception-table type, a jump label's key), even
when its own bytes are the same: the code that runs is chosen by those entries.
Tables a tool derives from the code itself (rule key `derived_from_code`) get a
layout but no signatures: the same code has the same entries.
A field the rules mark `line_number` is left to compare's `__LINE__` decision.
An entry whose fields that reach its own function all reach one and the same place
(a jump to its own address) is dead, and left out: compilers leave such entries
behind for branches they folded (seen in kpatch's data-read-mostly objects).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import field, fields
from typing import Literal, NamedTuple

from ..core.errors import LayoutError
from ..core.records import record
from ..elf.model import SHT_NOBITS, STT_FUNC, ElfObject, RelocIndex, Section, Target
from ..ruleset.compiled import LayoutRule, SpecialSection
from .classify import Roles

# One field of an entry as compared. Each kind is a class of its own, so that values of two kinds
# never compare equal (a string's bytes and a field's raw bytes, say); `shown` is how a reason prints one.

@record
class RawBytes:
    """A field no relocation fills: its bytes."""

    data: bytes


@record
class LineNumber:
    """A field the rules mark `line_number`: its value, left to the `__LINE__` decision."""

    line: int


@record
class OwnOffset:
    """A field that reaches the entry's own function: where in it."""

    offset: int


@record
class StringAt:
    """A field that reaches a string: the string's bytes."""

    text: bytes


@record
class CodeAt:
    """A field that reaches anonymous code (an alternative's replacement): its section and bytes."""

    section: str
    code: bytes


@record
class SymbolRef:
    """A field that reaches a named symbol: the name both objects share, and the addend."""

    name: str
    addend: int


FieldValue = RawBytes | LineNumber | OwnOffset | StringAt | CodeAt | SymbolRef


def shown(value: FieldValue) -> str:
    """A field's value as a reason prints it: its one field, or its fields as a tuple."""
    parts = tuple(getattr(value, f.name) for f in fields(value))
    return repr(parts[0] if len(parts) == 1 else parts)
# (special section, the relocation of a field, the entry's function) -> what the field reaches,
# described so that twins compare equal
Describe = Callable[[Section, Target, int], FieldValue]


class EntrySignature(NamedTuple):
    """One special-section entry as a function's signature: its section, place and fields. (A named
    tuple: immutable, and one is made for every entry of every table.)"""

    section: str                      # the special section's name
    at: int                           # where in the function the entry points (its ordering key)
    fields: tuple[tuple[str, FieldValue], ...]


@record(frozen=False)
class EntryTables:
    """Each special section's layout, and each function's entries."""

    layouts: dict[int, tuple[LayoutRule, str]] = field(default_factory=dict)  # section -> (layout, source)
    by_function: dict[int, list[EntrySignature]] = field(default_factory=dict)


def entry_tables(obj: ElfObject, roles: Roles, rel: RelocIndex, struct_sizes: Mapping[str, int],
                 describe: Describe, subtracting: frozenset[int] = frozenset()) -> EntryTables:
    """The layout of each special section of `obj` and the entries of each function."""
    tables = EntryTables()
    for shndx, spec in sorted(roles.special.items()):
        sec = obj.sections[shndx]
        if sec.size == 0 or sec.type == SHT_NOBITS:
            continue
        if spec.rule.companion is not None and spec.rule.companion.section == sec.name:
            continue
        try:
            layout, source = find_layout(sec, spec, rel, struct_sizes, obj.path)
        except LayoutError:
            continue  # the include stage reports it when the section matters
        tables.layouts[shndx] = (layout, source)
        if spec.rule.derived_from_code:
            continue  # the same code has the same entries: comparing the code decides
        byteorder: Literal["little", "big"] = "little" if obj.little_endian else "big"
        data, fields = sec.data, layout.fields
        for entry, owner, at, relocated in _owned_entries(obj, sec, layout, rel, subtracting):
            base = entry * layout.size
            values: list[tuple[str, FieldValue]] = []
            for f in fields:
                start = base + f.offset
                if start + f.size > len(data):
                    continue
                target = relocated.get(f.offset) if f.reloc != "none" else None
                if target is not None:
                    values.append((f.name, describe(sec, target, owner)))
                elif f.line_number:
                    values.append((f.name, LineNumber(int.from_bytes(data[start:start + f.size], byteorder))))
                else:
                    values.append((f.name, RawBytes(data[start:start + f.size])))
            selves = [value for _name, value in values if isinstance(value, OwnOffset)]
            if len(selves) > 1 and len(set(selves)) == 1:
                continue  # a site that points at itself (a jump to its own address): dead, as compilers leave them
            tables.by_function.setdefault(owner, []).append(EntrySignature(sec.name, at, tuple(values)))
    for signatures in tables.by_function.values():
        signatures.sort(key=_order)  # stable: entries at one site keep the order the compiler gave them
    return tables


def _order(signature: EntrySignature) -> tuple[str, int]:
    return signature.section, signature.at


def _owned_entries(obj: ElfObject, sec: Section, layout: LayoutRule, rel: RelocIndex,
                   subtracting: frozenset[int]) -> list[tuple[int, int, int, dict[int, Target]]]:
    """(entry, function, offset in the function, relocated fields) for each entry that reaches a
    function, in one pass over the table's relocations: the function is the one its first relocated
    field reaches (load has resolved section-symbol references to the function holding them); the
    fields map each field's offset in the entry to the first relocation there."""
    size = layout.size
    symbols = obj.symbols
    relocated: dict[int, dict[int, Target]] = {}
    owners: dict[int, tuple[int, int]] = {}
    for r, t in rel.in_range(sec.index, 0, sec.size):
        if r.type in subtracting:
            continue  # the second half of a pair: the field's reference is the first one's
        entry, offset = divmod(r.offset, size)
        relocated.setdefault(entry, {}).setdefault(offset, t)
        if entry not in owners:
            sym = symbols[t.sym]
            if sym.type == STT_FUNC and sym.is_defined:
                owners[entry] = (t.sym, t.addend)
    return [(entry, owner, at, relocated[entry]) for entry, (owner, at) in owners.items()]


def entry_count(sec_size: int, layout: LayoutRule) -> int | None:
    """Entries in a section of `sec_size` bytes. The assembler does not pad after the
    last entry, so it may be short, but never shorter than its last field's end."""
    size = layout.size
    if size <= 0:
        return None
    tail = sec_size % size
    if tail and tail < max((f.offset + f.size for f in layout.fields), default=size):
        return None
    return -(-sec_size // size)


def _entry_reloc_offsets(sec: Section, rel: RelocIndex, layout: LayoutRule) -> list[set[int]] | None:
    count = entry_count(sec.size, layout)
    if count is None:
        return None
    size = layout.size
    per_entry: list[set[int]] = [set() for _ in range(count)]
    for r, _t in rel.in_range(sec.index, 0, sec.size):
        per_entry[r.offset // size].add(r.offset % size)
    return per_entry


def _fits(layout: LayoutRule, per_entry: list[set[int]] | None) -> bool:
    if per_entry is None:
        return False
    required = layout.reloc_offsets("required")
    allowed = required | layout.reloc_offsets("optional")
    return all(required <= offs and offs <= allowed for offs in per_entry)


def find_layout(sec: Section, spec: SpecialSection, rel: RelocIndex,
                struct_sizes: Mapping[str, int], path: str) -> tuple[LayoutRule, str]:
    """The entry layout of `sec`: forced by --struct-size, else sh_entsize, else the one layout
    whose size divides the section and whose relocation offsets every entry agrees with."""
    layouts = spec.rule.layouts
    forced = struct_sizes.get(spec.struct)
    if forced is not None:
        known = [lay for lay in layouts if lay.size == forced]
        layout = known[0] if known else LayoutRule(size=forced, fields=[])
        if sec.size % forced:
            raise LayoutError(f"{path}: {sec.name} is {sec.size} bytes, not a multiple of "
                              f"--struct-size {spec.struct}={forced}")
        return layout, "--struct-size"
    fitting = [lay for lay in layouts if _fits(lay, _entry_reloc_offsets(sec, rel, lay))]
    if sec.entsize:
        by_entsize = [lay for lay in layouts if lay.size == sec.entsize]
        if by_entsize and _fits(by_entsize[0], _entry_reloc_offsets(sec, rel, by_entsize[0])):
            return by_entsize[0], "sh_entsize"
        if not by_entsize and sec.size % sec.entsize == 0 and not fitting:
            return LayoutRule(size=sec.entsize, fields=[]), "sh_entsize"
    if len(fitting) == 1:
        return fitting[0], "section size and relocation stride"
    if len(fitting) > 1:
        # Several sizes explain where the relocations are; prefer the one under which each
        # field's relocations look alike (same type, same kind of target) — array entries do.
        scored = sorted(((_column_likeness(sec, rel, lay), lay) for lay in fitting), key=lambda p: -p[0])
        if scored[0][0] > scored[1][0]:
            return scored[0][1], "relocation stride and field likeness"
    sizes = ", ".join(str(lay.size) for lay in layouts)
    hint = f"pass --struct-size {spec.struct}=BYTES"
    if not fitting:
        raise LayoutError(f"{path}: cannot split {sec.name} ({sec.size} bytes, {len(sec.relocs)} relocations) "
                          f"into struct {spec.struct}: no known layout ({sizes} bytes) fits; {hint} "
                          f"or add the layout to {spec.origin.file}")
    raise LayoutError(f"{path}: {sec.name} fits several {spec.struct} layouts "
                      f"({', '.join(str(lay.size) for lay in fitting)} bytes); {hint}")


def _column_likeness(sec: Section, rel: RelocIndex, layout: LayoutRule) -> float:
    """Share of relocations whose (type, target kind) is the most common one for their field."""
    columns: dict[int, Counter[tuple[int, int, bool]]] = {}
    symbols = rel.symbols
    total = 0
    for r, _t in rel.in_range(sec.index, 0, sec.size):
        sym = symbols[r.sym]
        kind = (r.type, sym.type, sym.is_defined)
        columns.setdefault(r.offset % layout.size, Counter())[kind] += 1
        total += 1
    if not total:
        return 0.0
    return sum(max(c.values()) for c in columns.values()) / total
