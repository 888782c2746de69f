"""The differ's first stage, read (the stages: diff/pipeline.py): an ELF relocatable object into an
`ElfObject`.

In: a path. Out: an `ElfObject` with sections (bytes + RELA entries), symbols,
per-section symbol indexes and FILE scopes; `resolve_targets` then adds, for
every relocation, the named symbol it really points at (section-symbol
references resolved through the arch's relocation rules).

The ELF header, section headers, symbols and RELA entries are decoded with
`struct` straight from the file's bytes (the tables can hold hundreds of thousands
of entries: `struct.iter_unpack` is about twenty times faster than building a
pyelftools construct per entry, and a diff then starts without importing
pyelftools at all). Extended section numbering (e_shnum 0, e_shstrndx SHN_XINDEX)
is followed as the ELF spec says; `validate` then checks every index and offset.
`read_symbols` reads just the symbol table of any ELF64 file (the running kernel's vmlinux for
--symtab) with the same decoder.
"""

from __future__ import annotations

import bisect
import mmap
import os
import struct
from collections.abc import Callable
from pathlib import Path

from ..core.errors import InputError
from ..core.inputs import input_size, read_input
from .model import (
    SHN_LORESERVE,
    SHN_XINDEX,
    SHT_GROUP,
    SHT_NOBITS,
    SHT_PROGBITS,
    SHT_REL,
    SHT_RELA,
    SHT_STRTAB,
    SHT_SYMTAB,
    SHT_SYMTAB_SHNDX,
    STT_FILE,
    STT_SECTION,
    ElfObject,
    Reloc,
    Section,
    Symbol,
    Target,
    c_bytes,
)
from .structs import ElfStructs, elf_structs

ET_REL = 1  # e_type of a relocatable object
SHT_NOTE, SHT_INIT_ARRAY, SHT_FINI_ARRAY, SHT_PREINIT_ARRAY = 7, 14, 15, 16
SHF_COMPRESSED = 0x800
_MAX_ALIGN = 1 << 20  # a power of two; kernel objects align to a page at most


def c_string(table: bytes, offset: int) -> str:
    """A name of a string table, as text."""
    return c_bytes(table, offset).decode("utf-8", "replace")


def _string_starts(table: bytes) -> dict[int, str]:
    """Each string of a string table by the offset where it starts (a name that points into the middle
    of one, as a linker may share tails, is read with c_string)."""
    out: dict[int, str] = {}
    offset = 0
    for raw in table.split(b"\0"):
        out[offset] = raw.decode("utf-8", "replace")
        offset += len(raw) + 1
    return out


def read_elf(path: str | Path) -> ElfObject:
    """Read `path`; raise InputError naming the file on anything that is not a sane ELF64 ET_REL."""
    p = Path(path)
    raw = read_input(p, "an object file")
    if raw[:4] != b"\x7fELF":
        raise InputError(f"{p}: not an ELF file")
    try:
        obj = _parse(p, raw)
    except InputError:
        raise
    except struct.error as err:  # a header or table that the file's end cuts short
        raise InputError(f"{p}: truncated or malformed ELF file ({err})") from err
    validate(obj)
    index_symbols(obj)
    return obj


_TABLES = {SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_REL, SHT_SYMTAB_SHNDX}
# content and table types of the ELF spec (NULL only at index 0); OS- and processor-specific types pass
_KNOWN_TYPES = _TABLES | {SHT_PROGBITS, SHT_NOTE, SHT_NOBITS, SHT_INIT_ARRAY, SHT_FINI_ARRAY, SHT_PREINIT_ARRAY,
                          SHT_GROUP}
SHT_LOOS, SHT_HIPROC = 0x60000000, 0x7FFFFFFF


def validate(obj: ElfObject) -> None:
    """The structure of the object, checked once against the ELF spec before any stage reads it:
    every index, offset, size and link in range. Raises InputError naming the file, the section or
    symbol, and what is wrong."""
    p, sections, symbols = obj.path, obj.sections, obj.symbols

    def fail(message: str) -> None:
        raise InputError(f"{p}: {message}")

    for sec in sections[1:]:
        if sec.type not in _KNOWN_TYPES and not SHT_LOOS <= sec.type <= SHT_HIPROC:
            fail(f"section {sec.name or sec.index} has type {sec.type:#x}, which is not an ELF section type")
        if sec.addralign & (sec.addralign - 1) or sec.addralign > _MAX_ALIGN:
            fail(f"section {sec.name} has alignment {sec.addralign:#x}: not a power of two up to {_MAX_ALIGN:#x}")
        if sec.flags & SHF_COMPRESSED:
            fail(f"section {sec.name} is compressed (SHF_COMPRESSED), which klpdiff does not read")
        if sec.type in (SHT_SYMTAB, SHT_RELA, SHT_SYMTAB_SHNDX) and not 0 < sec.link < len(sections):
            fail(f"section {sec.name} links to missing section {sec.link}")
        if sec.type == SHT_STRTAB and sec.data and sec.data[-1:] != b"\0":
            fail(f"string table {sec.name} does not end with a NUL byte")
    symtab = next(s for s in sections if s.type == SHT_SYMTAB)
    if sections[symtab.link].type != SHT_STRTAB:
        fail(f"symbol table {symtab.name} links to {sections[symtab.link].name}, which is not a string table")
    for sec in sections:
        if sec.type == SHT_RELA:
            target = sections[sec.info]
            if sec.link != symtab.index:
                fail(f"relocation section {sec.name} does not use the symbol table {symtab.name}")
            if target.type in _TABLES or target.type == 0 or target.index == 0:
                fail(f"relocation section {sec.name} relocates {target.name or 'section ' + str(sec.info)}, "
                     f"which holds no code or data")
    if symbols and symbols[0].shndx != 0:
        fail(f"symbol 0, which the ELF spec reserves as the undefined null symbol, names section "
             f"{abs(symbols[0].shndx)}")

    def label(sym: Symbol) -> str:
        return f"symbol {sym.name or '#' + str(sym.index)}"

    for sym in symbols[1:]:
        if sym.shndx <= 0:
            continue  # undefined, or a reserved index (SHN_ABS, SHN_COMMON, ...)
        if sym.shndx >= len(sections):
            fail(f"{label(sym)} is in section {sym.shndx}, which does not exist")
        sec = sections[sym.shndx]
        if sec.type in _TABLES or sym.shndx == 0:
            fail(f"{label(sym)} is defined in {sec.name or 'section ' + str(sym.shndx)}, which holds no code or "
                 f"data")
        if sym.type != STT_SECTION and sym.value + sym.size > sec.size:
            fail(f"{label(sym)} ({sym.value:#x}+{sym.size:#x}) runs past the end of {sec.name} "
                 f"({sec.size:#x} bytes)")
    file_symbols = {sym.index for sym in symbols if sym.type == STT_FILE}
    for sec in sections:
        size = sec.size
        bad = next((r for r in sec.relocs if r.offset >= size or r.sym in file_symbols), None)
        if bad is not None and bad.offset >= size:
            fail(f"a relocation at {bad.offset:#x} lies outside {sec.name} ({size:#x} bytes)")
        if bad is not None:
            fail(f"a relocation in {sec.name} at {bad.offset:#x} names FILE symbol {symbols[bad.sym].name}")


def validate_relocation_types(obj: ElfObject, widths: dict[int, int], arch: str) -> None:
    """Every relocation of `obj` is of a type the arch's rules know, and its field fits in its section."""
    for sec in obj.sections:
        for r in sec.relocs:
            width = widths.get(r.type)
            if width is None:
                raise InputError(f"{obj.path}: relocation type {r.type} in {sec.name} at {r.offset:#x} is not an "
                                 f"{arch} relocation klpdiff's rules know")
            if r.offset + width > sec.size:
                raise InputError(f"{obj.path}: the {width}-byte field of the relocation at {r.offset:#x} runs past "
                                 f"the end of {sec.name} ({sec.size:#x} bytes)")


_SHN_XINDEX_IN_HEADER = 0xFFFF


Header = tuple[int, int, int, int, int, int, int, int, int, int]  # one section header, as ELF64 lays it out


def _layout(p: Path, raw: bytes | mmap.mmap) -> tuple[bool, int, int, int, list[Header], int]:
    """(little-endian, e_type, e_machine, e_flags, section headers, section name table index) of an
    ELF64 file, every offset checked against the file's size."""
    if len(raw) < 16:
        raise InputError(f"{p}: truncated ELF file (the identification bytes are cut short)")
    elfclass, encoding = raw[4], raw[5]
    if elfclass not in (1, 2) or encoding not in (1, 2):
        raise InputError(f"{p}: malformed ELF file (class {elfclass}, data encoding {encoding})")
    if elfclass != 2:
        raise InputError(f"{p}: ELF32 objects are not supported (klpdiff handles ELF64)")
    little = encoding == 1
    layouts = elf_structs(little)
    if len(raw) < layouts.ehdr.size:
        raise InputError(f"{p}: truncated ELF file (the ELF header is cut short)")
    (_ident, e_type, e_machine, _version, _entry, _phoff, shoff, e_flags, _ehsize, _phentsize, _phnum,
     shentsize, shnum, shstrndx) = layouts.ehdr.unpack_from(raw)
    if shoff == 0 or shentsize != layouts.shdr.size:
        raise InputError(f"{p}: malformed ELF file (section header table at {shoff:#x}, entries of "
                         f"{shentsize} bytes; an ELF64 file has {layouts.shdr.size}-byte entries)")
    if shoff + layouts.shdr.size > len(raw):
        raise InputError(f"{p}: truncated ELF file (section headers run past the end)")
    first = layouts.shdr.unpack_from(raw, shoff)
    if shnum == 0:  # extended numbering: the count is section 0's sh_size
        shnum = first[5]
    if shstrndx == _SHN_XINDEX_IN_HEADER:  # and the name table's index its sh_link
        shstrndx = first[6]
    if shoff + shnum * layouts.shdr.size > len(raw):
        raise InputError(f"{p}: truncated ELF file (section headers run past the end)")

    headers: list[Header] = list(layouts.shdr.iter_unpack(raw[shoff: shoff + shnum * layouts.shdr.size]))
    if not 0 < shstrndx < shnum:
        raise InputError(f"{p}: section name table index {shstrndx} is out of range")
    return little, e_type, e_machine, e_flags, headers, shstrndx


def _parse(p: Path, raw: bytes) -> ElfObject:
    little, e_type, e_machine, e_flags, headers, shstrndx = _layout(p, raw)
    if e_type != ET_REL:
        raise InputError(f"{p}: not a relocatable object (e_type {e_type}); diff the .o files")
    layouts = elf_structs(little)
    name_off, size_off = headers[shstrndx][4], headers[shstrndx][5]
    shstrtab = raw[name_off: name_off + size_off]
    section_names = _string_starts(shstrtab)
    sections: list[Section] = []
    file_size = len(raw)
    for i, (sh_name, sh_type, sh_flags, _addr, sh_offset, sh_size, sh_link, sh_info, sh_addralign,
            sh_entsize) in enumerate(headers):
        name = section_names.get(sh_name)
        if name is None:
            name = c_string(shstrtab, sh_name)
        if sh_type == SHT_NOBITS or i == 0:
            data = b""
        else:
            if sh_offset + sh_size > file_size:
                raise InputError(f"{p}: truncated ELF file (section {name or i} runs past the end)")
            data = raw[sh_offset: sh_offset + sh_size]
        sections.append(Section(i, name, sh_type, sh_flags, sh_addralign, sh_entsize, sh_link, sh_info,
                                sh_size if i else 0, data))

    symtab, strtab, xindex = _symbol_table(p, headers)
    symbols = _symbols(layouts, sections[symtab].data, sections[strtab].data,
                       sections[xindex].data if xindex is not None else b"")
    for sym in symbols:
        if sym.type == STT_SECTION and sym.is_defined and not sym.name and sym.shndx < len(sections):
            sym.name = sections[sym.shndx].name

    for sec in sections:
        if sec.type == SHT_REL:
            raise InputError(f"{p}: section {sec.name} uses REL relocations; only RELA objects are supported")
        if sec.type != SHT_RELA:
            continue
        if sec.info >= len(sections):
            raise InputError(f"{p}: relocation section {sec.name} points at missing section {sec.info}")
        base = sections[sec.info]
        base.rela_name = sec.name
        relocs = [Reloc(r_offset, r_info & 0xFFFFFFFF, r_info >> 32, r_addend) for r_offset, r_info, r_addend
                  in layouts.rela.iter_unpack(sec.data[: len(sec.data) // layouts.rela.size * layouts.rela.size])]
        missing = next((r.sym for r in relocs if r.sym >= len(symbols)), None)
        if missing is not None:
            raise InputError(f"{p}: relocation in {sec.name} names missing symbol {missing}")
        base.relocs.extend(relocs)

    return ElfObject(
        path=str(p), machine=e_machine, little_endian=little, elfclass=64,
        osabi=raw[7], abiversion=raw[8], e_flags=e_flags, sections=sections, symbols=symbols,
    )


def _symbol_table(p: Path, headers: list[Header]) -> tuple[int, int, int | None]:
    """The sections of the file's one symbol table: (the table, its strings, its SHT_SYMTAB_SHNDX
    extension or None)."""
    symtabs = [i for i, h in enumerate(headers) if h[1] == SHT_SYMTAB]
    if len(symtabs) != 1:
        raise InputError(f"{p}: expected one symbol table, found {len(symtabs)} (was it stripped?)")
    symtab = symtabs[0]
    link = headers[symtab][6]
    if not 0 < link < len(headers):
        raise InputError(f"{p}: symbol table links to missing section {link}")
    xindex = next((i for i, h in enumerate(headers) if h[1] == SHT_SYMTAB_SHNDX and h[6] == symtab), None)
    return symtab, link, xindex


def _symbols(layouts: ElfStructs, table: bytes, strtab: bytes, xindex: bytes) -> list[Symbol]:
    """The entries of a symbol table (`xindex`: its SHT_SYMTAB_SHNDX section, or empty)."""
    names = _string_starts(strtab)
    symbols: list[Symbol] = []
    for i, (st_name, st_info, st_other, st_shndx, st_value, st_size) in enumerate(
            layouts.sym.iter_unpack(table[: len(table) // layouts.sym.size * layouts.sym.size])):
        shndx = st_shndx
        if shndx == SHN_XINDEX and xindex:
            (shndx,) = layouts.word.unpack_from(xindex, layouts.word.size * i)
        elif shndx >= SHN_LORESERVE:
            shndx = -shndx  # SHN_ABS, SHN_COMMON, ...: negative, so every real index stays usable
        name = names.get(st_name)
        symbols.append(Symbol(i, name if name is not None else c_string(strtab, st_name), st_value, st_size,
                              st_info >> 4, st_info & 0xF, st_other, shndx))
    return symbols


def read_symbols(path: Path) -> list[Symbol]:
    """The symbol table of any ELF64 file (vmlinux, a module, an object). Only the headers, the symbol
    table and its strings are read, through a memory map: a vmlinux with debug information is hundreds
    of MB. Raises InputError naming the file."""
    input_size(path, "an ELF file")
    try:
        with path.open("rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise InputError(f"{path}: empty file, not an ELF file")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as raw:
                return _read_symbols(path, raw)
    except OSError as err:
        raise InputError(f"{path}: cannot read symbols: {err.strerror or err}") from err
    except struct.error as err:
        raise InputError(f"{path}: truncated or malformed ELF file ({err})") from err


def _read_symbols(p: Path, raw: mmap.mmap) -> list[Symbol]:
    if raw[:4] != b"\x7fELF":
        raise InputError(f"{p}: not an ELF file")
    little, _type, _machine, _flags, headers, _names = _layout(p, raw)
    symtab, strtab, xindex = _symbol_table(p, headers)

    def data(index: int) -> bytes:
        offset, size = headers[index][4], headers[index][5]
        if offset + size > len(raw):
            raise InputError(f"{p}: truncated ELF file (a symbol table runs past the end)")
        return raw[offset: offset + size]

    return _symbols(elf_structs(little), data(symtab), data(strtab), data(xindex) if xindex is not None else b"")


def index_symbols(obj: ElfObject) -> None:
    """Fill the symbol indexes every stage uses: section symbols, symbols by section, FILE scope."""
    current_file = ""
    for sym in obj.symbols:
        if sym.type == STT_FILE:
            current_file = sym.name
            continue
        obj.file_of[sym.index] = current_file
        if not sym.is_defined or sym.shndx >= len(obj.sections):
            continue
        if sym.type == STT_SECTION:
            obj.section_symbol.setdefault(sym.shndx, sym.index)
        elif sym.index != 0:
            obj.symbols_in.setdefault(sym.shndx, []).append(sym.index)
    for members in obj.symbols_in.values():
        members.sort(key=lambda i: (obj.symbols[i].value, -obj.symbols[i].size))


def resolve_targets(obj: ElfObject, bias_of: Callable[[int, bool], tuple[int, int]],
                    is_anonymous: Callable[[Symbol], bool]) -> None:
    """Fill `obj.targets`: each relocation's target as (named symbol, addend relative to it); a
    reference to an anonymous label that no named symbol holds (an assembler's `.L0` for the `.` of
    `.long sym - .`, RISC-V's `.LPFE` before a function's entry) names its place: its section's
    symbol and the offset.

    `bias_of(type, in_text)` gives (bias, slack) for a relocation type: the target
    offset inside the section is `addend + bias`, possibly up to `slack` further
    (an immediate that follows a PC-relative displacement).
    """
    symbols, sections = obj.symbols, obj.sections
    # per symbol, once: the section a reference to it names a place in (None: it names the symbol).
    # Section symbols and anonymous labels (.L*) name a place; in strings, the place is the string.
    place_in: list[int | None] = [
        sym.shndx if sym.is_defined and (sym.type == STT_SECTION or is_anonymous(sym))
        and not sections[sym.shndx].is_strings else None
        for sym in symbols]
    places: dict[int, _Places | None] = {}
    target = Target._make  # from a (symbol, addend) pair: a third faster than calling Target, per relocation
    for sec in sections:
        if not sec.relocs:
            continue
        targets = []
        biases: dict[int, tuple[int, int]] = {}
        for r in sec.relocs:
            shndx = place_in[r.sym]
            if shndx is None:
                targets.append(target((r.sym, r.addend)))
                continue
            if shndx not in places:
                places[shndx] = _Places.of(obj, shndx, is_anonymous)
            where = places[shndx]
            sym = symbols[r.sym]
            base = 0 if sym.type == STT_SECTION else sym.value
            named = None
            if where is not None:
                bias_slack = biases.get(r.type)
                if bias_slack is None:
                    bias_slack = biases[r.type] = bias_of(r.type, sec.is_text)
                named = where.containing(base + r.addend + bias_slack[0], bias_slack[1])
            if named is not None:
                targets.append(target((named.index, base + r.addend - named.value)))
            elif sym.type != STT_SECTION and shndx in obj.section_symbol:  # a label outside every named symbol
                targets.append(target((obj.section_symbol[shndx], base + r.addend)))
            else:
                targets.append(target((r.sym, r.addend)))
        obj.targets[sec.index] = targets


class _Places:
    """The named (not anonymous) symbols of one section, by value, to find the one at an offset."""

    def __init__(self, members: list[Symbol]) -> None:
        self.members = members  # sorted by value, then larger first
        self.values = [m.value for m in members]
        self.reach: list[int] = []  # reach[j]: the furthest end of members[0..j]
        end = 0
        for m in members:
            end = max(end, m.value + m.size)
            self.reach.append(end)
        # a reference just past the last symbol of a section (an end-of-array pointer, the ORC entry that
        # closes a function) belongs to that symbol
        self.last = max(members, key=lambda sym: (sym.value + sym.size, sym.size))

    @staticmethod
    def of(obj: ElfObject, shndx: int, is_anonymous: Callable[[Symbol], bool]) -> _Places | None:
        members = [obj.symbols[i] for i in obj.symbols_in.get(shndx, ()) if not is_anonymous(obj.symbols[i])]
        return _Places(members) if members else None

    def containing(self, offset: int, slack: int) -> Symbol | None:
        """The symbol whose bytes hold `offset` (or up to `slack` past it), else one of size 0 there."""
        hit = self._at(offset)
        if hit is not None:
            return hit
        for probe in range(offset + 1, offset + slack + 1):
            hit = self._at(probe)
            if hit is not None:
                return hit
        last = self.last
        if last.size and offset == last.value + last.size:
            return last
        return None

    def _at(self, offset: int) -> Symbol | None:
        values, members, reach = self.values, self.members, self.reach
        best: Symbol | None = None
        for j in range(bisect.bisect_right(values, offset) - 1, -1, -1):
            cand = members[j]
            if cand.value <= offset < cand.value + cand.size:
                return cand
            if cand.size == 0 and cand.value == offset and best is None:
                best = cand
            if reach[j] <= offset and cand.value < offset:
                break  # nothing before it reaches the offset
        return best
