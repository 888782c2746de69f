"""The ELF64 structures as binary formats: the one table the reader (read.py) and the writer
(write.py) share.

In: a byte order. Out: `ElfStructs`, a `struct.Struct` for each structure klpdiff reads or writes,
as the ELF-64 object file format lays it out (the gABI: Elf64_Ehdr, Elf64_Shdr, Elf64_Sym,
Elf64_Rela, and the 32-bit words of an SHT_SYMTAB_SHNDX section).
"""

from __future__ import annotations

import struct
from functools import cache

from ..core.records import record


@record(eq=False)
class ElfStructs:
    """The ELF64 structures in one byte order."""

    ehdr: struct.Struct   # e_ident[16], e_type .. e_shstrndx: 64 bytes
    shdr: struct.Struct   # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info,
                          # sh_addralign, sh_entsize: 64 bytes
    sym: struct.Struct    # st_name, st_info, st_other, st_shndx, st_value, st_size: 24 bytes
    rela: struct.Struct   # r_offset, r_info (symbol << 32 | type), r_addend: 24 bytes
    word: struct.Struct   # an Elf64_Word (an SHT_SYMTAB_SHNDX entry): 4 bytes


@cache
def elf_structs(little: bool) -> ElfStructs:
    """The structures in little-endian (`little`) or big-endian byte order."""
    end = "<" if little else ">"
    return ElfStructs(ehdr=struct.Struct(end + "16sHHIQQQIHHHHHH"), shdr=struct.Struct(end + "IIQQQQIIQQ"),
                      sym=struct.Struct(end + "IBBHQQ"), rela=struct.Struct(end + "QQq"),
                      word=struct.Struct(end + "I"))
