"""load reads the ELF header itself: extended section numbering as the spec says, and a header that
is not an ELF64 relocatable object's is bad input with its reason."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from klpdiff.core.errors import InputError
from klpdiff.elf.model import STT_SECTION, Symbol
from klpdiff.elf.read import read_elf

from .test_cli import pair  # noqa: F401 - the example pair fixture


def _patched(src: Path, dst: Path, **fields: int) -> Path:
    """A copy of `src` with ELF header fields or section 0's sh_size / sh_link changed."""
    data = bytearray(src.read_bytes())
    shoff = struct.unpack_from("<Q", data, 40)[0]
    where = {"e_type": (16, "<H"), "e_shentsize": (58, "<H"), "e_shnum": (60, "<H"), "e_shstrndx": (62, "<H"),
             "ei_class": (4, "<B"), "sh0_size": (shoff + 32, "<Q"), "sh0_link": (shoff + 40, "<I")}
    for name, value in fields.items():
        offset, fmt = where[name]
        struct.pack_into(fmt, data, offset, value)
    dst.write_bytes(bytes(data))
    return dst


def test_extended_section_numbering_reads_the_same_object(pair: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811
    plain = read_elf(pair[0])
    shnum, shstrndx = struct.unpack_from("<HH", pair[0].read_bytes(), 60)
    extended = read_elf(_patched(pair[0], tmp_path / "x.o", e_shnum=0, e_shstrndx=0xFFFF, sh0_size=shnum,
                                 sh0_link=shstrndx))
    assert [s.name for s in extended.sections] == [s.name for s in plain.sections]
    assert [(s.name, s.value) for s in extended.symbols] == [(s.name, s.value) for s in plain.symbols]
    assert extended.machine == plain.machine == 62 and extended.e_flags == plain.e_flags


@pytest.mark.parametrize(("fields", "reason"), [
    ({"ei_class": 1}, "ELF32 objects are not supported"),
    ({"ei_class": 7}, "malformed ELF file (class 7"),
    ({"e_type": 2}, "not a relocatable object (e_type 2)"),
    ({"e_shentsize": 40}, "entries of 40 bytes"),
    ({"e_shnum": 0xFFF0}, "section headers run past the end"),
    ({"e_shstrndx": 0}, "section name table index 0 is out of range"),
])
def test_a_bad_header_is_bad_input_with_its_reason(pair: tuple[Path, Path], tmp_path: Path,  # noqa: F811
                                                   fields: dict[str, int], reason: str) -> None:
    bad = _patched(pair[0], tmp_path / "bad.o", **fields)
    with pytest.raises(InputError, match=r"bad\.o: .*" + re.escape(reason)):
        read_elf(bad)


def test_a_null_symbol_that_names_a_section_is_bad_input(pair: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811
    """Found by the fuzzer: symbol 0 with st_shndx set passed validation (which began at symbol 1) and
    crashed a later stage (exit 4)."""
    data = bytearray(pair[0].read_bytes())
    elf = read_elf(pair[0])
    symtab = next(s for s in elf.sections if s.name == ".symtab")
    shoff = struct.unpack_from("<Q", data, 40)[0]
    sym_offset = struct.unpack_from("<Q", data, shoff + symtab.index * 64 + 24)[0]
    struct.pack_into("<H", data, sym_offset + 6, 0x7FFF)
    bad = tmp_path / "null.o"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"null\.o: symbol 0, which the ELF spec reserves"):
        read_elf(bad)


def test_a_symbol_table_alone_reads_as_the_object_does(pair: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811
    from klpdiff.elf.read import read_symbols

    def row(sym: Symbol) -> tuple[object, ...]:  # (an object's section symbols take their section's name)
        return sym.name if sym.type != STT_SECTION else "", sym.value, sym.size, sym.type, sym.bind, sym.shndx

    whole, alone = read_elf(pair[0]).symbols, read_symbols(pair[0])
    assert len(alone) > 10 and [row(s) for s in alone] == [row(s) for s in whole]
    data = pair[0].read_bytes()
    cases = {"empty": (b"", "empty file"), "short": (data[:10], "identification bytes are cut short"),
             "cut": (data[: len(data) // 2], "past the end"), "text": (b"not an elf at all", "not an ELF file")}
    for name, (content, words) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError, match=re.escape(words)):
            read_symbols(tmp_path / name)


def test_a_damaged_symbol_table_file_is_bad_input_or_read_never_a_crash(pair: tuple[Path, Path],  # noqa: F811
                                                                        tmp_path: Path) -> None:
    # --symtab takes any file the user names: bytes changed anywhere in the headers and tables that
    # read_symbols follows give symbols or one InputError, never another exception
    import random

    from klpdiff.elf.read import read_symbols

    data = pair[0].read_bytes()
    shoff = struct.unpack_from("<Q", data, 40)[0]
    rng = random.Random(2026)
    target = tmp_path / "damaged"
    outcomes = {"read": 0, "refused": 0}
    for _ in range(300):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            where = rng.choice([rng.randrange(64), rng.randrange(shoff, len(data))])
            damaged[where] = rng.randrange(256)
        target.write_bytes(bytes(damaged))
        try:
            read_symbols(target)
            outcomes["read"] += 1
        except InputError:
            outcomes["refused"] += 1
    assert outcomes["read"] and outcomes["refused"]
