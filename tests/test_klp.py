"""Livepatch relocations (--symtab/--symvers) and post-link, checked with readelf -rsW facts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from .conftest import need_tool

FLAGS = ["-O2", "-fno-pie", "-mcmodel=kernel", "-pg", "-mfentry", "-mrecord-mcount", "-ffunction-sections",
         "-fdata-sections", "-fno-asynchronous-unwind-tables", "-c"]

OTHER_FILE = """
__attribute__((noipa)) static int dup_helper(int x) { return x - 1; }
int other_user(int x) { return dup_helper(x) * 2; }
int internal_global = 5;
"""

TARGET_FILE = """
extern int exported_fn(int);
extern int internal_global;
static int counter;
__attribute__((noipa)) static int dup_helper(int x) { return x + counter; }
int changed(int x)
{
#ifdef PATCHED
    counter += 2;
    return dup_helper(x) + exported_fn(x) + internal_global;
#else
    return dup_helper(x);
#endif
}
int unrelated(int x) { counter++; return dup_helper(x) + 7; }
"""


def klpdiff(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "klpdiff.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A fake running kernel (two files linked, each with its own static dup_helper) and the target pair."""
    gcc, ld = need_tool("x86_64", "gcc"), need_tool("x86_64", "ld")
    work = tmp_path_factory.mktemp("klp")
    # the other file has the same name (as fs/inode.c and fs/proc/inode.c do): FILE blocks must not merge
    (work / "sub").mkdir()
    (work / "sub" / "target.c").write_text(OTHER_FILE)
    (work / "target.c").write_text(TARGET_FILE)
    for name, src, extra in (("other", work / "sub" / "target.c", []), ("target", work / "target.c", []),
                             ("target.patched", work / "target.c", ["-DPATCHED"])):
        subprocess.run([gcc, *FLAGS, *extra, str(src), "-o", str(work / f"{name}.o")], check=True)
    subprocess.run([ld, "-e", "0", "--unresolved-symbols=ignore-all", str(work / "other.o"), str(work / "target.o"),
                    "-o", str(work / "vmlinux")], check=True)
    (work / "Module.symvers").write_text("0x12345678\texported_fn\tvmlinux\tEXPORT_SYMBOL\t\n")
    return {"work": work, "vmlinux": work / "vmlinux", "symvers": work / "Module.symvers",
            "orig": work / "target.o", "patched": work / "target.patched.o"}


def _symbols(path: Path) -> dict[str, tuple[str, str, object]]:
    with path.open("rb") as fh:
        symtab = ELFFile(fh).get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        return {s.name: (s["st_info"]["bind"], s["st_info"]["type"], s["st_shndx"]) for s in symtab.iter_symbols()}


def test_unexported_references_become_klp_symbols(kernel: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.o"
    readelf = need_tool("x86_64", "readelf")
    symtab_text = tmp_path / "vmlinux.symtab"
    symtab_text.write_text(subprocess.run([readelf, "-sW", str(kernel["vmlinux"])], capture_output=True,
                                          text=True, check=True).stdout)
    for symtab in (kernel["vmlinux"], symtab_text):  # the ELF itself or readelf -sW text
        proc = klpdiff(kernel["orig"], kernel["patched"], "-o", out, "--symtab", symtab,
                       "--symvers", kernel["symvers"])
        assert proc.returncode == 0, proc.stderr
        syms = _symbols(out)
        # dup_helper: static, two in the kernel; target.o is linked second, so it is the 2nd by address
        assert syms[".klp.sym.vmlinux.dup_helper,2"] == ("STB_WEAK", "STT_FUNC", "SHN_UNDEF")
        assert syms[".klp.sym.vmlinux.counter,0"][2] == "SHN_UNDEF"
        assert ".klp.sym.vmlinux.internal_global,0" in syms        # global but not exported
        assert syms["exported_fn"] == ("STB_GLOBAL", "STT_NOTYPE", "SHN_UNDEF")  # exported: plain reference
        assert "dup_helper" not in syms and "counter" not in syms
    relocs = subprocess.run([readelf, "-rW", str(out)], capture_output=True, text=True, check=True).stdout
    text_relocs = relocs.split("'.rela.text.changed'")[1].split("Relocation section")[0]
    # the originals stay in place against the weak placeholders (objtool reads them at the module's link);
    # post-link removes them (test_post_link_makes_klp_rela_sections)
    assert "exported_fn" in text_relocs and ".klp.sym.vmlinux.dup_helper,2 - 4" in text_relocs
    table = relocs.split("'.rela.klpdiff.relocs'")[1]
    assert "R_X86_64_64" in table and ".klp.sym.vmlinux.dup_helper,2 - 4" in table
    assert ".text.changed +" in table
    with out.open("rb") as fh:
        funcs_sec = ELFFile(fh).get_section_by_name(".klpdiff.funcs")
        assert funcs_sec is not None
        funcs = funcs_sec.data().decode()
    assert funcs == "vmlinux changed 0\n"


def test_post_link_makes_klp_rela_sections(kernel: dict[str, Path], tmp_path: Path) -> None:
    out, linked = tmp_path / "out.o", tmp_path / "livepatch-test.ko"
    assert klpdiff(kernel["orig"], kernel["patched"], "-o", out, "--symtab", kernel["vmlinux"],
                   "--symvers", kernel["symvers"]).returncode == 0
    gcc, ld, readelf = need_tool("x86_64", "gcc"), need_tool("x86_64", "ld"), need_tool("x86_64", "readelf")
    glue = tmp_path / "glue.c"
    glue.write_text("int glue_init(void) { return 0; }\n")
    subprocess.run([gcc, *FLAGS, str(glue), "-o", str(tmp_path / "glue.o")], check=True)
    subprocess.run([ld, "-r", str(out), str(tmp_path / "glue.o"), "-o", str(linked)], check=True)
    proc = klpdiff("post-link", linked)
    assert proc.returncode == 0, proc.stderr
    assert "3 livepatch relocation(s)" in proc.stdout  # dup_helper, counter, internal_global
    with linked.open("rb") as fh:
        elf = ELFFile(fh)
        klp = elf.get_section_by_name(".klp.rela.vmlinux..text.changed")
        assert klp is not None and klp["sh_type"] == "SHT_RELA"
        assert klp["sh_flags"] & 0x00100000 and klp["sh_flags"] & 0x2 and klp["sh_flags"] & 0x40
        assert elf.get_section(klp["sh_info"]).name == ".text.changed"
        assert elf.get_section(klp["sh_link"]).name == ".symtab"
        assert elf.get_section_by_name(".klpdiff.relocs") is None
        symtab = elf.get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        klp_syms = {s.name: s["st_shndx"] for s in symtab.iter_symbols() if s.name.startswith(".klp.sym.")}
    assert klp_syms and all(v == 0xFF20 for v in klp_syms.values()), klp_syms
    relocs = subprocess.run([readelf, "-rW", str(linked)], capture_output=True, text=True).stdout
    assert ".klp.sym.vmlinux.dup_helper,2 - 4" in relocs.split(".klp.rela.vmlinux..text.changed")[1]
    text_relocs = relocs.split("'.rela.text.changed'")[1].split("Relocation section")[0]
    assert "exported_fn" in text_relocs and ".klp.sym" not in text_relocs  # the originals are gone
    assert subprocess.run([readelf, "-aW", str(linked)], capture_output=True, text=True).stderr == ""


def test_unresolvable_static_is_refused_clearly(kernel: dict[str, Path], tmp_path: Path) -> None:
    symtab = tmp_path / "empty.symtab"
    symtab.write_text("Symbol table '.symtab' contains 2 entries:\n"
                      "     1: ffffffff81000000    10 FUNC    GLOBAL DEFAULT    1 something_else\n")
    out = tmp_path / "out.o"
    proc = klpdiff(kernel["orig"], kernel["patched"], "-o", out, "--symtab", symtab)
    assert proc.returncode == 1
    assert "cannot find static symbol" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_module_glue_and_aliases(kernel: dict[str, Path], tmp_path: Path) -> None:
    """`klpdiff module` parts that need no kernel tree: the global aliases and the klp_patch glue."""
    from klpdiff.klp.module import glue_source, prepare_object

    out = tmp_path / "out.o"
    assert klpdiff(kernel["orig"], kernel["patched"], "-o", out, "--symtab", kernel["vmlinux"],
                   "--symvers", kernel["symvers"]).returncode == 0
    tables = prepare_object(out, 3, tmp_path / "diff3.o_shipped")
    funcs = tables.funcs
    assert not tables.callbacks
    assert [(f.objname, f.old_name, f.sympos, f.new_symbol) for f in funcs] == \
        [("vmlinux", "changed", 0, "__klpdiff_3_changed")]
    syms = _symbols(tmp_path / "diff3.o_shipped")
    assert syms["__klpdiff_3_changed"][:2] == ("STB_GLOBAL", "STT_FUNC")
    assert syms["changed"][0] == "STB_LOCAL"  # the patched function itself stays local
    glue = glue_source("demo", funcs, replace=True)
    assert '{ .old_name = "changed", .new_func = __klpdiff_3_changed, .old_sympos = 0 },' in glue
    assert "{ .name = NULL, .funcs = funcs_vmlinux, }," in glue and ".replace = true," in glue
    assert "klp_enable_patch(&patch)" in glue and 'MODULE_INFO(livepatch, "Y");' in glue
    proc = klpdiff("module", "--kdir", tmp_path, "--name", "demo", out)
    assert proc.returncode == 1 and "not a kernel build tree" in proc.stderr


def test_glue_wires_callbacks_also_for_objects_without_functions() -> None:
    from klpdiff.core.errors import InputError
    from klpdiff.klp.module import PatchCallback, PatchedFunc, glue_source

    funcs = [PatchedFunc("vmlinux", "cmdline_proc_show", 0, "__klpdiff_0_cmdline_proc_show")]
    callbacks = [PatchCallback("vmlinux", "pre_patch", "__klpdiff_0_pre_patch_vmlinux"),
                 PatchCallback("joydev", "post_unpatch", "__klpdiff_1_post_unpatch_joydev")]
    glue = glue_source("demo", funcs, True, callbacks)
    assert "extern int __klpdiff_0_pre_patch_vmlinux(struct klp_object *obj);" in glue
    assert "extern void __klpdiff_1_post_unpatch_joydev(struct klp_object *obj);" in glue
    assert ('{ .name = NULL, .funcs = funcs_vmlinux, .callbacks = { .pre_patch = __klpdiff_0_pre_patch_vmlinux, },'
            ' },') in glue
    # an object with callbacks only still gets its klp_object, with an empty (terminated) function list
    assert "static struct klp_func funcs_joydev[] = {\n\t{ }\n};" in glue
    assert '{ .name = "joydev", .funcs = funcs_joydev, .callbacks = { .post_unpatch = ' in glue
    with pytest.raises(InputError, match="two pre_patch callbacks for vmlinux"):
        glue_source("demo", funcs, True, [callbacks[0], callbacks[0]])


def test_ppc64le_toc_base_is_never_a_klp_symbol(tmp_path: Path) -> None:
    """.TOC. (the module's TOC base, arch.yaml linker_symbols) stays an ordinary reference."""
    gcc, ld = need_tool("ppc64le", "gcc"), need_tool("ppc64le", "ld")
    src = tmp_path / "t.c"
    src.write_text("extern int hidden_global;\nint use(int x)\n{\n#ifdef PATCHED\n    x += 3;\n#endif\n"
                   "    return x + hidden_global;\n}\nint hidden_global = 4;\n")
    flags = ["-O2", "-mcmodel=large", "-pg", "-mprofile-kernel", "-ffunction-sections", "-fdata-sections", "-c"]
    for name, extra in (("a", []), ("b", ["-DPATCHED"])):
        subprocess.run([gcc, *flags, *extra, str(src), "-o", str(tmp_path / f"{name}.o")], check=True)
    subprocess.run([ld, "-e", "0", "--unresolved-symbols=ignore-all", str(tmp_path / "a.o"), "-o",
                    str(tmp_path / "vmlinux")], check=True)
    out = tmp_path / "out.o"
    proc = klpdiff(tmp_path / "a.o", tmp_path / "b.o", "-o", out, "--symtab", tmp_path / "vmlinux")
    assert proc.returncode == 0, proc.stderr
    syms = _symbols(out)
    assert ".TOC." in syms and syms[".TOC."][2] == "SHN_UNDEF"
    assert not any(name.startswith(".klp.sym.") and ".TOC." in name for name in syms)


def test_reference_into_a_special_section_follows_its_entry(tmp_path: Path) -> None:
    """second() points at its own __bug_table entry, the 2nd in the input and the only one kept."""
    from klpdiff.authoring.cases import run_case

    need_tool("x86_64", "gcc")
    rules = Path(__file__).parent / "rules"
    result = run_case(rules / "x86_64" / "bug-entry-reference.yaml", "x86_64", tmp_path, [],
                      [rules / "include" / "x86_64", rules / "include" / "common"])
    assert not result.failures, result.failures
    assert result.outcome is not None and result.outcome.output is not None
    readelf = need_tool("x86_64", "readelf")
    relocs = subprocess.run([readelf, "-rW", str(result.outcome.output)], capture_output=True, text=True).stdout
    text = relocs.split("'.rela.text.second'")[1].split("Relocation section")[0]
    assert "__bug_table - 4" in text, text  # entry 0 of the output (it was entry 1: __bug_table + 8)


MODULE_KEYS = """
#include "kernel.h"
extern struct static_key vm_key, other_mod_key;
struct static_key own_key;
noinline int work(int x)
{
#ifdef PATCHED
	x += 2;
#endif
	if (static_branch_unlikely(&vm_key))
		x++;
	if (static_branch_unlikely(&KEY))
		x--;
	return x + own_key.enabled;
}
"""


@pytest.mark.parametrize(("key", "verdict", "reason"), [
    ("vm_key", 0, ""),                                      # exported by vmlinux: an ordinary relocation
    ("other_mod_key", 2, "owned by dm_mod, not vmlinux"),   # exported by another module
    ("own_key", 2, "owned by xfs, not vmlinux"),            # the patched module's own key
])
def test_module_jump_labels_are_refused_only_for_keys_a_module_owns(tmp_path: Path, key: str, verdict: int,
                                                                    reason: str) -> None:
    """kpatch and objtool refuse a jump label in module code when its key is owned by a module (the loader
    sets up jump labels before livepatch relocations reach such a key); a vmlinux key is fine."""
    gcc = need_tool("x86_64", "gcc")
    src = tmp_path / "t.c"
    src.write_text(MODULE_KEYS.replace("KEY", key))
    include = ["-I", str(Path(__file__).parent / "rules" / "include" / "x86_64"),
               "-I", str(Path(__file__).parent / "rules" / "include" / "common")]
    for name, extra in (("a", []), ("b", ["-DPATCHED"])):
        subprocess.run([gcc, *FLAGS, *include, *extra, str(src), "-o", str(tmp_path / f"{name}.o")], check=True)
    symtab = tmp_path / "xfs.symtab"  # the module's own symbols (readelf -sW of xfs.ko)
    symtab.write_text("Symbol table '.symtab' contains 3 entries:\n"
                      "     1: 0000000000000000    16 OBJECT  GLOBAL DEFAULT    5 own_key\n"
                      "     2: 0000000000000010    64 FUNC    GLOBAL DEFAULT    2 work\n")
    symvers = tmp_path / "Module.symvers"
    symvers.write_text("0x1\tvm_key\tvmlinux\tEXPORT_SYMBOL\t\n0x2\tother_mod_key\tdrivers/md/dm_mod\tEXPORT_SYMBOL\t\n")
    proc = klpdiff(tmp_path / "a.o", tmp_path / "b.o", "-o", tmp_path / "out.o", "--symtab", symtab,
                   "--symvers", symvers, "--objname", "xfs")
    assert proc.returncode == verdict, proc.stdout + proc.stderr
    if reason:
        assert f"static key {key} {reason}" in proc.stderr


def test_a_reason_is_listed_once_however_many_call_sites_give_it(tmp_path: Path) -> None:
    from klpdiff.authoring.cases import compiler_for
    from klpdiff.diff.pipeline import Options, analyse
    from klpdiff.ruleset.load import default_rules_dir

    gcc, cflags, _prefix = compiler_for([default_rules_dir()], "ppc64le")
    if gcc is None:
        pytest.skip("no ppc64le cross compiler (apt-get install gcc-powerpc64le-linux-gnu)")
    src = tmp_path / "t.c"
    # the medium code model reaches `counter` TOC-relative at several places, each refused for the same reason
    src.write_text("static int counter;\n"
                   "int caller(int x)\n{\n#ifdef PATCHED\n\tx += 2;\n#endif\n"
                   "\tcounter += x;\n\treturn counter;\n}\n")
    for name, extra in (("a", []), ("b", ["-DPATCHED"])):
        subprocess.run([gcc, *cflags, "-mcmodel=medium", *extra, "-c", str(src), "-o", str(tmp_path / f"{name}.o")],
                       check=True)
    refused = analyse(tmp_path / "a.o", tmp_path / "b.o", Options()).refused
    matching = [r for r in refused if "caller reaches counter TOC-relative" in str(r)]
    assert len(matching) == 1, refused


def test_a_kernel_read_as_elf_gives_the_symbols_readelf_lists(kernel: dict[str, Path], tmp_path: Path) -> None:
    # the ELF's own symbol table is decoded by klpdiff's reader (pyelftools took 0.8 s for a small
    # vmlinux's 45,000 symbols); `readelf -sW` text is the reference
    from klpdiff.core.errors import InputError
    from klpdiff.klp.symbols import _read_symtab

    readelf, strip = need_tool("x86_64", "readelf"), need_tool("x86_64", "strip")
    text = tmp_path / "vmlinux.symtab"
    text.write_text(subprocess.run([readelf, "-sW", str(kernel["vmlinux"])], capture_output=True, text=True,
                                   check=True).stdout)
    from_elf, from_text = _read_symtab(kernel["vmlinux"]).symbols, _read_symtab(text).symbols
    assert len(from_elf) > 5 and from_elf == from_text
    assert {s.file for s in from_elf if s.name == "dup_helper"} == {"target.c#1", "target.c#2"}
    stripped = tmp_path / "vmlinux.stripped"
    subprocess.run([strip, "-o", str(stripped), str(kernel["vmlinux"])], check=True)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    for bad, words in ((stripped, "found 0 (was it stripped?)"), (empty, "no symbols found")):
        with pytest.raises(InputError, match=re.escape(words)):
            _read_symtab(bad)
