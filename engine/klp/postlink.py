"""`klpdiff post-link MODULE.ko`: turn the linker-safe livepatch table into real klp relocations.

In: a linked livepatch module whose diff objects carried `.klpdiff.relocs`
(see diff/emit.py). Out: the same module with, for each (object, section) pair, a
`.klp.rela.<obj>.<section>` RELA section flagged SHF_ALLOC | SHF_INFO_LINK |
SHF_RELA_LIVEPATCH whose entries point at `.klp.sym.<obj>.<name>,<pos>`
symbols now marked SHN_LIVEPATCH; the original relocations those replace (left in
place for objtool, against the weak placeholder symbols) and the intermediate
sections are removed.
Linkers do not keep SHN_LIVEPATCH or SHF_RELA_LIVEPATCH, which is why this
runs after the final link (as kpatch's create-klp-module and objtool's
`klp post-link` do).
"""

from __future__ import annotations

import struct
from collections import defaultdict
from pathlib import Path

from ..core.errors import InputError
from ..core.inputs import read_input
from ..core.outputs import atomic_write
from ..elf.model import SHF_ALLOC, SHF_INFO_LINK, SHT_GROUP, SHT_RELA, STT_SECTION
from ..elf.read import read_elf
from ..elf.rewrite import rewrite
from ..elf.write import OutSection
from .symbols import (
    CALLBACKS_SECTION,
    FUNCS_SECTION,
    KLP_RELA_PREFIX,
    RELOC_ENTRY,
    RELOCS_SECTION,
    SHF_RELA_LIVEPATCH,
    SHN_LIVEPATCH,
    parse_klp_symbol,
)

DROPPED = {RELOCS_SECTION, FUNCS_SECTION, CALLBACKS_SECTION}


def post_link(module: Path, output: Path | None = None) -> int:
    """Rewrite `module` (or write `output`); return the number of livepatch relocations made. A module
    without klpdiff's tables (one already post-linked, or none of klpdiff's) is left as it is."""
    obj = read_elf(module)
    if not any(s.name in DROPPED for s in obj.sections):
        if output is not None:
            atomic_write(output, read_input(module, "a module"))
        return 0
    table = obj.section_by_name(RELOCS_SECTION)
    if any(s.type == SHT_GROUP for s in obj.sections):
        raise InputError(f"{module}: section groups are not supported in a livepatch module")
    end = "<" if obj.little_endian else ">"
    klp_relocs: dict[tuple[str, int], list[tuple[int, int, int, int]]] = defaultdict(list)
    klp_symbols: set[int] = set()
    replaced: set[tuple[int, int, int]] = set()  # (section, offset, symbol) of the original relocations
    if table is not None:
        by_offset = {r.offset: r for r in table.relocs}
        for i in range(len(table.data) // RELOC_ENTRY):
            place, target = by_offset.get(i * RELOC_ENTRY), by_offset.get(i * RELOC_ENTRY + 8)
            if place is None or target is None:
                raise InputError(f"{module}: {RELOCS_SECTION} entry {i} lost its relocations")
            (rtype,) = struct.unpack_from(end + "I", table.data, i * RELOC_ENTRY + 16)
            psym = obj.symbols[place.sym]
            if not psym.is_defined:
                raise InputError(f"{module}: {RELOCS_SECTION} entry {i} points at undefined {psym.name}")
            offset = place.addend + (0 if psym.type == STT_SECTION else psym.value)
            parsed = parse_klp_symbol(obj.symbols[target.sym].name)
            if parsed is None:
                raise InputError(f"{module}: {RELOCS_SECTION} entry {i} names {obj.symbols[target.sym].name}, "
                                 f"not a .klp.sym symbol")
            klp_relocs[(parsed[0], psym.shndx)].append((offset, rtype, target.sym, target.addend))
            klp_symbols.add(target.sym)
            replaced.add((psym.shndx, offset, target.sym))

    def klp_sections(new_index: dict[int, int], sym_index: dict[int, int]) -> list[OutSection]:
        out = []
        for (objname, shndx), relocs in sorted(klp_relocs.items()):
            if shndx not in new_index:
                raise InputError(f"{module}: livepatch relocations target a section that is gone ({shndx})")
            name = f"{KLP_RELA_PREFIX}{objname}.{obj.sections[shndx].name}"
            out.append(OutSection(name, SHT_RELA, SHF_ALLOC | SHF_INFO_LINK | SHF_RELA_LIVEPATCH, 8, 24, b"", 0,
                                  relocs=[(off, typ, sym_index[sym], add) for off, typ, sym, add in relocs],
                                  info_to=new_index[shndx]))
        return out

    rewrite(obj, output or module, drop=DROPPED, extra_sections=klp_sections,
            rehome={i: SHN_LIVEPATCH for i in klp_symbols},
            keep_reloc=lambda shndx, r: (shndx, r.offset, r.sym) not in replaced)
    return sum(len(r) for r in klp_relocs.values())
