#!/usr/bin/env python3
"""Check that a livepatch module carries ORC unwind data for every function it defines (x86_64).

usage: orc_check.py MODULE.ko   -- exit 0 and one line when every defined function with code has at
least one .orc_unwind_ip entry inside it; exit 1 naming the functions without one.

The consistency model needs reliable stack traces through the new code; on x86_64 the unwinder finds
them through the module's ORC tables (.orc_unwind_ip: s32 pointers to code, relocated).
"""

from __future__ import annotations

import sys
from collections import defaultdict

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection


def main(path: str) -> int:
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        symtab = elf.get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        functions = [s for s in symtab.iter_symbols() if s["st_info"]["type"] == "STT_FUNC"
                     and isinstance(s["st_shndx"], int) and s["st_size"] > 0]
        covered: dict[tuple[int, int], int] = defaultdict(int)  # (section, offset) of each ORC ip
        rela = elf.get_section_by_name(".rela.orc_unwind_ip")
        if isinstance(rela, RelocationSection):
            for r in rela.iter_relocations():
                sym = symtab.get_symbol(r["r_info_sym"])
                if isinstance(sym["st_shndx"], int):
                    covered[(sym["st_shndx"], sym["st_value"] + r["r_addend"])] += 1
        missing = []
        for f in functions:
            lo, hi = f["st_value"], f["st_value"] + f["st_size"]
            if not any(shndx == f["st_shndx"] and lo <= off < hi for shndx, off in covered):
                missing.append(f.name)
    if missing:
        print(f"{path}: no ORC unwind data for {len(missing)} function(s): {', '.join(sorted(missing))}")
        return 1
    print(f"{path}: ORC unwind data for all {len(functions)} function(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
