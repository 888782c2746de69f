"""The rule author's tools: lint on broken rule files, show, explain and rules test."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, need_tool


def klpdiff(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "klpdiff.cli", *map(str, args)], capture_output=True, text=True)


def test_shipped_rules_lint_clean() -> None:
    proc = klpdiff("rules", "lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert "0 error(s), 0 warning(s)" in proc.stderr


BROKEN = {
    # file name: (text, expected findings as (line, fragment))
    "yaml-syntax.yaml": ("kind: noise\nline_loads: [unclosed\n", [(3, "YAML error")]),
    "no-kind.yaml": ("refuse: []\n", [(1, "missing 'kind:'")]),
    "bad-kind.yaml": ("kind: wizardry\n", [(1, "unknown kind")]),
    "schema.yaml": ("kind: refusals\nrefuse:\n  - when: 'true'\n    mesage: typo\n  - message: no when\n",
                    [(4, "unknown key"), (5, "refuse.1.when: Field required")]),
    "expressions.yaml": (
        "kind: refusals\n"
        "refuse:\n"
        "  - when: 'sym.nmae == \"x\"'\n"
        "    message: 'fine {sym.name}'\n"
        "  - when: 'sym.name =~ \"[\"'\n"
        "  - when: 'status == '\n"
        "  - when: 'true'\n"
        "    message: 'bad {sym.nope}'\n",
        [(3, "unknown name 'nmae'"), (5, "bad regular expression"), (6, "cannot parse expression"),
         (8, "unknown name 'nope'")]),
    "types.yaml": (
        "kind: refusals\n"
        "refuse:\n"
        "  - when: 'status == \"changed\" and sym.name < 3'\n"
        "  - when: 'sym.size =~ \"^1\"'\n"
        "  - when: 'sym.name in 3'\n"
        "  - when: 'status == 3'\n"
        "  - when: 'startswith(sym.size, \"x\") or sym.size + \"a\" == 1'\n",
        [(3, "'<' works on a number, not on text"), (4, "'=~' matches text, not a number"),
         (5, "'in' looks in a list or in text, not in a number"), (6, "'==' compares text with a number"),
         (7, "startswith() takes text, not a number")]),
    "stage-facts.yaml": (
        "kind: correlation\n"
        "fresh:\n"
        "  - 'sym.included or sym.child'\n",
        [(3, "unknown name 'included' in sym")]),
    "layout.yaml": (
        "kind: special-sections\n"
        "sections:\n"
        "  - name: __demo\n"
        "    struct: demo\n"
        "    layouts:\n"
        "      - size: 8\n"
        "        fields:\n"
        "          - {name: a, offset: 0, size: 8, reloc: required}\n"
        "          - {name: b, offset: 4, size: 4}\n",
        [(6, "overlap")]),
    "pattern.yaml": ("kind: noise\nline_loads:\n  instructions: ['be zz', 'be ?? ?? ?? ??']\n"
                     "line_strings: ['\\.c:(\\d+)']\n",
                     [(3, "bad template token"), (3, "names its immediate's bits with the letter n"),
                      (4, "needs a (?P<line>...) group")]),
    "split-load.yaml": ("kind: noise\nline_loads:\n  instructions: ['b8 nn/ff']\n  split:\n"
                        "    - high: ['rrrrnnnn']\n"
                        "      low: ['ssssssss', 'rrrsssss']\n"
                        "      shift: 8\n      apart: 4\n",
                        [(3, "bad template token"), (6, "split line load's low part"),
                         (6, "split line load's low part")]),
    "rewrite.yaml": (
        "kind: special-sections\n"
        "sections:\n"
        "  - name: '^boot_sites_(?P<constant>.+)$'\n"
        "    struct: boot_site\n"
        "    applied_by: vmlinux-boot\n"
        "    layouts: [{size: 4, fields: [{name: site, offset: 0, size: 4, reloc: required}]}]\n"
        "    rewrite:\n"
        "      - site: site\n"
        "        match: 'b8 zz'\n"
        "        replace: '90'\n"
        "      - site: site\n"
        "        match: '10111rrr ?? ?? ?? ??'\n"
        "        replace: '10111qqq ?? ?? ?? ??'\n"
        "        relocs: [{offset: 9, type: R_X86_64_PC32, symbol: '{table.nope}'}]\n",
        [(9, "bad template token 'zz'"), (13, "uses 'q', which the match does not capture"),
         (14, "outside the 5-byte replacement"), (14, "unknown name 'nope'")]),
    "rewrite-schema.yaml": (
        "kind: special-sections\n"
        "sections:\n"
        "  - name: __not_boot\n"
        "    struct: plain_table\n"
        "    layouts: [{size: 4, fields: [{name: site, offset: 0, size: 4, reloc: required}]}]\n"
        "    rewrite: [{site: other, match: '90', replace: '90'}]\n",
        [(3, "rewrite: is only for tables applied_by: vmlinux-boot")]),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_lint_reports_each_error_once_at_its_line(name: str, tmp_path: Path) -> None:
    text, expected = BROKEN[name]
    (tmp_path / name).write_text(text)
    proc = klpdiff("rules", "lint", tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line]
    assert len(lines) == len(expected), lines
    for (line_no, fragment), got in zip(expected, lines, strict=True):
        assert got.startswith(f"{tmp_path / name}:{line_no}:"), got
        assert ": error: " in got and fragment in got, got


def test_lint_warns_about_dead_and_overridden_rules(tmp_path: Path) -> None:
    arch = tmp_path / "x86_64"
    arch.mkdir()
    (arch / "special-sections.yaml").write_text(
        "kind: special-sections\n"
        "sections:\n"
        "  - name: .comment\n"
        "    struct: comment\n"
        "    layouts: [{size: 1, fields: []}]\n"
        "  - name: __bug_table\n"
        "    struct: bug_entry\n"
        "    layouts: [{size: 12, fields: [{name: a, offset: 0, size: 4, reloc: required}]}]\n")
    proc = klpdiff("rules", "lint", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"{arch / 'special-sections.yaml'}:3:" in out and "dead rule" in out and "ignored" in out
    assert "rules/x86_64/special-sections.yaml" in out and "is overridden by" in out
    assert f"{arch / 'special-sections.yaml'}:6" in out


def test_show_names_where_rules_come_from() -> None:
    proc = klpdiff("rules", "show", "--arch", "ppc64le")
    assert proc.returncode == 0, proc.stderr
    assert "arch ppc64le: machine 21, little-endian" in proc.stdout
    assert "R_PPC64_TOC16_HA: 2 bytes, via .toc entries" in proc.stdout
    assert "rules/ppc64le/special-sections.yaml:" in proc.stdout
    assert "relocation R_PPC64_REL24 on a matching instruction" in proc.stdout
    assert klpdiff("rules", "show", "--arch", "vax").returncode == 1
    x86 = klpdiff("rules", "show", "--arch", "x86_64").stdout
    orc = next(line for line in x86.splitlines() if line.strip().startswith(".orc_unwind_ip:"))
    assert "made from the code (not compared)" in orc and "made from the code" not in proc.stdout


def _compile_pair(tmp_path: Path, source: str) -> tuple[Path, Path]:
    gcc = need_tool("x86_64", "gcc")
    src = tmp_path / "t.c"
    src.write_text(source)
    flags = ["-O2", "-fno-pie", "-mcmodel=kernel", "-pg", "-mfentry", "-mrecord-mcount", "-ffunction-sections",
             "-fdata-sections", "-fno-asynchronous-unwind-tables", "-c"]
    out = (tmp_path / "a.o", tmp_path / "b.o")
    subprocess.run([gcc, *flags, str(src), "-o", str(out[0])], check=True)
    subprocess.run([gcc, *flags, "-DPATCHED", str(src), "-o", str(out[1])], check=True)
    return out


SOURCE = """
extern int printk(const char *, ...);
__attribute__((noinline)) int helper(int x) { return x * 3; }
int changed(int x)
{
#ifdef PATCHED
    printk("x=%d\\n", x);
#endif
    asm volatile("1: nop\\n.pushsection .smp_locks,\\"a\\"\\n.long 1b - .\\n.popsection");
    return helper(x) + 1;
}
int untouched(int x)
{
    asm volatile("1: nop\\n.pushsection .smp_locks,\\"a\\"\\n.long 1b - .\\n.popsection");
    return x;
}
"""


def test_explain_symbol_and_entry(tmp_path: Path) -> None:
    orig, patched = _compile_pair(tmp_path, SOURCE)
    proc = klpdiff("explain", orig, patched, "changed")
    assert proc.returncode == 0, proc.stderr
    assert "comparison: changed" in proc.stdout
    assert "inclusion: copied into the output (changed function" in proc.stdout
    proc = klpdiff("explain", orig, patched, "helper")
    assert "comparison: same" in proc.stdout and "stays a reference" in proc.stdout
    proc = klpdiff("explain", orig, patched, ".smp_locks[0]")
    assert "struct s32_code_pointer, 4 bytes per entry" in proc.stdout and "kept:" in proc.stdout
    proc = klpdiff("explain", orig, patched, ".smp_locks[1]")
    assert "left out:" in proc.stdout and "untouched" in proc.stdout
    proc = klpdiff("explain", orig, patched, "nothing_here")
    assert "no such symbol" in proc.stdout


BOOT_SITES = """
#define RUNTIME_PTR(sym) ({ unsigned long r; asm("mov %1,%0\\n1:\\n.pushsection runtime_ptr_" #sym ",\\"a\\"\\n"  \\
    ".long 1b - 8 - .\\n.popsection" : "=r" (r) : "i" (0x0123456789abcdefull)); r; })
#define RUNTIME_SHIFT(v, sym) ({ unsigned int r = (v); asm("shrl $12,%k0\\n1:\\n.pushsection runtime_shift_" \\
    #sym ",\\"a\\"\\n.long 1b - 1 - .\\n.popsection" : "+r" (r)); r; })
unsigned long limit, unused_limit;
unsigned int shift;
int below(unsigned long x)
{
#ifdef PATCHED
    if (x == 7) return 0;
#endif
    return x <= RUNTIME_PTR(limit);
}
unsigned int hashed(unsigned int x)
{
#ifdef PATCHED
    x ^= 3;
#endif
    return RUNTIME_SHIFT(x, shift);
}
int other(unsigned long x) { return x <= RUNTIME_PTR(unused_limit); }
"""


def test_explain_boot_only_sites(tmp_path: Path) -> None:
    orig, patched = _compile_pair(tmp_path, BOOT_SITES)
    proc = klpdiff("explain", orig, patched, "runtime_ptr_limit[0]")
    assert proc.returncode == 0, proc.stderr
    assert "applied by vmlinux at boot only: rewritten: runtime_const_ptr(limit) in below" in proc.stdout
    proc = klpdiff("explain", orig, patched, "runtime_shift_shift[0]")
    assert "refused: function hashed uses runtime_const_shift_right_32(..., shift)" in proc.stdout
    proc = klpdiff("explain", orig, patched, "runtime_ptr_unused_limit[0]")
    assert "left out:" in proc.stdout and "applied by vmlinux" not in proc.stdout


def test_rules_test_runs_cases(tmp_path: Path) -> None:
    need_tool("x86_64", "gcc")
    proc = klpdiff("rules", "test", ROOT / "tests" / "rules", "--arch", "x86_64")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "PASS x86_64/bug-table" in proc.stdout
    assert " 0 failed" in proc.stdout
    bad = tmp_path / "cases"
    bad.mkdir()
    (bad / "wrong.yaml").write_text(
        "arch: x86_64\nabout: expects the wrong function\nsource: |\n"
        "  int f(int x) {\n  #ifdef PATCHED\n    return x + 2;\n  #else\n    return x + 1;\n  #endif\n  }\n"
        "expect:\n  verdict: ok\n  functions: [g]\n")
    proc = klpdiff("rules", "test", bad)
    assert proc.returncode == 1
    assert "FAIL x86_64/wrong: functions ['f'], expected ['g']" in proc.stdout


def test_docs_cover_every_rule_kind_and_key() -> None:
    """docs/rules.md must name every kind and every key the schema accepts."""
    import dataclasses
    from typing import get_args, get_type_hints

    from klpdiff.ruleset import schema as rulemodels

    doc = (ROOT / "docs" / "rules.md").read_text()
    # each kind's section of the docs, from its heading to the next kind's
    parts = re.split(r"^### `kind: ([a-z-]+)`", doc, flags=re.M)
    sections = {parts[i]: parts[i + 1].split("\n## ")[0] for i in range(1, len(parts), 2)}

    def nested(model: type) -> list[type]:
        """The model and every model its fields hold, however deep."""
        found = [model]
        todo = list(get_type_hints(model).values())
        while todo:
            t = todo.pop()
            todo.extend(get_args(t))
            if dataclasses.is_dataclass(t) and isinstance(t, type) and t not in found:
                found.append(t)
                todo.extend(get_type_hints(t).values())
        return found

    models = rulemodels.DOC_CLASSES
    kinds = [get_args(get_type_hints(m)["kind"])[0] for m in models]
    assert set(kinds) == set(rulemodels.kinds()) and len(kinds) == 7
    missing = []
    for kind, model in zip(kinds, models, strict=True):
        text = sections.get(kind, "")
        missing += [f"kind {kind}: {m.__name__}.{f.name}" for m in nested(model) for f in dataclasses.fields(m)
                    if f.name not in ("kind", "note") and not re.search(rf"[`{{ ,.]{f.name}[`}}:, ]", text)]
    assert not missing, f"docs/rules.md does not describe, in the section of their kind: {missing}"
    for kind in ("arch", "relocations", "special-sections", "noise", "refusals", "correlation", "sections"):
        assert f"kind: {kind}" in doc


def test_a_rule_case_runs_with_every_extra_rule_folder_it_is_given(tmp_path: Path) -> None:
    from klpdiff.authoring.cases import run_case

    need_tool("x86_64", "gcc")
    extra = tmp_path / "rules"
    extra.mkdir()
    (extra / "refuse-all.yaml").write_text("kind: refusals\nrefuse:\n  - when: 'status == \"changed\"'\n"
                                           "    message: 'refused by the extra folder'\n")
    cases = ROOT / "tests" / "rules"
    includes = [cases / "include" / "x86_64", cases / "include" / "common"]
    case = cases / "shared" / "line-macro-real.yaml"
    assert not run_case(case, "x86_64", tmp_path / "plain", [], includes).failures
    refused = run_case(case, "x86_64", tmp_path / "extra", [extra], includes)
    assert refused.outcome is not None and refused.outcome.verdict == "error"
    assert any("refused by the extra folder" in str(r) for r in refused.outcome.analysis.refused)


def test_lint_checks_are_named_and_an_error_stops_a_file_s_later_checks(tmp_path: Path) -> None:
    from klpdiff.authoring.lint import FILE_CHECKS, Level, hints, lint_files

    assert [c.name for c in FILE_CHECKS] == ["yaml", "schema", "compile", "relocation-number"]
    assert all(c.hint and isinstance(c.level, Level) for c in FILE_CHECKS)
    broken = tmp_path / "broken.yaml"
    # a misspelt key (schema) and a type slip (compile): the schema error alone is reported
    broken.write_text("kind: refusals\nrefuse:\n  - when: 'sym.name < 3'\n    mesage: x\n")
    twice = tmp_path / "twice.yaml"
    twice.write_text("kind: relocations\ntypes:\n  - {name: A, number: 1, width: 4}\n"
                     "  - {name: B, number: 1, width: 4}\n")
    findings = lint_files([broken, twice])
    assert [(f.check, f.level) for f in findings] == [("schema", Level.ERROR), ("relocation-number", Level.WARNING)]
    assert findings[0].where.startswith(f"{broken}:4:") and str(findings[0]).endswith("[schema]")
    assert findings[1].where == f"{twice}:4:5"
    assert [h.split("]")[0] for h in hints(findings)] == ["[schema", "[relocation-number"]


def test_rule_cases_check_the_written_object_with_the_arch_binutils(tmp_path: Path) -> None:
    """`klpdiff rules test` checks each written object (authoring.cases.object_failures): an assembler label
    left undefined is named, and a sound object passes readelf and ld -r."""
    from klpdiff.authoring.cases import object_failures

    gcc = need_tool("x86_64", "gcc")
    src = tmp_path / "label.c"
    src.write_text('extern int weird __asm__(".Lx");\nint f(void) { return weird; }\nint g(void) { return 1; }\n')
    subprocess.run([gcc, "-O2", "-c", str(src), "-o", str(tmp_path / "label.o")], check=True)
    assert object_failures(tmp_path / "label.o", "x86_64-linux-gnu-") == \
        ["written object: assembler label(s) left undefined: .Lx"]
    src.write_text("int g(void) { return 1; }\n")
    subprocess.run([gcc, "-O2", "-c", str(src), "-o", str(tmp_path / "sound.o")], check=True)
    assert object_failures(tmp_path / "sound.o", "x86_64-linux-gnu-") == []
    assert object_failures(tmp_path / "sound.o", "no-such-arch-") == [
        "written object not checked: no no-such-arch-readelf (install the Debian cross binutils)",
        "written object not checked: no no-such-arch-ld (install the Debian cross binutils)"]
