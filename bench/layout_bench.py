#!/usr/bin/env python3
"""What the data-layout check costs: prints figures, asserts nothing.

For each ORIG/PATCHED pair given (objects built with -g, as `klpdiff build` builds them), in-process and
best of --repeat runs:
- the whole diff (`pipeline.analyse`, layout check included) and the layout check alone
  (`layoutcheck.check_layouts`: both objects' debug information read, layouts compared, uses followed);
- klpdiff's reading of both objects' .debug_info (`dwarf.debug_info`) next to pyelftools' reading of the
  same entries (every DIE of every unit, with its attributes), the alternative the engine does not use.

Without pairs it compiles a generated C file (--functions N small functions over shared structs,
one struct changed by the patch) with gcc -g, kernel-style.

usage: bench/layout_bench.py [ORIG.o PATCHED.o ...] [--repeat N] [--functions N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from elftools.elf.elffile import ELFFile

from klpdiff.diff.layoutcheck import check_layouts
from klpdiff.diff.pipeline import Options, analyse
from klpdiff.elf.dwarf import debug_info
from klpdiff.elf.read import read_elf

FLAGS = ["-O2", "-g", "-fno-pie", "-mcmodel=kernel", "-mno-red-zone", "-pg", "-mfentry", "-mrecord-mcount",
         "-ffunction-sections", "-fdata-sections", "-c"]


def best(repeat: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def pyelftools_read(path: Path) -> int:
    count = 0
    with path.open("rb") as f:
        for cu in ELFFile(f).get_dwarf_info().iter_CUs():
            for _die in cu.iter_DIEs():
                count += 1
    return count


def generated_pair(work: Path, functions: int) -> tuple[Path, Path]:
    lines = ["struct list_head { struct list_head *next, *prev; };"]
    for k in range(20):
        lines.append(f"struct s{k} {{ long a; int b; struct list_head node; struct s{(k + 1) % 20} *next; "
                     f"char name[16]; }};")
    lines.append("struct target { long a;\n#ifdef PATCHED\n int added;\n#endif\n int b; };")
    for n in range(functions):
        lines.append(f"__attribute__((noinline)) long f{n}(struct s{n % 20} *p) {{ return p->a + p->b + {n}; }}")
    lines.append("__attribute__((noinline)) long use_target(struct target *t) { return t->b; }")
    src = work / "gen.c"
    src.write_text("\n".join(lines) + "\n")
    orig, patched = work / "gen.orig.o", work / "gen.patched.o"
    subprocess.run(["gcc", *FLAGS, str(src), "-o", str(orig)], check=True)
    subprocess.run(["gcc", *FLAGS, "-DPATCHED", str(src), "-o", str(patched)], check=True)
    return orig, patched


def measure(orig: Path, patched: Path, repeat: int) -> None:
    a = analyse(orig, patched, Options())
    whole = best(repeat, lambda: analyse(orig, patched, Options()))
    check = best(repeat, lambda: check_layouts(a.orig, a.patched, a.corr, a.inc, ()))
    ours = best(repeat, lambda: (debug_info(a.orig), debug_info(a.patched)))
    theirs = best(max(1, repeat // 2), lambda: (pyelftools_read(orig), pyelftools_read(patched)))
    info = debug_info(a.patched)
    entries = len(info.dies) if info is not None else 0
    print(f"{patched.name}: {entries} entries; diff {whole:.3f} s, of which the layout check {check:.3f} s "
          f"({100 * check / whole:.0f}%, {a.layout.status.value}, {len(a.layout.findings)} change(s) reached); "
          f"reading both .debug_info: klpdiff {ours:.3f} s, pyelftools {theirs:.3f} s ({theirs / ours:.1f}x)")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", nargs="*", type=Path)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--functions", type=int, default=2000)
    args = ap.parse_args(argv)
    if len(args.pairs) % 2:
        ap.error("give ORIG.o PATCHED.o pairs")
    with tempfile.TemporaryDirectory() as tmp:
        pairs = list(zip(args.pairs[::2], args.pairs[1::2], strict=True)) or [generated_pair(Path(tmp),
                                                                                          args.functions)]
        for orig, patched in pairs:
            read_elf(orig)  # a bad input fails here, with its own message
            measure(orig, patched, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
