"""Relocations that come in pairs, on riscv64 (rules/riscv64/relocations.yaml: `subtracts`, `names_partner`):
the written object keeps each pair whole and loadable, built with Debian's cross compiler."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from .conftest import need_tool

EXAMPLE = Path(__file__).resolve().parent / "examples" / "relocation-pairs.c"
FLAGS = ["-O2", "-mabi=lp64", "-march=rv64imac_zicsr_zifencei", "-mcmodel=medany", "-mno-relax", "-Wa,-mno-relax",
         "-fpatchable-function-entry=4", "-fno-asynchronous-unwind-tables", "-ffunction-sections", "-fdata-sections",
         "-fno-common", "-ffreestanding", "-fno-stack-protector", "-g", "-c"]
ADD32, SUB32, GOT_HI20, PCREL_HI20, PCREL_LO12_I, PCREL_LO12_S = 35, 39, 20, 23, 24, 25


def _pair(tmp_path: Path, *defines: str) -> tuple[Path, Path]:
    gcc = need_tool("riscv64", "gcc")
    orig, patched = tmp_path / "a.o", tmp_path / "b.o"
    subprocess.run([gcc, *FLAGS, *defines, str(EXAMPLE), "-o", str(orig)], check=True)
    subprocess.run([gcc, *FLAGS, *defines, "-DPATCHED", str(EXAMPLE), "-o", str(patched)], check=True)
    return orig, patched


def _diff(orig: Path, patched: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "klpdiff.cli", str(orig), str(patched), "-o", str(out)],
                          capture_output=True, text=True)


def test_pairs_are_written_whole_and_the_object_links(tmp_path: Path) -> None:
    orig, patched = _pair(tmp_path)
    out = tmp_path / "out.o"
    proc = _diff(orig, patched, out)
    assert proc.returncode == 0, proc.stderr
    assert "__bug_table: kept 1 of 2" in proc.stdout
    with out.open("rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        symbols = list(symtab.iter_symbols())
        undefined = [s.name for s in symbols if s["st_shndx"] == "SHN_UNDEF" and s.name]
        assert sorted(undefined) == ["counter", "printk"]  # no assembler label became an undefined symbol
        relocs = {sec.name: list(sec.iter_relocations()) for sec in elf.iter_sections()
                  if isinstance(sec, RelocationSection)}
        bug = relocs[".rela__bug_table"]
        assert [r["r_info_type"] for r in bug] == [ADD32, SUB32] and bug[0]["r_offset"] == bug[1]["r_offset"] == 0
        assert symbols[bug[0]["r_info_sym"]].name == "foo"  # the entry reaches the copied function
        own = symbols[bug[1]["r_info_sym"]]  # and subtracts its own new place
        assert own["st_info"]["type"] == "STT_SECTION" and elf.get_section(own["st_shndx"]).name == "__bug_table"
        assert bug[1]["r_addend"] == 0
        code = relocs[".rela.text.foo"]
        his = {r["r_offset"] for r in code if r["r_info_type"] in (GOT_HI20, PCREL_HI20)}  # (an extern: the GOT)
        los = [r for r in code if r["r_info_type"] in (PCREL_LO12_I, PCREL_LO12_S)]
        assert los and all(symbols[r["r_info_sym"]]["st_value"] in his and r["r_addend"] == 0 for r in los)
    ld = need_tool("riscv64", "ld")
    subprocess.run([ld, "-r", "-o", str(tmp_path / "r.o"), str(out)], check=True)
    stub = tmp_path / "stub.c"
    stub.write_text("int counter;\nint printk(const char *fmt, ...) { return 0; }\nvoid _start(void) {}\n")
    gcc = need_tool("riscv64", "gcc")
    subprocess.run([gcc, *FLAGS, str(stub), "-o", str(tmp_path / "stub.o")], check=True)
    linked = subprocess.run([ld, "--no-relax", "-o", str(tmp_path / "linked"), str(out), str(tmp_path / "stub.o")],
                            capture_output=True, text=True)
    assert linked.returncode == 0, linked.stderr  # every PCREL_LO12 finds its PCREL_HI20


HI20, LO12_I, LO12_S = 26, 27, 28
KERNEL_ADDRESS = 0xFFFFFFFF80123458  # where the kernel image would hold `counter` (the top 2 GiB)


def _decode(word: int) -> tuple[int, int, int, int]:
    """(opcode, rd, rs1, immediate) of a 32-bit instruction: U-type for lui/auipc, I or S-type else."""
    opcode, rd, rs1 = word & 0x7F, (word >> 7) & 0x1F, (word >> 15) & 0x1F
    if opcode in (0x17, 0x37):
        return opcode, rd, rs1, (word >> 12) << 12
    imm = ((word >> 25) << 5) | ((word >> 7) & 0x1F) if opcode == 0x23 else word >> 20  # a store splits it
    return opcode, rd, rs1, imm - ((imm >> 11) << 12)


def test_an_auipc_pair_to_a_static_of_the_running_kernel_becomes_an_absolute_livepatch_pair(tmp_path: Path) -> None:
    """A static the livepatch core must resolve cannot stay an auipc pair: its HI20 goes to a .klp.rela
    section and the loader could not find it from the LO12s. Each auipc becomes a lui, and HI20 and
    LO12s name `counter` itself; linked with the symbol at a kernel address, every access computes it."""
    orig, patched = _pair(tmp_path, "-DSTATIC_COUNTER")
    out = tmp_path / "out.o"
    proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", str(orig), str(patched), "-o", str(out),
                           "--symtab", str(orig)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    klp_name = ".klp.sym.vmlinux.counter,0"
    with out.open("rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        symbols = list(symtab.iter_symbols())
        rela = elf.get_section_by_name(".rela.text.foo")
        assert isinstance(rela, RelocationSection)
        text_foo = elf.get_section_by_name(".text.foo")
        assert text_foo is not None
        code = text_foo.data()
        to_counter = [r for r in rela.iter_relocations() if symbols[r["r_info_sym"]].name == klp_name]
    types = sorted(r["r_info_type"] for r in to_counter)
    assert types and set(types) <= {HI20, LO12_I, LO12_S} and types.count(HI20) >= 1, types
    for r in to_counter:
        if r["r_info_type"] == HI20:
            assert _decode(int.from_bytes(code[r["r_offset"]:r["r_offset"] + 4], "little"))[0] == 0x37  # lui
    # link with the symbol at a kernel address: the lui pairs must compute it
    ld, gcc = need_tool("riscv64", "ld"), need_tool("riscv64", "gcc")
    stub = tmp_path / "stub.s"
    stub.write_text(f'.globl "{klp_name}"\n.set "{klp_name}", {KERNEL_ADDRESS:#x}\n.globl printk\n.text\nprintk:\n'
                    "ret\n.globl _start\n_start:\nret\n")
    subprocess.run([gcc, *FLAGS, str(stub), "-o", str(tmp_path / "stub.o")], check=True)
    linked = tmp_path / "linked"
    subprocess.run([ld, "--no-relax", "-o", str(linked), str(out), str(tmp_path / "stub.o")], check=True)
    with linked.open("rb") as f:
        elf = ELFFile(f)
        syms = elf.get_section_by_name(".symtab")
        assert isinstance(syms, SymbolTableSection)
        foo = next(s for s in syms.iter_symbols() if s.name == "foo")
        text = next(sec for sec in elf.iter_sections()
                    if sec["sh_addr"] <= foo["st_value"] < sec["sh_addr"] + sec["sh_size"])
        body = text.data()[foo["st_value"] - text["sh_addr"]:][:foo["st_size"]]
    highs: dict[int, int] = {}
    computed = []
    for r in sorted(to_counter, key=lambda r: r["r_offset"]):
        _opcode, rd, rs1, imm = _decode(int.from_bytes(body[r["r_offset"]:r["r_offset"] + 4], "little"))
        if r["r_info_type"] == HI20:
            highs[rd] = imm - ((imm >> 31) << 32)
        else:
            computed.append((highs[rs1] + imm) & 0xFFFFFFFFFFFFFFFF)
    assert computed and all(address == KERNEL_ADDRESS for address in computed), [hex(a) for a in computed]


def test_an_auipc_pair_to_a_module_static_is_refused_by_name(tmp_path: Path) -> None:
    """A module loads below the kernel image, out of an absolute lui pair's reach."""
    orig, patched = _pair(tmp_path, "-DSTATIC_COUNTER")
    out = tmp_path / "out.o"
    proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", str(orig), str(patched), "-o", str(out),
                           "--symtab", str(orig), "--objname", "demo"], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "foo reaches counter of module demo through an auipc pair" in proc.stderr
    assert not out.exists()


def test_line_tables_read_address_pairs(tmp_path: Path) -> None:
    """riscv64's line programs advance the address by ADD16/SUB16 pairs (the operand itself is 0): read
    with the pair, the line of every `li a1, LINE` before a __might_sleep call is LINE, as the source says."""
    from klpdiff.diff.pipeline import Options, analyse
    from klpdiff.elf.linetables import line_table

    src = tmp_path / "lines.c"
    src.write_text("extern void __might_sleep(const char *file, int line);\n#line 1000\n"  # (li, not c.li)
                   + "".join(f"int f{n}(int x)\n{{\n\tif (x > {n})\n\t\t__might_sleep(\"f\", __LINE__);\n"
                             f"\treturn x;\n}}\n" for n in range(6)))
    gcc = need_tool("riscv64", "gcc")
    obj = tmp_path / "lines.o"
    subprocess.run([gcc, *FLAGS, str(src), "-o", str(obj)], check=True)
    analysis = analyse(obj, obj, Options())
    table = line_table(analysis.patched, analysis.rules.subtracting)
    assert table is not None
    code = {s.name: s for s in analysis.patched.symbols if s.name.startswith("f") and s.size}
    found = 0
    for sym in code.values():
        data = analysis.patched.sections[sym.shndx].data
        for at in range(sym.value, sym.value + sym.size - 3, 2):
            word = int.from_bytes(data[at:at + 4], "little")
            if word & 0xFFFFF == 0x00593:  # addi a1, zero, imm (li a1, imm)
                assert table.line_at(sym.shndx, at) == word >> 20, (sym.name, hex(at))
                found += 1
    assert found == 6
    assert line_table(analysis.patched) != table  # without the pairs, the addresses are wrong
