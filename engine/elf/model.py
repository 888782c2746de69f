"""The in-memory picture of one ELF relocatable object, shared by every stage.

In: what elf/read.py decodes from a file. Out: `ElfObject` (sections, symbols, per-section symbol
indexes, relocation targets), the ELF constants, and the small facts every stage asks of them.

Nothing here knows about an architecture or a special section: a `Section` is
bytes plus relocations, a `Symbol` is a symtab entry, a `Target` is where a
relocation points once section-symbol references have been resolved to the
named symbol that contains the address (the rules supply the per-type bias).
"""

from __future__ import annotations

import bisect
from dataclasses import field
from typing import NamedTuple

from ..core.records import record

# ELF constants the engine needs (generic ELF, not arch specific).
SHT_NULL = 0
SHT_PROGBITS = 1
SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_RELA = 4
SHT_NOBITS = 8
SHT_REL = 9
SHT_GROUP = 17
SHT_SYMTAB_SHNDX = 18

SHF_WRITE = 0x1
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4
SHF_MERGE = 0x10
SHF_STRINGS = 0x20
SHF_INFO_LINK = 0x40
SHF_LINK_ORDER = 0x80
SHF_GROUP = 0x200

STB_LOCAL = 0
STB_GLOBAL = 1
STB_WEAK = 2

STT_NOTYPE = 0
STT_OBJECT = 1
STT_FUNC = 2
STT_SECTION = 3
STT_FILE = 4
STT_COMMON = 5
STT_TLS = 6

SHN_UNDEF = 0
SHN_LORESERVE = 0xFF00
SHN_ABS = 0xFFF1
SHN_COMMON = 0xFFF2
SHN_XINDEX = 0xFFFF

BIND_NAMES = {STB_LOCAL: "LOCAL", STB_GLOBAL: "GLOBAL", STB_WEAK: "WEAK"}
BIND_VALUES = {name: value for value, name in BIND_NAMES.items()}  # as `readelf -s` prints them
TYPE_NAMES = {
    STT_NOTYPE: "NOTYPE",
    STT_OBJECT: "OBJECT",
    STT_FUNC: "FUNC",
    STT_SECTION: "SECTION",
    STT_FILE: "FILE",
    STT_COMMON: "COMMON",
    STT_TLS: "TLS",
}


@record(slots=True)
class Reloc:
    """One RELA entry. `offset` is relative to the start of the relocated section."""

    offset: int
    type: int
    sym: int
    addend: int


@record(frozen=False, slots=True)
class Section:
    """One section header with its bytes and, once read, the RELA entries that apply to it."""

    index: int
    name: str
    type: int
    flags: int
    addralign: int
    entsize: int
    link: int
    info: int
    size: int
    data: bytes
    relocs: list[Reloc] = field(default_factory=list)
    rela_name: str | None = None

    @property
    def is_alloc(self) -> bool:
        return bool(self.flags & SHF_ALLOC)

    @property
    def is_text(self) -> bool:
        return bool(self.flags & SHF_EXECINSTR)

    @property
    def is_strings(self) -> bool:
        return bool(self.flags & SHF_STRINGS)

    def string_at(self, offset: int) -> bytes:
        """The NUL-terminated string at `offset` (a string literal that a relocation reaches); an
        offset outside the section gives a text no string can hold (it starts with a NUL)."""
        if offset < 0 or offset > len(self.data):
            return b"\0<out of range %d>" % offset
        return c_bytes(self.data, offset)


def c_bytes(data: bytes, offset: int) -> bytes:
    """The NUL-terminated string at `offset` of `data`, without its NUL (up to the end of `data` when
    no NUL follows): the one reader of C strings, for string tables and string literals alike."""
    end = data.find(b"\0", offset)
    return data[offset: end if end >= 0 else len(data)]


@record(frozen=False, slots=True)
class Symbol:
    """One symbol table entry (`shndx` negated for the reserved indices)."""

    index: int
    name: str
    value: int
    size: int
    bind: int
    type: int
    other: int
    shndx: int  # section index; 0 undefined; reserved indices (SHN_ABS, ...) stored negated

    @property
    def is_defined(self) -> bool:
        return self.shndx > SHN_UNDEF

    @property
    def bind_name(self) -> str:
        return BIND_NAMES.get(self.bind, str(self.bind))

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.type, str(self.type))


class Target(NamedTuple):
    """Where a relocation points, after section symbols are resolved.

    `sym` is the symbol the output should reference; `addend` is the relocation's
    addend re-expressed relative to that symbol (the output's addend).
    When `sym` is a section symbol the reference stays section-relative
    (string literals, anonymous constants). (A named tuple: immutable, and made
    for every relocation, faster to create than a frozen dataclass.)
    """

    sym: int
    addend: int


@record(frozen=False, slots=True)
class ElfObject:
    """A loaded relocatable object with the indexes every later stage needs."""

    path: str
    machine: int
    little_endian: bool
    elfclass: int
    osabi: int
    abiversion: int
    e_flags: int
    sections: list[Section]
    symbols: list[Symbol]
    # relocation targets, parallel to section.relocs, filled by load
    targets: dict[int, list[Target]] = field(default_factory=dict)
    # section index -> its STT_SECTION symbol index
    section_symbol: dict[int, int] = field(default_factory=dict)
    # section index -> non-section, non-file symbols defined in it, sorted by value
    symbols_in: dict[int, list[int]] = field(default_factory=dict)
    # symbol index -> name of the STT_FILE block it belongs to ("" before the first FILE)
    file_of: dict[int, str] = field(default_factory=dict)
    rel_index: RelocIndex | None = field(default=None, repr=False, compare=False)

    def relocs(self) -> RelocIndex:
        """The relocations of each section by offset, built once (after load has resolved targets)
        and shared by every stage."""
        if self.rel_index is None:
            self.rel_index = RelocIndex(self)
        return self.rel_index

    def section_of(self, sym: Symbol) -> Section | None:
        if not sym.is_defined:
            return None
        return self.sections[sym.shndx]

    def function_at(self, shndx: int, offset: int) -> Symbol | None:
        """The function of section `shndx` whose bytes hold `offset`."""
        for index in self.symbols_in.get(shndx, []):
            sym = self.symbols[index]
            if sym.type == STT_FUNC and sym.value <= offset < sym.value + max(sym.size, 1):
                return sym
        return None

    def section_by_name(self, name: str) -> Section | None:
        for sec in self.sections:
            if sec.name == name:
                return sec
        return None


class RelocIndex:
    """Relocations of each section sorted by offset, for range queries. It holds the object's tables,
    not the object: the object holds it, and a cycle between them would keep every diff's objects
    alive until Python's next full collection (hundreds of MB over a batch of diffs)."""

    def __init__(self, obj: ElfObject) -> None:
        self.sections, self.symbols, self.targets = obj.sections, obj.symbols, obj.targets
        self._cache: dict[int, tuple[list[int], list[tuple[Reloc, Target]]]] = {}
        self._at: dict[int, dict[int, tuple[Reloc, Target]]] = {}

    def _sorted(self, shndx: int) -> tuple[list[int], list[tuple[Reloc, Target]]]:
        entry = self._cache.get(shndx)
        if entry is None:
            sec = self.sections[shndx]
            pairs = sorted(zip(sec.relocs, self.targets.get(shndx, []), strict=True),
                           key=lambda rt: rt[0].offset)
            entry = ([r.offset for r, _ in pairs], pairs)
            self._cache[shndx] = entry
        return entry

    def in_range(self, shndx: int, lo: int, hi: int) -> list[tuple[Reloc, Target]]:
        offsets, pairs = self._sorted(shndx)
        return pairs[bisect.bisect_left(offsets, lo): bisect.bisect_left(offsets, hi)]

    def at(self, shndx: int, offset: int) -> tuple[Reloc, Target] | None:
        """The first relocation at exactly `offset` of section `shndx`."""
        table = self._at.get(shndx)
        if table is None:
            table = {}
            for pair in self._sorted(shndx)[1]:
                table.setdefault(pair[0].offset, pair)
            self._at[shndx] = table
        return table.get(offset)
