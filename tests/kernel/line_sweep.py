"""The `__LINE__` sweeps: klpdiff must see no change when only line numbers move, and must see every
changed constant, on real kernel files (Debian's linux-source-6.12, tests/kernel/ktree.py's trees).

    .venv/bin/python tests/kernel/line_sweep.py [ARCH ...]     # default: x86_64 s390x ppc64le

For each arch, every file of its list is compiled four times: with and without `-g`, before and
after an edit. Two edits:

- line shift: one blank line at the top of the file. Every line number moves, nothing else: klpdiff
  must exit 3 (no change) for every file, with and without `-g`.
- constant change: in the file's first single-line printk/WARN-style call that ends with a decimal
  literal argument and is compiled in (the original object's line table has code at that line),
  the literal goes up by one. With `-g` a function holding that line must be reported changed;
  without `-g` it must be reported changed or named in the report's `line_number_heuristic`
  list (with the warning that a constant there would not be seen).

Prints one line per file and check, then the counts per arch; exits 1 if any check failed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from klpdiff.lines import line_table  # noqa: E402
from klpdiff.load import read_elf  # noqa: E402
from klpdiff.model import STT_FUNC  # noqa: E402
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
}
DEBUG = {True: ("-g",), False: ("-g0",)}
_SITE = re.compile(r"^\s*(?:pr_(?:warn|err|info|notice|crit|alert|emerg)\w*|printk\w*|WARN\w*|dev_(?:warn|err|info)\w*"
                   r"|netdev_(?:warn|err|info)\w*|ext4_(?:warning|error|msg)\w*)\s*\(.*,\s*(\d+)\s*\)\s*;")


@dataclass
class Outcome:
    arch: str
    check: str
    debug: bool
    file: str
    ok: bool
    detail: str


def klpdiff(orig: Path, patched: Path, work: Path) -> tuple[int, dict[str, object]]:
    report = work / "report.json"
    report.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", str(orig), str(patched), "-o", str(work / "out.o"),
                           "--json", str(report)], capture_output=True, text=True)
    doc = json.loads(report.read_text()) if report.exists() else {"error": proc.stderr.strip()}
    return proc.returncode, doc


def sites(source: str) -> list[tuple[int, str]]:
    """(line number, line) of each candidate constant to change."""
    return [(n, line) for n, line in enumerate(source.splitlines(), 1) if _SITE.match(line)]


def functions_at_line(obj_path: Path, line: int) -> set[str]:
    """Functions with code at `line` (of any file: a header line of the same number may add names)."""
    obj = read_elf(obj_path)
    table = line_table(obj)
    if table is None:
        return set()
    out = set()
    for shndx, rows in table.sections.items():
        hits = [a for a, n in zip(rows.addresses, rows.lines, strict=True) if n == line]
        for index in obj.symbols_in.get(shndx, []):
            sym = obj.symbols[index]
            if sym.type == STT_FUNC and any(sym.value <= a < sym.value + sym.size for a in hits):
                out.add(sym.name)
    return out


def bump(line_no: int) -> Callable[[str], str]:
    def edit(text: str) -> str:
        lines = text.split("\n")
        m = _SITE.match(lines[line_no - 1])
        assert m is not None
        lines[line_no - 1] = lines[line_no - 1][: m.start(1)] + str(int(m.group(1)) + 1) + lines[line_no - 1][m.end(1):]
        return "\n".join(lines)
    return edit


def sweep(arch: str, work: Path) -> list[Outcome]:
    files = FILES[arch]
    objects = [f[:-2] + ".o" for f in files]
    tree = ktree.prepare(arch)
    out: list[Outcome] = []
    chosen: dict[str, tuple[int, set[str]]] = {}
    for debug in (True, False):
        base = work / arch / ("g" if debug else "nog")
        orig = ktree.build_objects(arch, objects, base / "orig", flags=DEBUG[debug])
        shifted = ktree.build_objects(arch, objects, base / "shift", {f: lambda t: "\n" + t for f in files},
                                      flags=DEBUG[debug])
        for src, obj in zip(files, objects, strict=True):
            rc, doc = klpdiff(orig[obj], shifted[obj], base)
            out.append(Outcome(arch, "line shift", debug, src, rc == 3,
                               f"exit {rc}: changed {doc.get('changed_functions', doc.get('error'))}"))
            print(out[-1], flush=True)
        if debug:  # the constant to change: the first candidate the compiler kept
            for src, obj in zip(files, objects, strict=True):
                for line_no, _text in sites((tree / src).read_text()):
                    funcs = functions_at_line(orig[obj], line_no)
                    if funcs:
                        chosen[src] = (line_no, funcs)
                        break
        edits = {src: bump(line_no) for src, (line_no, _f) in chosen.items()}
        changed = ktree.build_objects(arch, [s[:-2] + ".o" for s in edits], base / "const", edits,
                                      flags=DEBUG[debug])
        for src, (line_no, funcs) in chosen.items():
            obj = src[:-2] + ".o"
            rc, doc = klpdiff(orig[obj], changed[obj], base)
            seen = set(doc.get("changed_functions", [])) & funcs  # type: ignore[arg-type]
            named = set(doc.get("line_number_heuristic", [])) & funcs  # type: ignore[arg-type]
            ok = bool(seen) if debug else bool(seen or named)
            out.append(Outcome(arch, "constant change", debug, f"{src}:{line_no}", ok,
                               f"exit {rc}: functions at the line {sorted(funcs)}; changed {sorted(seen)}; "
                               f"named as heuristic {sorted(named)}"))
            print(out[-1], flush=True)
    return out


def main(argv: list[str]) -> int:
    arches = argv or ["x86_64", "s390x", "ppc64le"]
    results: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="klpdiff-line-sweep-") as tmp:
        for arch in arches:
            results.extend(sweep(arch, Path(tmp)))
    print("\narch      check            -g     passed/total")
    for arch in arches:
        for check in ("line shift", "constant change"):
            for debug in (True, False):
                rows = [r for r in results if (r.arch, r.check, r.debug) == (arch, check, debug)]
                print(f"{arch:9} {check:16} {'with' if debug else 'without':6} "
                      f"{sum(r.ok for r in rows)}/{len(rows)}")
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"FAIL {r.arch} {r.check} {'-g' if r.debug else 'no -g'} {r.file}: {r.detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
