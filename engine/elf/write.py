"""The one ELF writer: sections and symbols in, an ELF64 relocatable object out.

In: the sections (`OutSection`: name, type, flags, data, and relocations as (offset, type, output
symbol, addend)) and symbols (`OutSymbol`, locals first) of an object, and a template object whose
machine, byte order, OS ABI and flags the output takes. Out: the file, with one RELA section per
section that has relocations, a symbol table, string tables and section headers, written to a
temporary name beside the target and renamed (core/outputs.py), so a failure never leaves half an
object behind. The differ (diff/emit.py) and the module rewriter (rewrite.py) both write through it.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path

from ..core.errors import InputError
from ..core.outputs import atomic_write
from ..core.records import record
from .model import SHF_INFO_LINK, SHN_LORESERVE, SHT_NOBITS, SHT_RELA, SHT_STRTAB, SHT_SYMTAB, STB_LOCAL, ElfObject
from .structs import ElfStructs, elf_structs


@record(frozen=False)
class OutSection:
    """A section of the output object, before it is laid out."""

    name: str
    type: int
    flags: int
    addralign: int
    entsize: int
    data: bytes
    size: int
    link_to: int | None = None        # output index of a linked section (SHF_LINK_ORDER)
    relocs: list[tuple[int, int, int, int]] = field(default_factory=list)  # offset, type, out sym, addend
    source: int | None = None         # patched section index
    info_to: int | None = None        # a RELA section given as such (.klp.rela.*): the section it relocates


@record(frozen=False)
class OutSymbol:
    """A symbol of the output object, before the table is sorted and written."""

    name: str
    value: int
    size: int
    bind: int
    type: int
    other: int
    shndx: int  # output section index, 0 for undefined


class _Strtab:
    def __init__(self) -> None:
        self.data = bytearray(b"\0")
        self.index: dict[str, int] = {"": 0}

    def add(self, s: str) -> int:
        found = self.index.get(s)
        if found is None:
            found = len(self.data)
            self.data += s.encode() + b"\0"
            self.index[s] = found
        return found



def write_elf(path: Path, template: ElfObject, sections: list[OutSection], symbols: list[OutSymbol]) -> None:
    """Write `sections` and `symbols` (locals first) as an ELF64 relocatable object of `template`'s
    machine, byte order, OS ABI and flags."""
    layouts = elf_structs(template.little_endian)
    first_global = next((i for i, s in enumerate(symbols) if s.bind != STB_LOCAL), len(symbols))
    if any(s.bind == STB_LOCAL for s in symbols[first_global:]):
        raise AssertionError("local symbol after a global one")
    symtab_index = len(sections) + sum(1 for s in sections if s.relocs and s.type != SHT_RELA)
    all_sections, rela_for = _with_rela_sections(path, sections, symtab_index, layouts)
    strtab = _Strtab()
    sym_data = b"".join(layouts.sym.pack(strtab.add(s.name), (s.bind << 4) | s.type, s.other, s.shndx, s.value,
                                         s.size) for s in symbols)
    all_sections.append(OutSection(".symtab", SHT_SYMTAB, 0, 8, layouts.sym.size, sym_data, len(sym_data),
                                   link_to=symtab_index + 1))
    all_sections.append(OutSection(".strtab", SHT_STRTAB, 0, 1, 0, b"", 0))
    all_sections.append(OutSection(".shstrtab", SHT_STRTAB, 0, 1, 0, b"", 0))
    shstr = _Strtab()
    name_offsets = [shstr.add(s.name) for s in all_sections]
    all_sections[-2].data = bytes(strtab.data)
    all_sections[-1].data = bytes(shstr.data)
    for s in all_sections[-2:]:
        s.size = len(s.data)
    info_of = {rela_index: i for i, rela_index in rela_for.items()}
    info_of.update({n: s.info_to for n, s in enumerate(all_sections) if s.info_to is not None})
    atomic_write(path, _file_bytes(template, all_sections, name_offsets, info_of, first_global, layouts))


def _with_rela_sections(path: Path, sections: list[OutSection], symtab_index: int,
                        layouts: ElfStructs) -> tuple[list[OutSection], dict[int, int]]:
    """The sections followed by one RELA section for each that has relocations (a section that is a
    RELA section of its own gets its entries as data), and which section each RELA section is for."""
    all_sections = list(sections)
    rela_for: dict[int, int] = {}
    for i, s in enumerate(sections):
        if s.type == SHT_RELA:  # given as a relocation section of its own
            s.data = _rela_data(s.relocs, layouts)
            s.size = len(s.data)
            s.link_to = symtab_index
            continue
        if s.relocs:
            rela_for[i] = len(all_sections)
            rela = OutSection(".rela" + s.name, SHT_RELA, SHF_INFO_LINK, 8, layouts.rela.size, b"", 0)
            rela.data = _rela_data(s.relocs, layouts)
            rela.size = len(rela.data)
            rela.link_to = symtab_index
            all_sections.append(rela)
    if len(all_sections) + 3 >= SHN_LORESERVE:
        raise InputError(f"{path}: the output would need {len(all_sections) + 3} sections, "
                         f"more than plain ELF section numbering allows")
    return all_sections, rela_for


def _rela_data(relocs: list[tuple[int, int, int, int]], layouts: ElfStructs) -> bytes:
    return b"".join(layouts.rela.pack(off, (sym << 32) | typ, addend) for off, typ, sym, addend in relocs)


def _file_bytes(template: ElfObject, all_sections: list[OutSection], name_offsets: list[int],
                info_of: dict[int, int], first_global: int, layouts: ElfStructs) -> bytes:
    """The file: the ELF header, each section's bytes aligned, then the section headers."""
    body = bytearray(layouts.ehdr.size)
    offsets = []
    for s in all_sections:
        align = max(s.addralign, 1)
        if s.type != SHT_NOBITS and s.data:
            body += b"\0" * (-len(body) % align)
        offsets.append(len(body) if s.type != 0 else 0)
        if s.type != SHT_NOBITS:
            body += s.data
    body += b"\0" * (-len(body) % 8)
    shoff = len(body)
    for n, s in enumerate(all_sections):
        if n == 0:
            body += bytes(layouts.shdr.size)
            continue
        info = info_of.get(n, first_global if s.type == SHT_SYMTAB else 0)
        body += layouts.shdr.pack(name_offsets[n], s.type, s.flags, 0, offsets[n], s.size, s.link_to or 0, info,
                                  s.addralign, s.entsize)
    ident = b"\x7fELF" + bytes([2, 1 if template.little_endian else 2, 1, template.osabi,
                                template.abiversion]) + b"\0" * 7
    body[:layouts.ehdr.size] = layouts.ehdr.pack(ident, 1, template.machine, 1, 0, 0, shoff, template.e_flags,
                                                 layouts.ehdr.size, 0, 0, layouts.shdr.size, len(all_sections),
                                                 len(all_sections) - 1)
    return bytes(body)
