#!/usr/bin/env python3
"""klpdiff build benchmark: prints figures, asserts nothing.

On an already-built kernel tree (default: the x86_64 e2e kernel, ~/.cache/klpdiff-e2e/x86_64), it times
`klpdiff build` phase by phase (find, compile, diff, module) for
1. a one-.c-file patch (tests/e2e/patches/user-access.patch, fs/read_write.c), and
2. a header patch (a change to an inline helper in fs/proc/internal.h, which every fs/proc object
   includes),
and, side by side, what the tools that need the whole kernel built with per-function sections pay
before they can diff anything: a full `make KCFLAGS="-ffunction-sections -fdata-sections"` of a copy
of the same tree (--full-rebuild; minutes).

usage: bench/build_bench.py [--kdir TREE] [--full-rebuild] [-j N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
E2E_TREE = Path.home() / ".cache" / "klpdiff-e2e" / "x86_64" / "linux-source-6.12"
ONE_FILE = ROOT / "tests" / "e2e" / "patches" / "user-access.patch"
HEADER = "fs/proc/internal.h"
HEADER_ANCHOR = "static inline struct proc_inode *PROC_I(const struct inode *inode)\n{\n"


def header_patch(tree: Path, dest: Path) -> Path:
    """A patch that changes PROC_I() in fs/proc/internal.h (a no-op branch the compiler keeps)."""
    text = (tree / HEADER).read_text()
    if HEADER_ANCHOR not in text:
        raise SystemExit(f"{tree / HEADER}: the anchor for the header patch is not there")
    new = text.replace(HEADER_ANCHOR, HEADER_ANCHOR + "\tbarrier();\n", 1)
    with tempfile.TemporaryDirectory() as tmp:
        for side, body in (("a", text), ("b", new)):
            path = Path(tmp, side, HEADER)
            path.parent.mkdir(parents=True)
            path.write_text(body)
        diff = subprocess.run(["diff", "-u", f"a/{HEADER}", f"b/{HEADER}"], cwd=tmp, capture_output=True,
                              text=True).stdout
    dest.write_text(diff)
    return dest


def run_build(klpdiff: list[str], tree: Path, patch: Path, jobs: int, work: Path) -> dict[str, object]:
    report = work / f"{patch.stem}.json"
    start = time.perf_counter()
    proc = subprocess.run([*klpdiff, "build", "--kdir", str(tree), str(patch), "-q", "-j", str(jobs),
                           "-o", str(work / f"livepatch-{patch.stem}.ko"), "--json", str(report)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    doc = json.loads(report.read_text()) if report.exists() else {}
    return {"exit": proc.returncode, "wall": wall, "seconds": doc.get("seconds", {}),
            "objects": len(doc.get("objects", [])), "error": proc.stderr.strip()[-300:]}


def full_rebuild(tree: Path, jobs: int) -> float:
    """Seconds for a full per-function-sections build of a copy of the tree (what kpatch-build and
    klp-build need before any diff)."""
    with tempfile.TemporaryDirectory(prefix="klpdiff-full-") as tmp:
        copy = Path(tmp) / "tree"
        shutil.copytree(tree, copy, symlinks=True)
        subprocess.run(["make", "-C", str(copy), "-s", "clean"], check=True, capture_output=True)
        start = time.perf_counter()
        subprocess.run(["make", "-C", str(copy), f"-j{jobs}", "KCFLAGS=-ffunction-sections -fdata-sections"],
                       check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kdir", type=Path, default=E2E_TREE)
    p.add_argument("--full-rebuild", action="store_true", help="also time a full -ffunction-sections build")
    p.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)
    p.add_argument("--klpdiff", help="the klpdiff command (default: this checkout's package)")
    args = p.parse_args()
    if not (args.kdir / "vmlinux").exists():
        print(f"build_bench: {args.kdir} is not a built tree (run tests/e2e/run.sh x86_64 first)", file=sys.stderr)
        return 1
    klpdiff = [args.klpdiff] if args.klpdiff else [sys.executable, "-m", "klpdiff.cli"]
    print(f"tree: {args.kdir}  ({os.cpu_count()} cores, -j{args.jobs})")
    with tempfile.TemporaryDirectory(prefix="klpdiff-bench-") as tmp:
        work = Path(tmp)
        cases = (("one .c file", ONE_FILE), (f"header {HEADER}", header_patch(args.kdir, work / "header.patch")))
        for label, patch in cases:
            r = run_build(klpdiff, args.kdir, patch, args.jobs, work)
            phases = "  ".join(f"{k} {v:.2f}s" for k, v in dict(r["seconds"]).items())  # type: ignore[call-overload]
            print(f"klpdiff build, {label}: {r['wall']:.2f}s wall, exit {r['exit']}, {r['objects']} object(s): "
                  f"{phases}" + (f"  [{r['error']}]" if r["exit"] not in (0, 3) else ""))
    if args.full_rebuild:
        print(f"full rebuild with -ffunction-sections -fdata-sections: {full_rebuild(args.kdir, args.jobs):.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
