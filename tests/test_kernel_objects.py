"""Real kernel objects (Debian's linux-source-6.12): every section has a rule, and code the kernel patches
at boot is rewritten or refused. The trees are prepared once and cached (tests/kernel/ktree.py); without
root to install the packages the tests skip and say why."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from klpdiff.authoring.audit import audit
from klpdiff.build.command import macro_headers_dir
from klpdiff.core.errors import Verdict
from klpdiff.diff.compare import CHANGED
from klpdiff.diff.pipeline import Options, Outcome, run
from klpdiff.elf.model import STT_FUNC
from klpdiff.elf.read import read_elf
from klpdiff.ruleset.load import rule_dirs

from .conftest import relocations, section_data, section_names
from .kernel import ktree

PLACEHOLDERS = {  # the runtime_const_ptr immediates, as they sit in each arch's code
    "x86_64": bytes.fromhex("efcdab8967452301"),
    "s390x": bytes.fromhex("01234567"),
}


def _objects(arch: str) -> list[Path]:
    try:
        return ktree.audit_objects(arch)
    except ktree.Unavailable as err:
        pytest.skip(f"no {arch} kernel tree: {err}")


def _diff(arch: str, obj: str, edits: Mapping[str, Callable[[str], str]], tmp: Path) -> tuple[Outcome, Path]:
    """klpdiff on the audit object `obj` and the same object compiled with `edits`."""
    orig = next(p for p in _objects(arch) if p.name == ktree.flat_name(obj))
    patched = ktree.build_objects(arch, [obj], tmp / "patched", edits)[obj]
    out = tmp / "diff.o"
    return run(orig, patched, out, Options()), out


@pytest.mark.parametrize("arch", sorted(ktree.ARCHES))
def test_every_section_of_real_objects_has_a_rule(arch: str) -> None:
    result = audit(_objects(arch), rule_dirs([]), ktree.ARCHES[arch].rules_arch)
    assert result.objects == len(ktree.ARCHES[arch].objects)
    assert result.sections > 1000
    assert not result.unknown, "sections no rule describes:\n" + "\n".join(result.lines())


def _one_line_down(text: str) -> str:
    first, _, rest = text.partition("\n")
    return first + "\n/* a line that moves every line below it */\n" + rest


@pytest.mark.parametrize("arch", sorted(ktree.ARCHES))
def test_a_line_added_at_the_top_changes_no_function_of_real_objects(arch: str, tmp_path: Path) -> None:
    """No false "changed": every line of every source moves down by one, so each __LINE__ (WARN and BUG
    sites, their table entries, line arguments) differs, and nothing else does. (tests/kernel/line_sweep.py
    goes further, with and without -g and with changed constants, in about 15 minutes.)"""
    objects = ktree.ARCHES[arch].objects
    base = {p.name: p for p in _objects(arch)}
    moved = ktree.build_objects(arch, objects, tmp_path / "moved", {o[:-2] + ".c": _one_line_down for o in objects})
    code_differs = 0
    for obj, path in moved.items():
        orig = base[ktree.flat_name(obj)]
        outcome = run(orig, path, tmp_path / "diff.o", Options())
        changed = [name for name in outcome.analysis.names(CHANGED, STT_FUNC)
                   if not _line_load_grew(outcome, name)]
        assert not changed and not outcome.analysis.refused, (obj, changed,
                                                              [str(r) for r in outcome.analysis.refused][:3])
        code_differs += any(a.data != b.data for a, b in zip(read_elf(orig).sections, read_elf(path).sections,
                                                             strict=False) if a.is_text and a.name == b.name)
    assert code_differs, "no object's code moved with its lines: the case would test nothing"


def _line_load_grew(outcome: Outcome, name: str) -> bool:
    """Did function `name` change size where the arch loads some lines in one instruction and others
    in two (riscv64: `lui` alone for a multiple of 4096, `lui`+`addi` beside it, `li` below 2048)? A
    line that crosses such a boundary makes other code, which is a change, not line noise."""
    analysis = outcome.analysis
    if not analysis.rules.line_noise.split:
        return False
    sizes: list[int] = [next(s.size for s in obj.symbols if s.name == name and s.type == STT_FUNC)
                        for obj in (analysis.orig, analysis.patched)]
    return sizes[0] != sizes[1]


def _one_more_include(text: str) -> str:
    old = '#include "power/power.h"\n'
    assert old in text
    return text.replace(old, old + "\n#include <linux/blktrace_api.h>\n", 1)


@pytest.mark.parametrize("arch", ["x86_64", "x86_64-clang"])
def test_an_added_include_changes_no_function(arch: str, tmp_path: Path) -> None:
    """kpatch's symvers-disagreement patch adds an #include to drivers/base/core.c: no function changes.
    The __COUNTER__ in each pr_debug descriptor's __UNIQUE_ID_ddebug<N> moves up; clang names those
    static locals function.__UNIQUE_ID_ddebug<N> (gcc: __UNIQUE_ID_ddebug<N>.<M>), and ~25 functions
    were found changed on the clang-built tree before the correlation rules knew that form."""
    if arch not in ktree.ARCHES:
        pytest.skip(f"no {arch} column")
    try:
        built = ktree.build_objects(arch, ["drivers/base/core.o"], tmp_path / "orig")
    except ktree.Unavailable as err:
        pytest.skip(f"no {arch} kernel tree: {err}")
    patched = ktree.build_objects(arch, ["drivers/base/core.o"], tmp_path / "patched",
                                  {"drivers/base/core.c": _one_more_include})
    outcome = run(built["drivers/base/core.o"], patched["drivers/base/core.o"], tmp_path / "diff.o", Options())
    assert outcome.verdict is Verdict.NO_CHANGE, (outcome.analysis.names(CHANGED, STT_FUNC)[:5],
                                                  [str(r) for r in outcome.analysis.refused][:3])


def _vfs_read_rejects_a_count(text: str) -> str:
    old = ("\tif (unlikely(!access_ok(buf, count)))\n\t\treturn -EFAULT;\n\n"
           "\tret = rw_verify_area(READ, file, pos, count);")
    assert old in text
    return text.replace(old, old.replace("\n\n", "\n\tif (unlikely(count == 0x7ffff001))\n\t\treturn -ENOTTY;\n\n"), 1)


def _d_lookup_rejects_long_names(text: str) -> str:
    head = text.index("struct dentry *__d_lookup(const struct dentry *parent, const struct qstr *name)")
    loop = text.index("hlist_bl_for_each_entry_rcu(dentry, node, b, d_hash) {", head)
    return text[:loop] + "if (unlikely(name->len == 4095))\n\t\treturn NULL;\n\t" + text[loop:]


def test_access_ok_runtime_pointer_becomes_a_load_of_user_ptr_max(tmp_path: Path) -> None:
    """x86_64, Debian config: vfs_read's access_ok() reads USER_PTR_MAX through a boot-time constant."""
    outcome, out = _diff("x86_64", "fs/read_write.o", {"fs/read_write.c": _vfs_read_rejects_a_count}, tmp_path)
    assert outcome.verdict == "ok", outcome.analysis.refused
    assert outcome.analysis.included_functions() == ["vfs_read"]
    assert any("runtime_const_ptr(USER_PTR_MAX) in vfs_read" in n for n in outcome.analysis.sites.notes)
    assert PLACEHOLDERS["x86_64"] not in out.read_bytes()
    assert ("vfs_read", "R_X86_64_PC32", "USER_PTR_MAX", -4) in \
        [(sec.removeprefix(".text."), t, s, a) for sec, t, s, a in relocations(out)]


@pytest.mark.parametrize("arch", ["x86_64", "s390x"])
def test_d_hash_shift_is_refused_naming_function_constant_and_rule(arch: str, tmp_path: Path) -> None:
    """fs/dcache.c: __d_lookup uses d_hash(), a runtime pointer and a runtime shift."""
    outcome, out = _diff(arch, "fs/dcache.o", {"fs/dcache.c": _d_lookup_rejects_long_names}, tmp_path)
    assert outcome.verdict == "error"
    assert not out.exists()
    reasons = [str(r) for r in outcome.analysis.refused]
    assert any(re.search(rf"function __d_lookup uses runtime_const_shift_right_32\(\.\.\., d_hash_shift\).*"
                         rf"\[.*rules/{arch}/special-sections\.yaml:\d+\]", r) for r in reasons), reasons


def _sk_ioctl_rejects_a_command(text: str) -> str:
    old = "int sk_ioctl(struct sock *sk, unsigned int cmd, void __user *arg)\n{\n\tint rc = 1;\n"
    assert old in text
    return text.replace(old, old + "\n\tif (unlikely(cmd == 0x12345))\n\t\treturn -ENOTTY;\n", 1)


def test_ppc64le_barrier_nospec_site_is_named_for_the_module_loader(tmp_path: Path) -> None:
    """net/core/sock.c: sk_ioctl's barrier_nospec() must be patched in the module as in vmlinux."""
    outcome, out = _diff("ppc64le", "net/core/sock.o", {"net/core/sock.c": _sk_ioctl_rejects_a_command}, tmp_path)
    assert outcome.verdict == "ok", outcome.analysis.refused
    assert outcome.analysis.included_functions() == ["sk_ioctl"]
    names = section_names(out)
    assert "__spec_barrier_fixup" in names and "__barrier_nospec_fixup" not in names
    assert len(section_data(out, "__spec_barrier_fixup")) == 8
    assert [(t, s) for sec, t, s, _a in relocations(out) if sec == "__spec_barrier_fixup"] == \
        [("R_PPC64_REL64", "sk_ioctl")]


def _meminfo_shows_a_line(text: str) -> str:
    old = '\tshow_val_kb(m, "MemTotal:       ", i.totalram);\n'
    assert old in text
    return text.replace(old, old + '\tshow_val_kb(m, "KlpdiffTest:    ", 1);\n', 1)


def test_one_table_for_several_functions_keeps_its_link_order(tmp_path: Path) -> None:
    """Debian's config (call padding) makes GCC put several functions' __patchable_function_entries in one
    section linked to one of them (here .init.text). The kept entry must stay SHF_LINK_ORDER, linked to the
    copied code: the linker refuses to mix ordered and unordered sections of that name in the module."""
    outcome, out = _diff("x86_64", "fs/proc/meminfo.o", {"fs/proc/meminfo.c": _meminfo_shows_a_line}, tmp_path)
    assert outcome.verdict == "ok", outcome.analysis.refused
    with out.open("rb") as fh:
        elf = ELFFile(fh)
        tables = [s for s in elf.iter_sections() if s.name == "__patchable_function_entries"]
        assert tables
        for table in tables:
            assert table["sh_flags"] & 0x80, "SHF_LINK_ORDER was dropped"
            assert elf.get_section(table["sh_link"]).name == ".text.meminfo_proc_show"


SYSCALL_ENTRY = {"x86_64": "__x64_sys_newuname", "x86_64-clang": "__x64_sys_newuname", "s390x": "__s390x_sys_newuname",
                 "ppc64le": "sys_newuname", "riscv64": "__riscv_sys_newuname"}  # what each arch's table calls


def _newuname_through_kpatch_syscall(text: str) -> str:
    old = "SYSCALL_DEFINE1(newuname, struct new_utsname __user *, name)\n{\n"
    assert old in text
    return text.replace(old, '#include "kpatch-syscall.h"\nKPATCH_SYSCALL_DEFINE1(newuname, struct new_utsname '
                        '__user *, name)\n{\n\tif (!name)\n\t\treturn -EINVAL;\n', 1)


@pytest.mark.parametrize("arch", sorted(ktree.ARCHES))
def test_kpatch_syscall_macro_patches_the_entry_the_syscall_table_calls(arch: str, tmp_path: Path) -> None:
    """kpatch's KPATCH_SYSCALL_DEFINE1 (include/kpatch-syscall.h over klpdiff-syscall.h), as kpatch's syscall
    integration patch uses it: the body gets a name of its own, and what calls it changes."""
    objects = _objects(arch)
    orig = next(p for p in objects if p.name == ktree.flat_name("kernel/sys.o"))
    patched = ktree.build_objects(arch, ["kernel/sys.o"], tmp_path / "patched",
                                  {"kernel/sys.c": _newuname_through_kpatch_syscall},
                                  ["-I", str(macro_headers_dir())])["kernel/sys.o"]
    outcome = run(orig, patched, tmp_path / "diff.o", Options())
    assert outcome.verdict is Verdict.OK, [str(r) for r in outcome.analysis.refused]
    functions = outcome.analysis.included_functions()
    # the stub the table calls changes, or the static __se_sys_ between them where the compiler kept it
    # out of line (clang): either way a traceable function on the path, never the old body's name
    assert {SYSCALL_ENTRY[arch], "__se_sys_newuname"} & set(functions), functions
    assert "__do_sys_newuname" not in functions
