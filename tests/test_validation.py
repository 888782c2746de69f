"""Corrupt input is bad input (exit 1, one line naming the file and the problem), never an internal
error or an accepted object: one case per check of load.validate, on a real compiled object."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from .conftest import ROOT, need_tool

FLAGS = ["-O2", "-fno-pie", "-mcmodel=kernel", "-pg", "-mfentry", "-mrecord-mcount", "-ffunction-sections",
         "-fdata-sections", "-fno-asynchronous-unwind-tables", "-c"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    gcc = need_tool("x86_64", "gcc")
    work = tmp_path_factory.mktemp("valid")
    example = ROOT / "tests" / "examples" / "cmdline.c"
    subprocess.run([gcc, *FLAGS, str(example), "-o", str(work / "a.o")], check=True)
    subprocess.run([gcc, *FLAGS, "-DPATCHED", str(example), "-o", str(work / "b.o")], check=True)
    return work / "a.o", work / "b.o"


def _section(data: bytearray, name: str) -> tuple[int, int, int]:
    """(file offset, size, index) of a section."""
    import io

    elf = ELFFile(io.BytesIO(bytes(data)))
    for i, sec in enumerate(elf.iter_sections()):
        if sec.name == name:
            return sec["sh_offset"], sec["sh_size"], i
    raise KeyError(name)


def _symbol_entry(data: bytearray, name: str) -> int:
    """File offset of a symbol's Elf64_Sym."""
    off, size, _ = _section(data, ".symtab")
    strtab_off, _, _ = _section(data, ".strtab")
    for entry in range(off, off + size, 24):
        (st_name,) = struct.unpack_from("<I", data, entry)
        if data[strtab_off + st_name:].split(b"\0", 1)[0] == name.encode():
            return entry
    raise KeyError(name)


def _sym_shndx(value: int | str) -> Callable[[bytearray], None]:
    def corrupt(data: bytearray) -> None:
        shndx = _section(data, value)[2] if isinstance(value, str) else value
        struct.pack_into("<H", data, _symbol_entry(data, "cmdline_proc_show") + 6, shndx)
    return corrupt


def _sym_size(data: bytearray) -> None:
    struct.pack_into("<Q", data, _symbol_entry(data, "cmdline_proc_show") + 16, 0x100000)


def _rela(field: str, value: int) -> Callable[[bytearray], None]:
    def corrupt(data: bytearray) -> None:
        off, _, _ = _section(data, ".rela.text.cmdline_proc_show")
        if field == "offset":
            struct.pack_into("<Q", data, off, value)
        else:
            (info,) = struct.unpack_from("<Q", data, off + 8)
            info = (value << 32) | (info & 0xFFFFFFFF) if field == "sym" else (info & ~0xFFFFFFFF) | value
            struct.pack_into("<Q", data, off + 8, info)
    return corrupt


def _file_symbol_index(data: bytearray) -> int:
    off, size, _ = _section(data, ".symtab")
    return next((entry - off) // 24 for entry in range(off, off + size, 24) if data[entry + 4] & 0xF == 4)


def _rela_to_file(data: bytearray) -> None:
    _rela("sym", _file_symbol_index(data))(data)


def _align(data: bytearray) -> None:
    import io

    elf = ELFFile(io.BytesIO(bytes(data)))
    index = next(i for i, sec in enumerate(elf.iter_sections()) if sec.name == ".text.cmdline_proc_show")
    struct.pack_into("<Q", data, elf["e_shoff"] + 64 * index + 48, 1 << 40)


def _strtab_unterminated(data: bytearray) -> None:
    off, size, _ = _section(data, ".strtab")
    data[off + size - 1] = ord("x")


CASES: dict[str, tuple[Callable[[bytearray], None], str]] = {
    "symbol in a missing section": (_sym_shndx(0x7000), "symbol cmdline_proc_show is in section 28672, "
                                                        "which does not exist"),
    "symbol in the symbol table": (_sym_shndx(".symtab"), "symbol cmdline_proc_show is defined in .symtab, "
                                                          "which holds no code or data"),
    "symbol larger than its section": (_sym_size, "runs past the end of .text.cmdline_proc_show"),
    "relocation outside its section": (_rela("offset", 0xFFFFFF), "lies outside .text.cmdline_proc_show"),
    "relocation against a FILE symbol": (_rela_to_file, "names FILE symbol"),
    "relocation of an unknown type": (_rela("type", 0xFFF), "relocation type 4095 in .text.cmdline_proc_show"),
    "string table without its NUL": (_strtab_unterminated, "string table .strtab does not end with a NUL byte"),
    "absurd alignment": (_align, "section .text.cmdline_proc_show has alignment 0x10000000000"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_corrupt_objects_are_bad_input(pair: tuple[Path, Path], tmp_path: Path, case: str) -> None:
    corrupt, message = CASES[case]
    data = bytearray(pair[1].read_bytes())
    corrupt(data)
    bad = tmp_path / "bad.o"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out.o"
    proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", str(pair[0]), str(bad), "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(bad) in lines[0] and message in lines[0], lines[0]
    assert not out.exists()


def test_a_section_or_symbol_name_is_exact_unless_it_starts_with_a_caret(tmp_path: Path) -> None:
    """One convention for names in every rule kind: a marker's or a string filter's `section:` is exact
    text like a special section's `name:` ('.' is a dot), a regular expression only from a leading ^."""
    from klpdiff.ruleset.load import default_rules_dir, load_ruleset

    extra = tmp_path / "extra"
    (extra / "x86_64").mkdir(parents=True)
    (extra / "sections.yaml").write_text("kind: sections\nmarkers:\n  - section: .kpatch.x\n    effect: include\n"
                                         "strings:\n  - section: '^\\.my(str|s)$'\n    keep: 'true'\n")
    rs = load_ruleset([default_rules_dir(), extra], "x86_64")
    exact, pattern = rs.markers[-1].section, rs.string_filters[-1].section
    assert exact.search(".kpatch.x") and not exact.search("_kpatch_x") and not exact.search(".kpatch.x.y")
    assert pattern.search(".mystr") and pattern.search(".mys") and not pattern.search(".mystring")
