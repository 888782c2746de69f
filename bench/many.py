#!/usr/bin/env python3
"""Many object pairs in one process, as `klpdiff build` diffs them: one at a time, then with -j workers.

Prints both wall times and the speed-up; asserts nothing, but says whether every output object and every
report is byte-identical between the two runs. The pairs are the public corpus's (../shared/corpus/
kpatch-unit, every arch), each diffed both ways (the fix, and the fix undone), the first N of them.

usage: bench/many.py [--pairs N] [-j JOBS]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from klpdiff.batch import DiffJob, diff_many
from klpdiff.errors import KlpdiffError
from klpdiff.pipeline import Options

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "kpatch-unit"


def pairs() -> list[tuple[Path, Path]]:
    found = []
    for orig in sorted(CORPUS.glob("*/*.ORIG.o")):
        stem = orig.name[: -len(".ORIG.o")]
        for patched in sorted(orig.parent.glob(f"{stem}.PATCHED*.o")):
            found += [(orig, patched), (patched, orig)]
    return found


def usable(orig: Path, patched: Path, out: Path) -> bool:
    """Pairs that are not bad input (a batch stops at bad input, as a single diff does)."""
    try:
        diff_many([DiffJob(orig, patched, out, Options())], 1)
        return True
    except KlpdiffError:
        return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=200)
    p.add_argument("-j", "--jobs", type=int, default=2)
    args = p.parse_args()
    if not CORPUS.is_dir():
        print(f"many: skipped ({CORPUS} not found)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        chosen = [pr for pr in pairs() if usable(*pr, work / "probe.o")][: args.pairs]
        runs = {}
        for label, jobs in (("one at a time", 1), (f"-j {args.jobs}", args.jobs)):
            folder = work / str(jobs)
            folder.mkdir()
            batch = [DiffJob(o, q, folder / f"{n}.o", Options()) for n, (o, q) in enumerate(chosen)]
            start = time.perf_counter()
            results = diff_many(batch, jobs)
            seconds = time.perf_counter() - start
            outputs = [r.output.read_bytes() if r.output else b"" for r in results]
            reports = [json.dumps({**r.facts, "output": None}, sort_keys=True) for r in results]
            runs[label] = (seconds, outputs, reports)
            print(f"{len(batch)} pairs, {label:14}: {seconds:6.2f} s")
        (s1, out1, rep1), (sj, outj, repj) = runs.values()
        same = out1 == outj and rep1 == repj
        print(f"speed-up with -j {args.jobs}: {s1 / sj:.2f}x; outputs and reports identical: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
