#!/usr/bin/env python3
"""Patch-file fuzzer: a mutated real patch given to `klpdiff build --check` never breaks the contract
and never changes the kernel tree.

usage: python3 tests/fuzz/patches.py --kdir TREE [--cases N] [--seed S] [--timeout SECONDS] [-v]
       python3 tests/fuzz/patches.py --kdir TREE --replay SEED

TREE is a built kernel tree (`tests/e2e/tree.sh x86_64` prints the e2e one). The patches mutated are
the e2e patches (tests/e2e/patches) and, when ../shared is there, kpatch's integration patches for
Linux 6.17 (they apply to Debian's 6.12 source, which the e2e tree is). Each case takes one of them and
applies one to three seeded mutations:
- hunks: header numbers off, zero, huge or missing; lines dropped, doubled, re-prefixed, rewritten,
  added without a prefix; "\\ No newline at end of file";
- headers and paths: absolute, `..`, /dev/null, another file of the tree (a header, Makefile, an
  assembly file, a folder, an object, a link), a file that does not exist, quoted, with a timestamp,
  without a/ and b/, not UTF-8, over 4,096 bytes;
- git's extended headers: new, deleted, renamed, copied files, mode changes, binary patches;
- encodings: CRLF or CR line ends, a byte-order mark, UTF-16, NUL and Latin-1 bytes, tabs to spaces;
- the whole: cut at a byte, a file patched twice, another patch appended, hunks reordered, headers
  dropped, a mail header or signature around it, garbage, empty.
Then it runs `klpdiff build --check -q --kdir TREE MUTANT.patch` (sometimes with --fuzz N or --json),
each a separate process (`contract.run`), and checks: the contract (`contract.judge`: exit 0-3, no
traceback, an error in one line; no hang); nothing left in its folder but the patch (and a report),
nothing in its temporary folder; and no event in the tree (inotifywait watches every file and folder
of it for writes, attribute changes, creations, deletions and moves; without inotifywait, the tree's
file metadata is compared every 25 cases). The tree's full fingerprint (tests/e2e/tree_fingerprint.py,
contents included) must be the same at the end. Prints the counts and every violation with its seed;
exit 1 when there is any.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))
from tests.fuzz import contract

ROOT = contract.ROOT
SOURCES = [*sorted((ROOT / "tests" / "e2e" / "patches").glob("*.patch")),
           *sorted((ROOT.parent / "shared" / "corpus" / "kpatch-integration" / "linux-6.17.0").glob("*.patch"))]
# files of the tree a mutated header may name instead: a header, kbuild files, assembly, a folder,
# a generated file, text, a file not compiled in a small config; and what does not exist
OTHER_PATHS = ["include/linux/kernel.h", "include/linux/sched.h", "Makefile", "Kconfig", "fs/proc/Makefile",
               "arch/x86/entry/entry_64.S", "fs/proc", "fs", "init/main.c", "kernel/sys.c", "lib/string.c",
               "scripts/Makefile.build", "Documentation/Changes", "README", "fs/proc/cmdline.o",
               "include/generated/autoconf.h", ".config", "drivers/gpu/drm/i915/i915_drv.c", "fs/xfs/xfs_super.c",
               "fs/proc/nope.c", "nope/nope.c", "fs/proc/cmdline.c/x", "fs/proc/../proc/cmdline.c",
               "./fs/proc/cmdline.c", "fs//proc/cmdline.c", "FS/PROC/CMDLINE.C", "vmlinux", "System.map"]
GIT_HEADERS = ["new file mode 100644", "deleted file mode 100644", "old mode 100644\nnew mode 100755",
               "rename from {p}\nrename to {p}.renamed", "copy from {p}\ncopy to {p}.copy", "similarity index 90%",
               "index 0000000..1111111 100644", "new file mode 120000", "GIT binary patch\nliteral 5\n"
               "McmZQzU|?VZ0000300RI3\n\nliteral 0\nHcmV?d00001\n", "Binary files a/{p} and b/{p} differ",
               "dissimilarity index 100%", "index 1234567..89abcde"]


def _lines(text: bytes) -> list[bytes]:
    return text.split(b"\n")


def _hunk_numbers(rng: random.Random, lines: list[bytes]) -> str:
    heads = [i for i, line in enumerate(lines) if line.startswith(b"@@")]
    if not heads:
        return "no hunk"
    i = rng.choice(heads)
    numbers = [m for m in re.finditer(rb"\d+", lines[i])][:4]
    if not numbers:
        return "no numbers"
    m = rng.choice(numbers)
    value = int(m.group())
    new = rng.choice([b"0", b"1", str(value + 1).encode(), str(max(value - 1, 0)).encode(), str(value + 10).encode(),
                      b"99999999", str(2**64).encode(), b"", b"x", b"-1"])
    lines[i] = lines[i][:m.start()] + new + lines[i][m.end():]
    return f"hunk header {lines[i][:60]!r}"


def _hunk_body(rng: random.Random, lines: list[bytes]) -> str:
    body = [i for i, line in enumerate(lines) if line[:1] in (b" ", b"+", b"-") and not line.startswith((b"+++",
                                                                                                        b"---"))]
    if not body:
        return "no body"
    i = rng.choice(body)
    act = rng.randrange(8)
    if act == 0:
        del lines[i]
        return f"dropped line {i}"
    if act == 1:
        lines.insert(i, lines[i])
        return f"doubled line {i}"
    if act == 2:
        lines[i] = rng.choice([b" ", b"+", b"-"]) + lines[i][1:]
        return f"re-prefixed line {i}"
    if act == 3:
        tokens = [b"int", b"x", b"=", b";", b"{", b"}", b"(", b")", b"return", b"0", b"static", b"#define", b"__LINE__",
                  b"printk(\"%d\", 1)", b"struct seq_file", b"goto", b"*", b"void"]
        lines[i] = lines[i][:1] + b"\t" + b" ".join(rng.choice(tokens) for _ in range(rng.randrange(1, 8)))
        return f"rewrote line {i}"
    if act == 4:
        lines.insert(i, lines[i][1:])
        return f"unprefixed line {i}"
    if act == 5:
        lines.insert(i + 1, b"\\ No newline at end of file")
        return f"no-newline marker after {i}"
    if act == 6:
        lines.insert(i, b"")
        return f"empty line at {i}"
    lines.insert(i, b"+" + bytes(rng.randrange(32, 127) for _ in range(rng.randrange(0, 80))))
    return f"random added line at {i}"


def _paths(rng: random.Random, lines: list[bytes]) -> str:
    heads = [i for i, line in enumerate(lines) if line.startswith((b"--- ", b"+++ "))]
    if not heads:
        return "no header"
    i = rng.choice(heads)
    side = lines[i][:4]
    old = lines[i][4:].split(b"\t")[0]
    plain = old[2:] if old[:2] in (b"a/", b"b/") else old
    pick = rng.randrange(12)
    if pick == 0:
        new = b"/dev/null"
    elif pick == 1:
        new = rng.choice([b"/etc/passwd", b"/tmp/x.c", b"a/../../" + plain, b"a/" + plain.replace(b"/", b"/../", 1),
                          b"../" + plain])
    elif pick == 2:
        new = b"a/" + os.fsencode(rng.choice(OTHER_PATHS))
    elif pick == 3:
        new = plain  # no a/ b/ prefix
    elif pick == 4:
        new = b'"' + old + b'"' if rng.random() < 0.5 else b'"a/fs/proc/\\303\\251\\n.c"'
    elif pick == 5:
        new = old + b"\t2026-12-06 10:00:00.000000000 +0000"
    elif pick == 6:
        new = b"a/fs/proc/\xff\xfe.c"
    elif pick == 7:
        new = b"a/" + b"/".join([b"d" * 200] * 25) + b".c"
    elif pick == 8:
        new = b"a/x/y/" + plain
    elif pick == 9:
        new = old + b" with space"
    elif pick == 10:
        new = b""
    else:
        new = old.upper()
    lines[i] = side + new
    return f"{side.decode().strip()} {new[:60]!r}"


def _git(rng: random.Random, lines: list[bytes]) -> str:
    heads = [i for i, line in enumerate(lines) if line.startswith(b"--- ")]
    if not heads:
        return "no header"
    i = rng.choice(heads)
    old = lines[i][4:].split(b"\t")[0]
    plain = (old[2:] if old[:2] in (b"a/", b"b/") else old).decode("utf-8", "replace")
    header = rng.choice(GIT_HEADERS).format(p=plain)
    block = [f"diff --git a/{plain} b/{plain}".encode(), *header.encode().split(b"\n")]
    if rng.random() < 0.3:  # git's own form: a binary patch or a pure rename has no ---/+++ lines
        end = next((j for j in range(i + 2, len(lines)) if lines[j].startswith(b"--- ")), len(lines))
        lines[i:end] = block
    else:
        lines[i:i] = block
    return f"git header {header.splitlines()[0][:40]!r}"


def _encoding(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    pick = rng.randrange(8)
    if pick == 0:
        return data.replace(b"\n", b"\r\n"), "CRLF"
    if pick == 1:
        return data.replace(b"\n", b"\r"), "CR"
    if pick == 2:
        return b"\xef\xbb\xbf" + data, "byte-order mark"
    if pick == 3:
        return data.decode("utf-8", "replace").encode("utf-16"), "UTF-16"
    if pick == 4:
        at = rng.randrange(len(data) + 1)
        return data[:at] + b"\0" + data[at:], f"NUL at {at}"
    if pick == 5:
        at = rng.randrange(len(data) + 1)
        return data[:at] + b"\xe9\xff" + data[at:], f"Latin-1 bytes at {at}"
    if pick == 6:
        return data.replace(b"\n\t", b"\n        "), "tabs to spaces"
    lines = _lines(data)
    i = rng.randrange(len(lines))
    lines[i] += b"\r"
    return b"\n".join(lines), f"one CR at line {i}"


def _whole(rng: random.Random, data: bytes, other: bytes) -> tuple[bytes, str]:
    pick = rng.randrange(11)
    if pick == 0:
        cut = rng.randrange(len(data) + 1)
        return data[:cut], f"cut at {cut}"
    if pick == 1:
        return data + data, "twice"
    if pick == 2:
        return data + other, "another patch appended"
    if pick == 3:
        parts = re.split(rb"(?m)^(?=@@)", data)
        head, hunks = parts[0], parts[1:]
        rng.shuffle(hunks)
        return head + b"".join(hunks), "hunks shuffled"
    if pick == 4:
        return re.sub(rb"(?m)^\+\+\+ .*\n", b"", data, count=1), "no +++ line"
    if pick == 5:
        return re.sub(rb"(?m)^--- .*\n", b"", data, count=1), "no --- line"
    if pick == 6:
        return (b"From 0123456789abcdef Mon Sep 17 00:00:00 2001\nFrom: A <a@b>\nSubject: [PATCH] fix\n\n"
                b"body\n---\n fs/x.c | 1 +\n\n" + data + b"-- \n2.39.5\n"), "mail header and signature"
    if pick == 7:
        return b"".join(line + b"\n" for line in _lines(data) if not line.startswith(b"@@")), "no hunk headers"
    if pick == 8:
        return b"", "empty"
    if pick == 9:
        return random.Random(rng.random()).randbytes(rng.randrange(1, 2000)), "garbage"
    at = rng.randrange(len(data) + 1)
    return data[:at] + random.Random(rng.random()).randbytes(rng.randrange(1, 40)) + data[at:], f"garbage at {at}"


def mutate(data: bytes, other: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One to three seeded mutations of a patch, and what they were."""
    what = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        family = rng.choices(["numbers", "body", "paths", "git", "encoding", "whole"], weights=[3, 5, 4, 2, 2, 2])[0]
        if family in ("encoding", "whole"):
            data, said = _encoding(rng, data) if family == "encoding" else _whole(rng, data, other)
        else:
            lines = _lines(data)
            edit: Callable[[random.Random, list[bytes]], str] = {"numbers": _hunk_numbers, "body": _hunk_body,
                                                                 "paths": _paths, "git": _git}[family]
            said = edit(rng, lines)
            data = b"\n".join(lines)
        what.append(said)
    return data, "; ".join(what)


class TreeWatch:
    """Every change inside a tree while it is watched: inotifywait's events, or (without it) a
    comparison of every file's metadata, made when asked."""

    def __init__(self, tree: Path, log: Path) -> None:
        self.tree, self.log, self.seen = tree, log, 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.snapshot: dict[str, tuple[int, int, int]] = {}
        if shutil.which("inotifywait"):
            with open(log, "wb") as out:  # (the child keeps its own copy of the descriptor)
                self.proc = subprocess.Popen(
                    ["inotifywait", "-m", "-r", "-e", "modify,attrib,close_write,move,create,delete,delete_self",
                     "--format", "%w%f %e", str(tree)], stdout=out, stderr=subprocess.PIPE)
            assert self.proc.stderr is not None
            said = b""
            while b"Watches established" not in said:  # after "Setting up watches."
                said = self.proc.stderr.readline()
                if not said:
                    raise SystemExit("inotifywait ended before it watched the tree")
        else:
            self.snapshot = self._stat()

    def _stat(self) -> dict[str, tuple[int, int, int]]:
        out = {}
        for dirpath, dirs, files in os.walk(self.tree):
            for name in dirs + files:
                st = os.lstat(os.path.join(dirpath, name))
                out[os.path.join(dirpath, name)] = (st.st_mode, st.st_size, st.st_mtime_ns)
        return out

    def events(self, n: int) -> list[str]:
        """What changed since the last call (with inotifywait, after a moment for its events to come)."""
        if self.proc is None:
            if n % 25:
                return []
            now = self._stat()
            changed = sorted(p for p in now.keys() | self.snapshot.keys() if now.get(p) != self.snapshot.get(p))
            self.snapshot = now
            return changed[:5]
        time.sleep(0.05)
        data = self.log.read_bytes()
        new, self.seen = data[self.seen:], len(data)
        return [line.decode(errors="replace") for line in new.splitlines()][:5]

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()


def fuzz(cases: int, seed: int, work: Path, kdir: Path, timeout: float = 300, report: bool = True,
         sources: list[Path] | None = None, verbose: bool = False, first: int = 0) -> list[str]:
    patches = [p.read_bytes() for p in (sources or SOURCES)]
    names = [p.name for p in (sources or SOURCES)]
    fingerprint = contract.fingerprint(kdir)
    run_dir, tmp = work / "run", work / "tmp"
    tmp.mkdir()
    watch = TreeWatch(kdir, work / "events.log")
    codes: Counter[int | None] = Counter()
    violations = []
    try:
        for n in range(first, first + cases):
            case_seed = seed * 1_000_003 + n
            rng = random.Random(case_seed)
            k = rng.randrange(len(patches))
            data, what = mutate(patches[k], rng.choice(patches), rng)
            run_dir.mkdir()
            patch = run_dir / "fix.patch"
            patch.write_bytes(data)
            words: list[contract.Word] = ["build", "--check", "-q", "--kdir", str(kdir), str(patch), "-j", "2"]
            if rng.random() < 0.3:
                words += ["--fuzz", str(rng.choice([0, 1, 3, 10]))]
            if rng.random() < 0.2:
                words += ["--json", "report.json"]
            start = contract.listing(run_dir)
            outcome = contract.run(words, run_dir, tmp, timeout)
            codes[outcome.code] += 1
            if verbose:
                print(f"{case_seed} exit {outcome.code} ({names[k]}: {what}): "
                      f"{contract.one_line_of(outcome.stderr)}")
            problems = contract.judge(outcome, timeout=timeout)
            allowed = [b"report.json"] if outcome.code in (0, 2, 3) else []
            problems += contract.leftovers(start, contract.listing(run_dir), allowed)
            problems += [f"left {os.fsdecode(p)!r} in TMPDIR" for p in sorted(contract.listing(tmp))[:3]]
            problems += [f"the tree changed: {e}" for e in watch.events(n)]
            if problems:
                violations.append(f"seed {case_seed} ({names[k]}: {what}): {'; '.join(problems)}")
                if report:
                    print(f"  {violations[-1]}", flush=True)
            shutil.rmtree(run_dir)
            contract.clear(tmp)
            if report and (n + 1 - first) % 250 == 0:
                print(f"patches: {n + 1 - first} cases, {len(violations)} violation(s) so far", flush=True)
    finally:
        watch.close()
    if contract.fingerprint(kdir) != fingerprint:
        violations.append(f"{kdir}: the tree's fingerprint changed")
    if report:
        print(f"patches: {cases} cases, seed {seed}, {len(patches)} source patches: exit codes "
              f"{dict(sorted(codes.items(), key=lambda kv: str(kv[0])))}, {len(violations)} violation(s)")
    return violations


def main() -> int:
    p = contract.command_line(__doc__, cases=200, timeout=300)
    p.add_argument("--kdir", type=Path, required=True, help="a built kernel tree")
    args = p.parse_args()
    seed, first, cases = contract.cases_of(args)
    with tempfile.TemporaryDirectory(prefix="klpdiff-fuzz-patches-") as tmp:
        return 1 if fuzz(cases, seed, Path(tmp), args.kdir.resolve(), args.timeout, first=first,
                         verbose=args.verbose or args.replay is not None) else 0


if __name__ == "__main__":
    sys.exit(main())
