#!/usr/bin/env python3
"""klpdiff build benchmark: prints figures, asserts nothing.

On an already-built kernel tree (default: the x86_64 e2e kernel, ~/.cache/klpdiff-e2e/x86_64), or on a
distribution's stock kernel by name (--kernel RELEASE: fetched and prepared by the first run, which is
timed on its own), it times `klpdiff build` phase by phase (kernel, find, compile, diff, module) for
1. a one-.c-file patch (tests/e2e/patches/user-access.patch, fs/read_write.c), and
2. a header patch (a change to an inline helper in fs/proc/internal.h, which every fs/proc object
   includes),
and, side by side, what the tools that need the whole kernel built with per-function sections pay
before they can diff anything: a full `make KCFLAGS="-ffunction-sections -fdata-sections"` of a copy
of the same tree (--full-rebuild; minutes).

usage: bench/build_bench.py [--kdir TREE | --kernel RELEASE] [--runs N] [--full-rebuild] [-j N]
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

from klpdiff.core.cachedir import cache_dir

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


def run_build(klpdiff: list[str], target: list[str], patch: Path, jobs: int, work: Path) -> dict[str, object]:
    report = work / f"{patch.stem}.json"
    report.unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.run([*klpdiff, "build", *target, "--fuzz", "3", str(patch), "-q", "-j", str(jobs),
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


def stock_tree(release: str) -> Path:
    """Where klpdiff build --kernel keeps the prepared tree of a Debian kernel."""
    base: Path | None = cache_dir()
    if base is None:
        raise SystemExit("build_bench: klpdiff's cache is turned off (KLPDIFF_CACHE_DIR is empty)")
    return base / "kernels" / "debian" / release / "tree"


def line(label: str, runs: list[dict[str, object]]) -> str:
    """One case: wall time and each phase as a range over the runs."""
    def span(values: list[float]) -> str:
        return f"{min(values):.2f}s" if len(values) == 1 or min(values) == max(values) else \
            f"{min(values):.2f}-{max(values):.2f}s"

    phases: dict[str, list[float]] = {}
    for r in runs:
        for k, v in dict(r["seconds"]).items():  # type: ignore[call-overload]
            phases.setdefault(k, []).append(float(v))
    last = runs[-1]
    walls = [float(r["wall"]) for r in runs]  # type: ignore[arg-type]
    text = "  ".join(f"{k} {span(v)}" for k, v in phases.items())
    return (f"klpdiff build, {label}: {span(walls)} wall over {len(runs)} run(s), exit {last['exit']}, "
            f"{last['objects']} object(s): {text}" + (f"  [{last['error']}]" if last["exit"] not in (0, 3) else ""))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group()
    where.add_argument("--kdir", type=Path, default=E2E_TREE)
    where.add_argument("--kernel", metavar="RELEASE", help="a Debian stock kernel, as klpdiff build --kernel takes it")
    p.add_argument("--runs", type=int, default=3, help="runs per case (the figures are ranges)")
    p.add_argument("--full-rebuild", action="store_true", help="also time a full -ffunction-sections build")
    p.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)
    p.add_argument("--klpdiff", help="the klpdiff command (default: this checkout's package)")
    args = p.parse_args()
    klpdiff = [args.klpdiff] if args.klpdiff else [sys.executable, "-m", "klpdiff.cli"]
    with tempfile.TemporaryDirectory(prefix="klpdiff-bench-") as tmp:
        work = Path(tmp)
        if args.kernel:
            target = ["--kernel", args.kernel]
            tree = stock_tree(args.kernel)
            prepared = tree.exists()
            first = run_build(klpdiff, target, ONE_FILE, args.jobs, work)
            print(line("first run on " + args.kernel + (" (already prepared)" if prepared else ""), [first]))
        else:
            target, tree = ["--kdir", str(args.kdir)], args.kdir
            if not (tree / "vmlinux").exists():
                print(f"build_bench: {tree} is not a built tree (run tests/e2e/run.sh x86_64 first)",
                      file=sys.stderr)
                return 1
        print(f"tree: {tree}  ({os.cpu_count()} cores, -j{args.jobs})")
        cases = (("one .c file", ONE_FILE), (f"header {HEADER}", header_patch(tree, work / "header.patch")))
        for label, patch in cases:
            print(line(label, [run_build(klpdiff, target, patch, args.jobs, work) for _ in range(args.runs)]))
    if args.full_rebuild and not args.kernel:
        print(f"full rebuild with -ffunction-sections -fdata-sections: {full_rebuild(args.kdir, args.jobs):.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
