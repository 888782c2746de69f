#!/usr/bin/env python3
"""Mutation fuzzer for klpdiff's input boundary: corrupt objects never break the contract.

usage: python3 tests/fuzz/fuzz.py [--cases N] [--seed S] [--keep DIR]

It compiles the example pairs (tests/examples/cmdline.c and notrace-body.c; the rule cases' kernel-like
headers are not needed), then for each case takes the patched object of one of them in turn, applies
one seeded mutation (truncation, byte flips, or a targeted change to the ELF header, a section header,
a symbol, a relocation or a string table), runs `klpdiff ORIG MUTANT -o OUT --json REPORT` in this process, and checks:
- the exit code is 0, 1, 2 or 3 (4 is a klpdiff bug);
- on an error, stderr is one line that names a file, with no traceback;
- no OUT is left unless the exit code is 0 (and no REPORT on exit 1; a refusal's report stays);
- an OUT of exit 0 passes `readelf -aW` with no warning and `ld -r`.
Prints the counts and every violation (with its seed, to replay it); exit 1 when there is any.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import shutil
import struct
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
# the pairs mutated in turn: a plain fix, and one patched through its caller (a function with no ftrace site)
EXAMPLES = [ROOT / "tests" / "examples" / "cmdline.c", ROOT / "tests" / "examples" / "notrace-body.c"]
FLAGS = ["-O2", "-fno-pie", "-mcmodel=kernel", "-pg", "-mfentry", "-mrecord-mcount", "-ffunction-sections",
         "-fdata-sections", "-fno-asynchronous-unwind-tables", "-c"]


def _sections(data: bytes) -> list[tuple[int, int, int, int]]:
    """(header offset, type, file offset, size) of each section header."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shnum, = struct.unpack_from("<H", data, 0x3C)
    out = []
    for i in range(shnum):
        h = shoff + 64 * i
        if h + 64 > len(data):
            break
        _name, typ = struct.unpack_from("<II", data, h)
        off, size = struct.unpack_from("<QQ", data, h + 24)
        out.append((h, typ, off, size))
    return out


def _entries(data: bytes, sh_type: int, size: int) -> list[int]:
    """File offsets of the fixed-size entries of every section of one type (2 symtab, 4 rela)."""
    out: list[int] = []
    for _h, typ, off, sz in _sections(data):
        if typ == sh_type:
            out.extend(range(off, min(off + sz, len(data) - size + 1), size))
    return out


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One seeded mutation and what it was."""
    buf = bytearray(data)
    kind = rng.choice(["truncate", "flip", "header", "shdr", "symbol", "rela", "strtab"])
    if kind == "truncate":
        cut = rng.randrange(len(buf))
        return bytes(buf[:cut]), f"truncate at {cut}"
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        return bytes(buf), "byte flips"
    if kind == "header":
        at = rng.randrange(16, 64)
        buf[at] = rng.randrange(256)
        return bytes(buf), f"ELF header byte {at}"
    if kind == "shdr":
        sections = _sections(data)
        h, _t, _o, _s = rng.choice(sections)
        field = rng.choice([(4, "<I"), (8, "<Q"), (24, "<Q"), (32, "<Q"), (40, "<I"), (44, "<I"), (56, "<Q")])
        struct.pack_into(field[1], buf, h + field[0], rng.choice([0, 1, 0xFFFF, 2**31, rng.randrange(2**16)]))
        return bytes(buf), f"section header {h} field {field[0]}"
    if kind == "symbol":
        entry = rng.choice(_entries(data, 2, 24))
        field = rng.choice([(0, "<I"), (4, "<B"), (6, "<H"), (8, "<Q"), (16, "<Q")])
        value = rng.choice([0, 1, 4, 0xFFF1, 0xFF00, 0x7FFF, 2**20, rng.randrange(2**8)])
        struct.pack_into(field[1], buf, entry + field[0], value & {"<I": 2**32 - 1, "<B": 255, "<H": 2**16 - 1,
                                                                   "<Q": 2**64 - 1}[field[1]])
        return bytes(buf), f"symbol at {entry} field {field[0]} = {value}"
    if kind == "rela":
        entries = _entries(data, 4, 24)
        if not entries:
            return bytes(buf), "no relocation"
        entry = rng.choice(entries)
        which = rng.choice(["offset", "type", "sym", "addend"])
        if which == "offset":
            struct.pack_into("<Q", buf, entry, rng.choice([0, 2**20, rng.randrange(4096)]))
        elif which in ("type", "sym"):
            info, = struct.unpack_from("<Q", buf, entry + 8)
            value = rng.choice([0, 1, 2, 0xFFF, rng.randrange(64)])
            info = (info & ~0xFFFFFFFF) | value if which == "type" else (value << 32) | (info & 0xFFFFFFFF)
            struct.pack_into("<Q", buf, entry + 8, info)
        else:
            struct.pack_into("<q", buf, entry + 16, rng.choice([-2**40, 2**40, rng.randrange(-64, 64)]))
        return bytes(buf), f"relocation at {entry} {which}"
    strtabs = [(o, s) for _h, t, o, s in _sections(data) if t == 3 and s]
    off, size = rng.choice(strtabs)
    buf[off + rng.randrange(size)] = rng.choice([0, ord("x"), 0xFF])
    return bytes(buf), f"string table at {off}"


def run_klpdiff(argv: list[str]) -> tuple[int, str]:
    from klpdiff.cli.main import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def check_output(out: Path, readelf: str, ld: str | None) -> str:
    proc = subprocess.run([readelf, "-aW", str(out)], capture_output=True, text=True, errors="replace")
    if proc.returncode or proc.stderr.strip():
        return f"readelf: {proc.stderr.strip().splitlines()[:1]}"
    if ld is not None:
        proc = subprocess.run([ld, "-r", "-o", str(out) + ".ld", str(out)], capture_output=True, text=True,
                              errors="replace")
        if proc.returncode:
            return f"ld -r: {proc.stderr.strip().splitlines()[:1]}"
    return ""


def fuzz(cases: int, seed: int, work: Path, report: bool = True) -> list[str]:
    gcc = shutil.which("gcc") or shutil.which("x86_64-linux-gnu-gcc")
    readelf = shutil.which("readelf")
    ld = shutil.which("ld")
    assert gcc and readelf, "needs gcc and readelf for x86_64"
    pairs = []
    for example in EXAMPLES:
        orig, patched = work / f"{example.stem}.orig.o", work / f"{example.stem}.patched.o"
        subprocess.run([gcc, *FLAGS, str(example), "-o", str(orig)], check=True)
        subprocess.run([gcc, *FLAGS, "-DPATCHED", str(example), "-o", str(patched)], check=True)
        pairs.append((orig, patched.read_bytes()))
    codes: Counter[int] = Counter()
    violations = []
    for n in range(cases):
        case_seed = seed * 1_000_003 + n
        orig, source = pairs[n % len(pairs)]  # the examples take turns
        data, what = mutate(source, random.Random(case_seed))
        mutant, out, rep = work / "mutant.o", work / "out.o", work / "report.json"
        mutant.write_bytes(data)
        for stale in (out, rep):
            stale.unlink(missing_ok=True)
        code, err = run_klpdiff([str(orig), str(mutant), "-o", str(out), "--json", str(rep)])
        codes[code] += 1
        problem = ""
        if code not in (0, 1, 2, 3):
            problem = f"exit {code}: {err.strip()[:300]}"
        elif "Traceback" in err:
            problem = "traceback"
        elif code == 1 and (len(err.strip().splitlines()) != 1 or (str(mutant) not in err and str(orig) not in err)):
            problem = f"error is not one line naming a file: {err.strip()[:300]}"
        elif code != 0 and out.exists():  # (a refusal's JSON report is this run's report: it may stay)
            problem = f"exit {code} left an output"
        elif code == 1 and rep.exists():
            problem = "exit 1 wrote a report"
        elif code == 0:
            problem = check_output(out, readelf, ld)
        if problem:
            violations.append(f"seed {case_seed} ({orig.name}, {what}): {problem}")
    if report:
        print(f"fuzz: {cases} cases, seed {seed}: exit codes {dict(sorted(codes.items()))}, "
              f"{len(violations)} violation(s)")
        for v in violations:
            print(f"  {v}")
    return violations


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="klpdiff-fuzz-") as tmp:
        return 1 if fuzz(args.cases, args.seed, Path(tmp)) else 0


if __name__ == "__main__":
    sys.exit(main())
