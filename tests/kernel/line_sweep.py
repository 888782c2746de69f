"""The `__LINE__` sweeps: klpdiff must see no change when only line numbers move, and must see every
changed constant, on real kernel files (Debian's linux-source-6.12, tests/kernel/ktree.py's trees).

    .venv/bin/python tests/kernel/line_sweep.py [ARCH ...]     # default: x86_64 s390x ppc64le riscv64

For each arch, every file of its list is compiled four times: with and without `-g`, before and
after an edit. Two edits:

- line shift: one blank line at the top of the file. Every line number moves, nothing else: klpdiff
  must exit 3 (no change) for every file, with and without `-g` — or, on an arch whose rules have
  `split` line loads, find changed only functions whose size changed (a line that crossed from one
  load form to another made the compiler emit other code).
- constant change: the file's first decimal literal passed to a printk/WARN-style call after its
  format string, or, where the file has none, to any function call (a value of 2 or more), whose
  statement is compiled in (the original object's line table has code on its lines), goes up by
  one; likewise the first printk/WARN-style literal of each PRINTK_POOL file the arch's config
  compiles (such literals are rare). The two kinds are counted apart. A change that leaves the
  object's code and data as they were (the literal folded away) is reported and not counted.
  With `-g` a function holding that line must be reported changed; without `-g` it must be
  reported changed or named in the report's `line_number_heuristic` list (with the warning that
  a constant there would not be seen).

Prints one line per file and check, then the counts per arch; exits 1 if any check failed.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from klpdiff.elf.linetables import line_table  # noqa: E402
from klpdiff.elf.model import STT_FUNC  # noqa: E402
from klpdiff.elf.read import read_elf  # noqa: E402
from klpdiff.ruleset.load import load_ruleset, rule_dirs  # noqa: E402
from tests.kernel import ktree  # noqa: E402

# Big files with many WARN/BUG/printk/fortify sites, across the kernel's subsystems.
COMMON = (
    "fs/dcache.c", "fs/namei.c", "fs/inode.c", "fs/super.c", "fs/ext4/super.c", "fs/ext4/inode.c",
    "fs/ext4/extents.c", "fs/ext4/mballoc.c", "kernel/fork.c", "kernel/sched/core.c",
    "kernel/printk/printk.c", "kernel/time/timer.c", "kernel/bpf/verifier.c", "kernel/workqueue.c",
    "kernel/module/main.c", "kernel/cgroup/cgroup.c", "mm/memory.c", "mm/slub.c", "mm/filemap.c",
    "mm/page_alloc.c", "mm/vmscan.c", "net/core/dev.c", "net/core/sock.c", "net/core/skbuff.c",
    "net/ipv4/tcp.c", "net/ipv4/tcp_input.c", "net/netlink/af_netlink.c", "block/blk-core.c",
    "block/blk-mq.c", "drivers/base/core.c", "drivers/char/random.c",
)
FILES = {
    "x86_64": (*COMMON, "arch/x86/kvm/x86.c", "arch/x86/kernel/process_64.c", "arch/x86/mm/fault.c"),
    "s390x": (*COMMON[:13], "arch/s390/kernel/traps.c", "arch/s390/mm/fault.c", "arch/s390/kernel/process.c"),
    "ppc64le": (*COMMON[:13], "arch/powerpc/kernel/traps.c", "arch/powerpc/mm/fault.c",
                "arch/powerpc/kernel/process.c"),
    "riscv64": (*COMMON[:13], "arch/riscv/kernel/traps.c", "arch/riscv/mm/fault.c", "arch/riscv/kernel/process.c"),
}
# More files with printk/WARN-style calls that print a decimal literal (rare in kernel code): each
# that the arch's config lets kbuild compile adds such a site to the constant-change sweep.
PRINTK_POOL = (
    "kernel/workqueue.c", "kernel/cgroup/cgroup.c", "fs/char_dev.c", "fs/jfs/super.c", "fs/ecryptfs/keystore.c",
    "fs/ubifs/misc.c", "fs/affs/super.c", "net/netfilter/nf_conntrack_timeout.c", "net/netfilter/ipvs/ip_vs_conn.c",
    "net/tipc/crypto.c", "net/ipv4/fib_trie.c", "drivers/md/md.c", "drivers/nvdimm/bus.c", "lib/smp_processor_id.c",
    "crypto/simd.c", "security/tomoyo/common.c", "drivers/firmware/dmi_scan.c", "arch/s390/kernel/debug.c",
    "arch/powerpc/kernel/rtas.c",
)
DEBUG = {True: ("-g",), False: ("-g0",)}
_CALL = re.compile(r"^\s*(?:pr_\w+|printk\w*|WARN\w*|dev_(?:warn|err|info|notice|dbg)\w*|netdev_(?:warn|err|info)\w*"
                   r"|ext4_(?:warning|error|msg)\w*|btrfs_(?:warn|err|info)\w*|pr_cont)\s*\(")
_KEYWORD_PAREN = re.compile(r"\b(?:while|if|for|switch|sizeof)\s*\($")  # `while (0)` holds no argument
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_ARGUMENT = re.compile(r"(?<=[(,])\s*(\d+)\s*(?=[,)])")
# any other call of a function (lowercase: not a macro such as BIT() or BUILD_BUG_ON()) with a literal argument
_ANY_CALL = re.compile(r"\b(?!(?:if|while|for|switch|sizeof|return|case)\b)([a-z_][a-z0-9_]*)\s*\(([^()]*)\)")


@dataclass
class Outcome:
    arch: str
    check: str
    debug: bool
    file: str
    ok: bool
    detail: str


def klpdiff(orig: Path, patched: Path, work: Path) -> tuple[int, dict[str, Any]]:
    report = work / "report.json"
    report.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", str(orig), str(patched), "-o", str(work / "out.o"),
                           "--json", str(report)], capture_output=True, text=True)
    doc = json.loads(report.read_text()) if report.exists() else {"error": proc.stderr.strip()}
    return proc.returncode, doc


def sites(source: str) -> list[tuple[int, int, range]]:
    """Each decimal literal passed to a printk/WARN-style call after its format string (a value the
    format prints, not a condition): (line number, column, the lines of its statement), in file
    order. Statements may span up to six lines."""
    lines = source.split("\n")
    out: list[tuple[int, int, range]] = []
    for start, text in enumerate(lines):
        if not _CALL.match(text):
            continue
        end = start
        while end < len(lines) - 1 and end < start + 5 and not lines[end].rstrip().endswith(";"):
            end += 1
        format_end: tuple[int, int] | None = None  # (line, column) where the format string ends
        for n in range(start, end + 1):
            strings = list(_STRING.finditer(lines[n]))
            if format_end is None and strings:
                format_end = (n, strings[0].end())
            if format_end is None:
                continue
            blanked = _STRING.sub(lambda m: " " * len(m.group(0)), lines[n])
            out.extend((n + 1, m.start(1), range(start + 1, end + 2)) for m in _ARGUMENT.finditer(blanked)
                       if (n, m.start(1)) > format_end and not _KEYWORD_PAREN.search(blanked[: m.start()]))
    return out


def call_sites(source: str) -> list[tuple[int, int, range]]:
    """Each decimal literal of 2 or more passed to a function call on one line (where a file has no
    printk/WARN-style site): (line number, column, that line)."""
    out = []
    for n, text in enumerate(source.split("\n"), 1):
        if text.lstrip().startswith(("#", "*", "/*", "//", "__printf", "__scanf", "module_param")):
            continue
        blanked = _STRING.sub(lambda m: " " * len(m.group(0)), text)
        for call in _ANY_CALL.finditer(blanked):
            for m in _ARGUMENT.finditer(blanked, call.start(2) - 1, call.end(2) + 1):
                if int(m.group(1)) >= 2:
                    out.append((n, m.start(1), range(n, n + 1)))
    return out


def _regenerated(arch: str, doc: dict[str, Any]) -> list[str]:
    """The changed functions whose size changed, on an arch that loads some lines in one instruction and
    others in two (rules' `split` line loads: riscv64's lui alone for a multiple of 4096, lui+addi
    beside it): a line that moved across such a boundary made the compiler emit other code, a real
    change and not a false one (tests/test_kernel_objects.py allows the same)."""
    if not load_ruleset(rule_dirs([]), ktree.ARCHES[arch].rules_arch).line_noise.split:
        return []
    reasons = doc.get("reasons", {})
    return sorted(name for name in doc.get("changed_functions", []) if str(reasons.get(name, "")).startswith("size "))


def functions_at_lines(arch: str, obj_path: Path, lines: range) -> set[str]:
    """Functions with code at one of `lines` (of any file: a header line of the same number may add
    names, which only widens what counts as the right function). The arch's rules say which
    relocations of the line program subtract (riscv64 advances addresses by ADD16/SUB16 pairs)."""
    obj = read_elf(obj_path)
    table = line_table(obj, load_ruleset(rule_dirs([]), ktree.ARCHES[arch].rules_arch).subtracting)
    if table is None:
        return set()
    out = set()
    for shndx, rows in table.sections.items():
        hits = [a for a, n in zip(rows.addresses, rows.lines, strict=True) if n in lines]
        for index in obj.symbols_in.get(shndx, []):
            sym = obj.symbols[index]
            if sym.type == STT_FUNC and any(sym.value <= a < sym.value + sym.size for a in hits):
                out.add(sym.name)
    return out


def same_code(a: Path, b: Path) -> bool:
    """Do two objects have the same allocated bytes (code and data, debug information aside)?"""
    def content(path: Path) -> list[tuple[str, bytes]]:
        obj = read_elf(path)
        return [(sec.name, sec.data) for sec in obj.sections if sec.is_alloc]
    return content(a) == content(b)


def bump(line_no: int, column: int) -> Callable[[str], str]:
    """The edit that adds one to the literal at (line, column)."""
    def edit(text: str) -> str:
        lines = text.split("\n")
        line = lines[line_no - 1]
        m = re.match(r"\d+", line[column:])
        assert m is not None
        lines[line_no - 1] = line[:column] + str(int(m.group(0)) + 1) + line[column + m.end():]
        return "\n".join(lines)
    return edit


def sweep(arch: str, work: Path) -> list[Outcome]:
    files = FILES[arch]
    objects = [f[:-2] + ".o" for f in files]
    tree = ktree.prepare(arch)
    out: list[Outcome] = []
    chosen: dict[str, tuple[int, int, set[str]]] = {}
    for debug in (True, False):
        base = work / arch / ("g" if debug else "nog")
        orig = ktree.build_objects(arch, objects, base / "orig", flags=DEBUG[debug])
        shifted = ktree.build_objects(arch, objects, base / "shift", {f: lambda t: "\n" + t for f in files},
                                      flags=DEBUG[debug])
        for src, obj in zip(files, objects, strict=True):
            rc, doc = klpdiff(orig[obj], shifted[obj], base)
            regenerated = _regenerated(arch, doc)
            out.append(Outcome(arch, "line shift", debug, src,
                               rc == 3 or (rc == 0 and set(doc.get("changed_functions", [])) == set(regenerated)),
                               f"exit {rc}: changed {doc.get('changed_functions', doc.get('error'))}"
                               + (f" (other code: {regenerated})" if regenerated else "")))
            print(out[-1], flush=True)
        if debug:  # the constant to change: the first candidate the compiler kept
            for src, obj in zip(files, objects, strict=True):
                text = (tree / src).read_text()
                for line_no, column, statement in sites(text) + call_sites(text):
                    funcs = functions_at_lines(arch, orig[obj], statement)
                    if funcs:
                        chosen[src] = (line_no, column, funcs)
                        break
                else:
                    print(f"{arch} {src}: no call with a literal argument has code", flush=True)
            for src in PRINTK_POOL:  # printk/WARN-style sites only
                if src in chosen or not (tree / src).exists():
                    continue
                try:
                    built = ktree.build_objects(arch, [src[:-2] + ".o"], base / "orig", flags=DEBUG[debug])
                except RuntimeError:
                    print(f"{arch} {src}: not compiled by this config", flush=True)
                    continue
                for line_no, column, statement in sites((tree / src).read_text()):
                    funcs = functions_at_lines(arch, built[src[:-2] + ".o"], statement)
                    if funcs:
                        chosen[src] = (line_no, column, funcs)
                        orig.update(built)
                        break
        elif chosen:  # the same sites, compiled without -g
            for src in chosen:
                if src[:-2] + ".o" not in orig:
                    orig.update(ktree.build_objects(arch, [src[:-2] + ".o"], base / "orig", flags=DEBUG[debug]))
        if not chosen:
            continue
        edits = {src: bump(line_no, column) for src, (line_no, column, _f) in chosen.items()}
        changed = ktree.build_objects(arch, [s[:-2] + ".o" for s in edits], base / "const", edits,
                                      flags=DEBUG[debug])
        for src, (line_no, _column, funcs) in chosen.items():
            obj = src[:-2] + ".o"
            if same_code(orig[obj], changed[obj]):
                print(f"{arch} {src}:{line_no}: the literal does not reach the code (folded): not counted", flush=True)
                continue
            rc, doc = klpdiff(orig[obj], changed[obj], base)
            seen = set(doc.get("changed_functions", [])) & funcs
            named = set(doc.get("line_number_heuristic", [])) & funcs
            ok = bool(seen) if debug else bool(seen or named)
            kind = "printk/WARN" if line_no in {n for n, _c, _r in sites((tree / src).read_text())} else "call"
            out.append(Outcome(arch, f"constant change ({kind})", debug, f"{src}:{line_no}", ok,
                               f"exit {rc}: functions at the line {sorted(funcs)}; changed {sorted(seen)}; "
                               f"named as heuristic {sorted(named)}"))
            print(out[-1], flush=True)
    return out


def main(argv: list[str]) -> int:
    arches = argv or ["x86_64", "s390x", "ppc64le", "riscv64"]
    # a plain SIGTERM would skip the `finally` that puts the tree's edited sources back
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    results: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="klpdiff-line-sweep-") as tmp:
        for arch in arches:
            results.extend(sweep(arch, Path(tmp)))
    print(f"\n{'arch':9} {'check':29} {'-g':7} passed/total")
    for arch in arches:
        for check in ("line shift", "constant change (printk/WARN)", "constant change (call)"):
            for debug in (True, False):
                rows = [r for r in results if (r.arch, r.check, r.debug) == (arch, check, debug)]
                print(f"{arch:9} {check:29} {'with' if debug else 'without':7} "
                      f"{sum(r.ok for r in rows)}/{len(rows)}")
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"FAIL {r.arch} {r.check} {'-g' if r.debug else 'no -g'} {r.file}: {r.detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
