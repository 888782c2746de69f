#!/usr/bin/env python3
"""Many object pairs in one process, as `klpdiff build` diffs them: one at a time, then with -j workers.

Prints both wall times (the best of --repeat runs of each, alternating, as bench.py takes the best of its
runs) and the speed-up; asserts nothing, but says whether every output object and every report is
byte-identical in every run. The pairs are the public corpus's (../shared/corpus/
kpatch-unit, every arch), each diffed both ways (the fix, and the fix undone), the first N of them.

usage: bench/many.py [--pairs N] [-j JOBS] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from klpdiff.build.batch import DiffJob, diff_many
from klpdiff.core.errors import KlpdiffError
from klpdiff.diff.pipeline import Options

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


def timed_batch(chosen: list[tuple[Path, Path]], folder: Path, jobs: int) -> tuple[float, list[bytes], list[str]]:
    """One run of the whole batch: its wall time, the output objects and the reports."""
    folder.mkdir()
    batch = [DiffJob(o, q, folder / f"{n}.o", Options()) for n, (o, q) in enumerate(chosen)]
    start = time.perf_counter()
    results = diff_many(batch, jobs)
    seconds = time.perf_counter() - start
    outputs = [r.output.read_bytes() if r.output else b"" for r in results]
    reports = [json.dumps({**r.facts, "output": None}, sort_keys=True) for r in results]
    return seconds, outputs, reports


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=200)
    p.add_argument("-j", "--jobs", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3,
                   help="runs of each, alternating; the best of each is compared, as bench.py does")
    args = p.parse_args()
    if not CORPUS.is_dir():
        print(f"many: skipped ({CORPUS} not found)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        chosen = [pr for pr in pairs() if usable(*pr, work / "probe.o")][: args.pairs]
        times: dict[int, list[float]] = {1: [], args.jobs: []}
        first: dict[int, tuple[list[bytes], list[str]]] = {}
        same = True
        for run in range(args.repeat):
            for jobs in times:
                seconds, outputs, reports = timed_batch(chosen, work / f"{run}-{jobs}", jobs)
                times[jobs].append(seconds)
                first.setdefault(jobs, (outputs, reports))
                same = same and (outputs, reports) == first[1]
        for jobs, label in ((1, "one at a time"), (args.jobs, f"-j {args.jobs}")):
            runs = ", ".join(f"{t:.2f}" for t in times[jobs])
            print(f"{len(chosen)} pairs, {label:14}: best {min(times[jobs]):6.2f} s  (runs: {runs})")
        print(f"speed-up with -j {args.jobs}: {min(times[1]) / min(times[args.jobs]):.2f}x best to best; "
              f"outputs and reports identical: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
