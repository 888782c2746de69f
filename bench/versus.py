#!/usr/bin/env python3
"""Two klpdiff checkouts side by side on the same pairs: prints figures, asserts nothing.

For a change that must not cost speed (a reshaping, say): each checkout's own venv (CHECKOUT/.venv, as
./test.sh makes it) diffs the eight largest public pairs in process (`run`, after one warm-up run per
pair) and as a command, in rounds that alternate the two sides so that this machine's noise falls on
both. Each round prints, per side, the sum over the pairs of each pair's best in-process time and best
command time; the summary gives the range over rounds and the ratio of the medians.

usage: bench/versus.py OLD_CHECKOUT NEW_CHECKOUT [--rounds N] [--repeat N]
   e.g. git worktree add /tmp/old REV && (cd /tmp/old && python3 -m venv .venv && .venv/bin/pip install -e .)
        bench/versus.py /tmp/old .
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "kpatch-unit"

# Runs inside a checkout's own Python: times klpdiff.diff.pipeline.run on each pair, in process and as
# the checkout's klpdiff command, and prints the per-pair bests as JSON.
_ROUND = r"""
import json, subprocess, sys, tempfile, time
from pathlib import Path
from klpdiff.diff.pipeline import Options, run
pairs, repeat = json.loads(sys.argv[1]), int(sys.argv[2])
command = str(Path(sys.executable).with_name("klpdiff"))
inproc, as_command = [], []
with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "out.o"
    for orig, patched in pairs:
        run(Path(orig), Path(patched), out, Options())  # warms the rule cache
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            run(Path(orig), Path(patched), out, Options())
            times.append(time.perf_counter() - start)
        inproc.append(min(times))
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            subprocess.run([command, "-q", orig, patched, "-o", str(out)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
        as_command.append(min(times))
print(json.dumps({"inproc": inproc, "command": as_command}))
"""


def largest_pairs(count: int) -> list[tuple[str, str]]:
    found = []
    for orig in CORPUS.glob("*/*.ORIG.o"):
        stem = orig.name[: -len(".ORIG.o")]
        patched = next(iter(sorted(orig.parent.glob(f"{stem}.PATCHED*.o"))), None)
        if patched is not None:
            found.append((orig.stat().st_size + patched.stat().st_size, str(orig), str(patched)))
    found.sort(reverse=True)
    return [(o, p) for _size, o, p in found[:count]]


def one_round(checkout: Path, pairs: list[tuple[str, str]], repeat: int) -> dict[str, float]:
    python = checkout / ".venv" / "bin" / "python"
    subprocess.run([str(python), "-m", "compileall", "-q", str(checkout / "engine")], check=True)
    proc = subprocess.run([str(python), "-c", _ROUND, json.dumps(pairs), str(repeat)], capture_output=True,
                          text=True, check=True)
    found = json.loads(proc.stdout)
    return {kind: sum(times) for kind, times in found.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--repeat", type=int, default=5, help="runs per pair and round; the best counts")
    args = p.parse_args()
    if not CORPUS.is_dir():
        print(f"no corpus at {CORPUS}", file=sys.stderr)
        return 1
    pairs = largest_pairs(8)
    totals: dict[str, dict[str, list[float]]] = {"old": {"inproc": [], "command": []},
                                                 "new": {"inproc": [], "command": []}}
    for n in range(args.rounds):
        for side in (("old", "new") if n % 2 == 0 else ("new", "old")):
            found = one_round(getattr(args, side), pairs, args.repeat)
            for kind, value in found.items():
                totals[side][kind].append(value)
            print(f"round {n + 1} {side}: in process {found['inproc']:.3f} s, as commands {found['command']:.3f} s "
                  f"(8 pairs, each its best of {args.repeat})", flush=True)
    for kind, label in (("inproc", "in process"), ("command", "as commands")):
        old, new = totals["old"][kind], totals["new"][kind]
        print(f"{label}: old {min(old):.3f}-{max(old):.3f} s, new {min(new):.3f}-{max(new):.3f} s over "
              f"{args.rounds} rounds; new/old of the medians {statistics.median(new) / statistics.median(old):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
