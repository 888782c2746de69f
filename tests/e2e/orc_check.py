#!/usr/bin/env python3
"""Check that a livepatch module carries ORC unwind data for every function it defines (x86_64).

usage: orc_check.py MODULE.ko [--linux X.Y]   -- exit 0 and one line when every defined function with code
is covered; exit 1 naming the functions that are not. --linux names the kernel the module is for
(default: 6.4 or later), whose ORC encoding the check reads.

The consistency model needs reliable stack traces through the new code; on x86_64 the unwinder finds
them through the module's ORC tables: .orc_unwind_ip (s32 pointers to code, relocated) and the parallel
.orc_unwind (6-byte struct orc_entry, arch/x86/include/asm/orc_types.h). From Linux 6.4 it is {s16
sp_offset; s16 bp_offset; u16 sp_reg:4, bp_reg:4, type:3, signal:1} and type 0 is ORC_TYPE_UNDEFINED;
before, {...; u16 sp_reg:4, bp_reg:4, type:2, end:1}, type 0 is a call frame and an entry is undefined
when its sp_reg is ORC_REG_UNDEFINED (0) and it is not the end of the stack. An entry covers the code
from its address up to the next entry's, so a function is covered when the last entry at or before its
start, in its section, is defined. With call padding (`-fpatchable-function-entry`), objtool puts that
entry at the padding before the function.
"""

from __future__ import annotations

import struct
import sys
from collections import defaultdict

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

ORC_TYPE_UNDEFINED = 0  # 6.4 and later
ORC_REG_UNDEFINED = 0


def undefined(bits: int, linux: tuple[int, int]) -> bool:
    """Whether an orc_entry's third u16 (registers and type) marks code the unwinder cannot pass."""
    if linux >= (6, 4):
        return (bits >> 8) & 7 == ORC_TYPE_UNDEFINED
    return bits & 0xF == ORC_REG_UNDEFINED and not (bits >> 10) & 1


def main(path: str, linux: tuple[int, int] = (6, 4)) -> int:
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        symtab = elf.get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        functions = [s for s in symtab.iter_symbols() if s["st_info"]["type"] == "STT_FUNC"
                     and isinstance(s["st_shndx"], int) and s["st_size"] > 0]
        entries = elf.get_section_by_name(".orc_unwind")
        table = entries.data() if entries is not None else b""
        ips: dict[int, list[tuple[int, int]]] = defaultdict(list)  # section -> [(offset, 1 if undefined)]
        rela = elf.get_section_by_name(".rela.orc_unwind_ip")
        if isinstance(rela, RelocationSection):
            for r in rela.iter_relocations():
                sym = symtab.get_symbol(r["r_info_sym"])
                n = r["r_offset"] // 4
                if isinstance(sym["st_shndx"], int) and 6 * n + 6 <= len(table):
                    (bits,) = struct.unpack_from("<H", table, 6 * n + 4)
                    ips[sym["st_shndx"]].append((sym["st_value"] + r["r_addend"], int(undefined(bits, linux))))
        missing = []
        for f in functions:
            before = [(off, typ) for off, typ in ips.get(f["st_shndx"], []) if off <= f["st_value"]]
            if not before or max(before)[1]:
                missing.append(f.name)
    if missing:
        print(f"{path}: no ORC unwind data for {len(missing)} function(s): {', '.join(sorted(missing))}")
        return 1
    print(f"{path}: ORC unwind data for all {len(functions)} function(s)")
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    version = (6, 4)
    if "--linux" in args:
        at = args.index("--linux")
        major, minor = args[at + 1].split(".")[:2]
        version = (int(major), int(minor))
        del args[at:at + 2]
    sys.exit(main(args[0], version))
