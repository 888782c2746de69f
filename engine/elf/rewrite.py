"""Rewrite an existing relocatable object (a diff object, or a linked module) with small changes.

In: a loaded `ElfObject` and the changes — sections to drop (with their section
symbols), extra RELA sections to add, symbols to re-home (e.g. SHN_LIVEPATCH),
extra global symbols, relocations to leave out. Out: the object written through emit.write_elf with every
other section, relocation and symbol as it was. Used by `post-link` and `module`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..core.errors import InputError
from .model import SHF_LINK_ORDER, SHT_RELA, SHT_STRTAB, SHT_SYMTAB, STT_SECTION, ElfObject, Reloc
from .write import OutSection, OutSymbol, write_elf

# (new section index of, new symbol index of) -> extra RELA sections to append
ExtraSections = Callable[[dict[int, int], dict[int, int]], list[OutSection]]


def rewrite(obj: ElfObject, output: Path, drop: set[str] | None = None,
            extra_sections: ExtraSections | None = None, rehome: dict[int, int] | None = None,
            extra_symbols: list[OutSymbol] | None = None,
            keep_reloc: Callable[[int, Reloc], bool] | None = None) -> None:
    drop = drop or set()
    rehome = rehome or {}
    keep = [s for s in obj.sections[1:] if s.type not in (SHT_RELA, SHT_SYMTAB, SHT_STRTAB) and s.name not in drop]
    new_index = {s.index: n for n, s in enumerate(keep, start=1)}
    dropped = {s.index for s in obj.sections if s.name in drop}
    kept_syms = [sym for sym in obj.symbols if not (sym.type == STT_SECTION and sym.shndx in dropped)]
    sym_index = {sym.index: n for n, sym in enumerate(kept_syms)}
    sections = [OutSection("", 0, 0, 0, 0, b"", 0)]
    for s in keep:
        out = OutSection(s.name, s.type, s.flags, s.addralign, s.entsize, s.data, s.size, source=s.index)
        if s.flags & SHF_LINK_ORDER and s.link in new_index:
            out.link_to = new_index[s.link]
        try:
            out.relocs = [(r.offset, r.type, sym_index[r.sym], r.addend) for r in s.relocs
                          if keep_reloc is None or keep_reloc(s.index, r)]
        except KeyError as err:
            raise InputError(f"{obj.path}: {s.name} has relocations against a dropped section") from err
        sections.append(out)
    if extra_sections is not None:
        sections.extend(extra_sections(new_index, sym_index))
    symbols = []
    for sym in kept_syms:
        if sym.index in rehome:
            shndx = rehome[sym.index]
        elif sym.shndx < 0:
            shndx = -sym.shndx  # reserved indices (SHN_ABS, ...) as they were
        elif sym.shndx == 0:
            shndx = 0
        elif sym.shndx in new_index:
            shndx = new_index[sym.shndx]
        else:
            raise InputError(f"{obj.path}: symbol {sym.name} is defined in a dropped section")
        symbols.append(OutSymbol(sym.name, sym.value, sym.size, sym.bind, sym.type, sym.other, shndx))
    for extra in extra_symbols or []:
        extra.shndx = new_index.get(extra.shndx, extra.shndx)
        symbols.append(extra)
    write_elf(output, obj, sections, symbols)
