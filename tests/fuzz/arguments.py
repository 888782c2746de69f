#!/usr/bin/env python3
"""Argument-boundary fuzzer: what a user can type after `klpdiff` never breaks the contract.

usage: python3 tests/fuzz/arguments.py [--cases N] [--seed S] [--kdir TREE] [--timeout SECONDS] [-v]
       python3 tests/fuzz/arguments.py --replay SEED   (one case, as a violation names it)

Every command (the differ, explain, rules lint|audit|show|test, post-link, module, build --check) starts
from a command line that works, then one to three of its arguments are replaced, dropped or repeated.
An argument that takes a file gets a hostile path: missing, empty, text, random bytes, a cut ELF, an
executable, a 64 GiB sparse file, a folder, a FIFO, a socket, devices, /proc files, link loops, dangling
links, a path through a file, a trailing slash, names of 255 and 256 bytes, a path longer than PATH_MAX,
names that are not UTF-8 or hold a newline, option-like names, an output naming an input (also through
a link or a hard link), rule folders holding a FIFO, an alias bomb, deeply nested or huge YAML. A name
or number gets empty, long, non-UTF-8, path-like, negative or huge values. Some runs have LC_ALL=C.

Each run is a separate process (`contract.run`), judged by `contract.judge`, and its folder, temporary
folder and every fixture are checked afterwards (nothing left but its outputs, nothing changed). With
--kdir (a built kernel tree, e.g. `tests/e2e/tree.sh x86_64`), `module` and `build` run against it; the
tree's fingerprint (tests/e2e/tree_fingerprint.py) must be the same at the end. Prints the counts by
command and exit code, and every violation with its seed; exit 1 when there is any.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))
from tests.fuzz import contract

ROOT = contract.ROOT
EXAMPLE = ROOT / "tests" / "examples" / "cmdline.c"
PATCH = ROOT / "tests" / "e2e" / "patches" / "cmdline.patch"
FLAGS = ["-O2", "-fno-pie", "-mcmodel=kernel", "-pg", "-mfentry", "-mrecord-mcount", "-ffunction-sections",
         "-fdata-sections", "-fno-asynchronous-unwind-tables", "-c"]
Word = contract.Word


@dataclass
class Fixtures:
    """The files a working command line names (`valid`) and the hostile ones (`inputs`, `folders`),
    all made once and guarded: no run may change them."""
    valid: dict[str, Word]
    inputs: list[Word]
    folders: list[Word]
    guarded: list[Path] = field(default_factory=list)


def _make_fixtures(fix: Path, kdir: Path | None) -> Fixtures:
    gcc = shutil.which("gcc") or shutil.which("x86_64-linux-gnu-gcc")
    assert gcc, "needs gcc for x86_64"
    fix.mkdir()
    orig, patched = fix / "orig.o", fix / "patched.o"
    subprocess.run([gcc, *FLAGS, str(EXAMPLE), "-o", str(orig)], check=True)
    subprocess.run([gcc, *FLAGS, "-DPATCHED", str(EXAMPLE), "-o", str(patched)], check=True)
    symtab = fix / "symtab.txt"
    symtab.write_text(subprocess.run(["readelf", "-sW", str(orig)], capture_output=True, text=True,
                                     check=True).stdout)
    (fix / "Module.symvers").write_text("0x00000000\tseq_puts\tvmlinux\tEXPORT_SYMBOL\t\n")
    shutil.copy(PATCH, fix / "fix.patch")
    rules = fix / "rules"
    (rules / "x86_64").mkdir(parents=True)
    (fix / "cases").mkdir()
    valid: dict[str, Word] = {"orig": str(orig), "patched": str(patched), "symtab": str(symtab),
                              "symvers": str(fix / "Module.symvers"), "rules": str(rules),
                              "patch": str(fix / "fix.patch"), "cases": str(fix / "cases"),
                              "kdir": str(kdir) if kdir else str(fix / "cases")}
    h = fix / "hostile"
    h.mkdir()
    (h / "empty").touch()
    (h / "text").write_text("hello\n")
    (h / "random").write_bytes(random.Random(0).randbytes(4096))
    (h / "cut.o").write_bytes(orig.read_bytes()[:100])
    (h / "header.o").write_bytes(orig.read_bytes()[:64])
    with open(h / "sparse.o", "wb") as fh:  # 64 GiB that take no disk
        fh.write(orig.read_bytes()[:64])
        fh.truncate(64 << 30)
    os.mkfifo(h / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(h / "socket"))
    sock.close()
    (h / "folder").mkdir()
    os.symlink("loop-b", h / "loop-a")
    os.symlink("loop-a", h / "loop-b")
    os.symlink("nowhere", h / "dangling")
    os.symlink("folder", h / "to-folder")
    os.symlink("fifo", h / "to-fifo")
    os.symlink(orig, h / "to-orig")
    for name in (b"\xff\xfe-not-utf8.o", b"new\nline.o", b"-dash.o", b"with space.o", "ünï-cödé.o".encode(),
                 b"x" * 255):
        shutil.copy(os.fsencode(patched), os.path.join(os.fsencode(h), name))
    deep = h / "deep"
    deep.mkdir()
    path = os.fsencode(deep) + b"/" + b"/".join([b"d" * 250] * 20)  # over 4,096 bytes (PATH_MAX)
    inputs: list[Word] = [str(h / n) for n in ("empty", "text", "random", "cut.o", "header.o", "sparse.o", "fifo",
                                               "socket", "folder", "loop-a", "dangling", "to-folder", "to-fifo",
                                               "to-orig", "missing.o")]
    inputs += [os.path.join(os.fsencode(h), n) for n in (b"\xff\xfe-not-utf8.o", b"new\nline.o",
                                                          "ünï-cödé.o".encode(), b"x" * 255, b"x" * 256)]
    inputs += [os.path.join(path, b"p.o"), f"{orig}/", f"{orig}/x", str(h / "-dash.o"), "-dash.o",
               str(h / "with space.o"), "", ".", "..", "/", "-", "--", "~/orig.o", "$HOME", "*.o",
               "/dev/null", "/dev/zero", "/dev/urandom", "/dev/full", "/dev/stdin", "/proc/self/status",
               "/proc/self/mem", "/proc/self/fd/0", "/bin/true", "/etc/passwd", str(fix)]
    inputs += [p for p in ("/usr/lib/x86_64-linux-gnu/libc.so.6",) if os.path.exists(p)]
    folders = _rule_folders(fix / "rule-folders")
    folders += [str(h / n) for n in ("folder", "fifo", "empty", "loop-a", "dangling", "to-folder", "missing")]
    folders += ["", ".", "/nonexistent", "/dev/null", "/proc/self", f"{orig}/", str(deep)]
    guarded = [Path(os.fsdecode(os.path.join(dirpath, n)))
               for dirpath, dirs, files in os.walk(os.fsencode(fix)) for n in dirs + files
               if len(dirpath) < 3000]  # (the path longer than PATH_MAX cannot be read back by name)
    return Fixtures(valid, inputs, folders, guarded)


def _rule_folders(base: Path) -> list[Word]:
    """Rule folders (--rules, rules lint/test DIR) that hold something hostile."""
    made: list[Word] = []

    def folder(name: str, files: dict[str, bytes | Callable[[Path], None]]) -> None:
        d = base / name
        (d / "x86_64").mkdir(parents=True)
        for rel, content in files.items():
            if callable(content):
                content(d / rel)
            else:
                (d / rel).write_bytes(content)
        made.append(str(d))

    bomb = b"a: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n".encode()
        for i in range(9))

    def sparse(path: Path) -> None:
        with open(path, "wb") as fh:
            fh.truncate(64 << 30)

    folder("fifo-rule", {"x86_64/x.yaml": lambda p: os.mkfifo(p)})
    folder("alias-bomb", {"x.yaml": bomb})
    folder("nested", {"x.yaml": b"[" * 100_000 + b"]" * 100_000})
    folder("nested-map", {"x.yaml": b"a: " * 20_000 + b"1\n"})
    folder("sparse-rule", {"x86_64/x.yaml": sparse})
    folder("binary-rule", {"x.yaml": random.Random(1).randbytes(2048)})
    folder("not-utf8", {"x.yaml": b"sections:\n  - name: \"\xff\xfe\"\n"})
    folder("bad-expression", {"x.yaml": b"noise:\n  - name: x\n    when: \"((((\"\n"})
    folder("folder-yaml", {"x86_64/x.yaml": lambda p: p.mkdir()})
    folder("loop-yaml", {"x.yaml": lambda p: os.symlink("x.yaml", p)})
    folder("arch-is-file", {})
    shutil.rmtree(base / "arch-is-file" / "x86_64")
    (base / "arch-is-file" / "x86_64").write_text("not a folder\n")
    return made


# each command's working line: (word, kind, fixture) per argument; kind says what a hostile value is
Slot = tuple[str, str, str]  # (option or "" for a positional, kind, key of Fixtures.valid or a literal)
COMMANDS: dict[str, tuple[list[str], list[Slot]]] = {
    "diff": ([], [("", "input", "orig"), ("", "input", "patched"), ("-o", "output", "out.o"),
                  ("--json", "output", "report.json"), ("--rules", "folder", "rules"), ("--symtab", "input", "symtab"),
                  ("--symvers", "input", "symvers"), ("--objname", "name", "=vmlinux"), ("--arch", "name", "=x86_64"),
                  ("--struct-size", "size", "=foo=8"), ("--allow-layout-change", "name", "=struct foo"),
                  ("-q", "flag", "")]),
    "explain": (["explain"], [("", "input", "orig"), ("", "input", "patched"), ("", "name", "=cmdline_proc_show"),
                              ("--rules", "folder", "rules")]),
    "lint": (["rules", "lint"], [("", "folder", "rules")]),
    "audit": (["rules", "audit"], [("", "input", "patched"), ("--arch", "name", "=x86_64"),
                                   ("--rules", "folder", "rules")]),
    "show": (["rules", "show"], [("--arch", "name", "=x86_64"), ("--rules", "folder", "rules")]),
    "test": (["rules", "test"], [("", "folder", "cases"), ("--arch", "name", "=x86_64"),
                                 ("--rules", "folder", "rules"), ("--include", "folder", "cases")]),
    "post-link": (["post-link"], [("", "input", "patched"), ("-o", "output", "out.ko")]),
    "module": (["module"], [("", "input", "patched"), ("--kdir", "folder", "kdir"), ("--name", "name", "=fuzz"),
                            ("-o", "output", "out.ko"), ("--workdir", "workdir", "=work")]),
    "build": (["build"], [("", "input", "patch"), ("--kdir", "folder", "kdir"), ("--check", "flag", ""),
                          ("--json", "output", "report.json"), ("--name", "name", "=fuzz"), ("-j", "number", "=2"),
                          ("--fuzz", "number", "=0"), ("--rules", "folder", "rules"), ("--vmlinux", "input", "=KV"),
                          ("--symvers", "input", "=KS"), ("--workdir", "workdir", "=work"), ("-q", "flag", "")]),
}
WEIGHTS = {"diff": 10, "explain": 2, "lint": 1, "audit": 2, "show": 1, "test": 1, "post-link": 2, "module": 1,
           "build": 4}
OUTPUT_OPTIONS = ("-o", "--json")
REPORTING = {"lint", "test", "audit"}  # exit 1 after findings on stdout


def _names(rng: random.Random) -> Word:
    """A hostile name or word."""
    pick = rng.randrange(12)
    if pick == 0:
        return bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 40)))
    if pick == 1:
        return "".join(chr(rng.randrange(0x80, 0x3000)) for _ in range(rng.randrange(1, 20)))
    if pick == 2:
        return "x" * rng.choice([55, 56, 255, 256, 5000])
    return rng.choice(["", " ", "-", "--", "-x", "../x", "/etc/passwd", "x/y", ".", "..", "a b", "a\nb", "\t",
                       "vmlinux", "x86_64", "X86_64", "riscv64", "../rules", "x86_64/..", "%s%n", "${HOME}",
                       "'", "\"", "\u202e", "struct", "struct ", "=", "a=b", "ext4", "fuzz.ko", "\x7f", "\x1b[31m"])


def _numbers(rng: random.Random) -> str:
    return rng.choice(["0", "-1", "1", "2", "99999999999999999999", "1e9", "0x10", "x", "", " 1", "٣", "1_0",
                       str(rng.randrange(-2**63, 2**63))])


def _sizes(rng: random.Random) -> Word:
    return rng.choice(["foo=0", "foo=-1", "foo=1e9", "=8", "foo=", "foo", "foo=0x10", "foo=99999999999999999999",
                       "foo=8=8", "\udcff=8", "foo= 8", "foo=٣"])


def _outputs(rng: random.Random, fixtures: Fixtures, run: Path, other_outputs: list[Word],
             inputs: list[Word]) -> Word:
    """A hostile output path (some of them made in the run's folder first). An existing fixture is only
    named when it is one of the command's inputs (any other file a user names as an output, klpdiff
    may write)."""
    pick = rng.randrange(26)
    if pick == 0 and inputs:
        return rng.choice(inputs)
    if pick == 1:
        os.symlink(os.fsdecode(fixtures.valid["orig"]), run / "link-to-input")
        return "link-to-input"
    if pick == 2:
        os.link(os.fsdecode(fixtures.valid["patched"]), run / "hard-link")
        return "hard-link"
    if pick == 3 and other_outputs:
        return rng.choice(other_outputs)
    if pick == 4:
        (run / "old.o").write_bytes(b"an earlier run's output\n")
        return "old.o"
    if pick == 5:
        os.symlink("nowhere", run / "dangling")
        return "dangling"
    if pick == 6:
        os.mkfifo(run / "fifo")
        return "fifo"
    if pick == 7:
        os.symlink("/dev/null", run / "to-null")
        return "to-null"
    if pick == 8:
        return bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 30))).replace(b"/", b"_")
    if pick == 9:
        return b"y" * rng.choice([250, 255, 256])
    if pick == 10:
        (run / "sub").mkdir()
        return rng.choice(["sub", "sub/", "sub/x.o", "sub/../x.o"])
    return rng.choice(["", ".", "..", "/", "x.o/", "missing/x.o", "/dev/null", "/dev/full", "/dev/stdout",
                       "/proc/self/status", "-", "-x.o", "new\nline.o", "ünï.o", "a b.o", "x.o", "report",
                       f"{os.fsdecode(fixtures.valid['orig'])}/x", "/nonexistent/x.o", "~/x.o", "\u202ex.o"])


def _hostile(kind: str, rng: random.Random, fixtures: Fixtures, run: Path, outputs: list[Word],
             inputs: list[Word]) -> Word:
    if kind == "input":
        return rng.choice(fixtures.inputs)
    if kind == "folder":
        return rng.choice(fixtures.folders)
    if kind == "output":
        return _outputs(rng, fixtures, run, outputs, inputs)
    if kind == "workdir":
        return rng.choice([*fixtures.folders, "new-work", "work/", fixtures.valid["orig"], "/dev/null", b"\xffw"])
    if kind == "number":
        return _numbers(rng)
    if kind == "size":
        return _sizes(rng)
    return _names(rng)


def _valid(value: str, fixtures: Fixtures, kdir: Path | None) -> Word | None:
    if value.startswith("="):
        literal = value[1:]
        if literal in ("KV", "KS"):
            return None if kdir is None else str(kdir / ("vmlinux" if literal == "KV" else "Module.symvers"))
        return literal
    return fixtures.valid.get(value, value)


@dataclass(frozen=True)
class Case:
    command: str
    words: list[Word]
    outputs: list[Word]  # the paths it may write (relative to its folder, or absolute)
    what: str


def make_case(rng: random.Random, fixtures: Fixtures, run: Path, kdir: Path | None) -> Case:
    command = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
    lead, slots = COMMANDS[command]
    if command == "post-link":  # it writes its module in place: a copy of its own
        shutil.copy(os.fsdecode(fixtures.valid["patched"]), run / "m.ko")
        slots = [("", "input", "m.ko"), *slots[1:]]
    if command in ("module", "build") and kdir is None:
        slots = [s for s in slots if s[1] != "folder" or s[0] != "--kdir"] + [("--kdir", "folder", "cases")]
    chosen = rng.sample(range(len(slots)), k=min(len(slots), rng.choice([1, 1, 1, 2, 3])))
    words: list[Word] = list(lead)
    outputs: list[Word] = []
    what = []
    for i, (option, kind, value) in enumerate(slots):
        word = _valid(value, fixtures, kdir)
        if word is None:
            continue
        if i in chosen:
            act = rng.choices(["replace", "drop", "repeat"], weights=[8, 1, 1])[0]
            if act == "drop":
                what.append(f"no {option or kind}")
                continue
            if act == "replace" and kind != "flag":
                inputs = [_valid(s[2], fixtures, kdir) for s in slots if s[1] == "input"]
                word = _hostile(kind, rng, fixtures, run, outputs, [w for w in inputs if w])
                what.append(f"{option or kind}={_short(word)}")
            elif act == "repeat":
                words += [option] if kind == "flag" else ([option, word] if option else [word])
                what.append(f"{option or kind} twice")
        if option in OUTPUT_OPTIONS:
            outputs.append(word)
        if kind == "flag":
            words.append(option)
        else:
            words += [option, word] if option else [word]
    if command == "post-link" and "-o" not in words and len(words) > 1:  # (its module, unless dropped)
        outputs.append(words[1])
    return Case(command, words, outputs, "; ".join(what) or "valid")


def _short(word: Word) -> str:
    text = repr(word)
    return text if len(text) < 90 else f"{text[:60]}...({len(word)} long)"


def _relative(word: Word, run: Path) -> bytes:
    path = os.fsencode(word)
    return os.path.relpath(path, os.fsencode(run)) if os.path.isabs(path) else os.path.normpath(path)


def fuzz(cases: int, seed: int, work: Path, kdir: Path | None = None, timeout: float = 120,
         report: bool = True, first: int = 0, verbose: bool = False) -> list[str]:
    fixtures = _make_fixtures(work / "fix", kdir)
    before = contract.digest(fixtures.guarded)
    tree_before = contract.fingerprint(kdir) if kdir else None
    run_dir, tmp = work / "run", work / "tmp"
    tmp.mkdir()
    codes: Counter[tuple[str, int | None]] = Counter()
    violations = []
    for n in range(first, first + cases):
        case_seed = seed * 1_000_003 + n
        rng = random.Random(case_seed)
        run_dir.mkdir()
        case = make_case(rng, fixtures, run_dir, kdir)
        env = {"LC_ALL": "C"} if rng.random() < 0.2 else {}
        start = contract.listing(run_dir)
        outcome = contract.run(case.words, run_dir, tmp, timeout, env)
        codes[(case.command, outcome.code)] += 1
        if verbose:
            print(f"{case_seed} exit {outcome.code}: klpdiff {' '.join(_short(w) for w in case.words)}\n  "
                  f"{contract.one_line_of(outcome.stderr)}")
        problems = contract.judge(outcome, timeout=timeout, reports_findings=case.command in REPORTING)
        allowed = [_relative(o, run_dir) for o in case.outputs] if outcome.code in (0, 2, 3) else []
        allowed += [b"work"] if "--workdir" in case.words else []
        problems += contract.leftovers(start, contract.listing(run_dir), allowed)
        problems += [f"left {os.fsdecode(p)!r} in TMPDIR" for p in sorted(contract.listing(tmp))[:3]]
        problems += contract.changed(before, contract.digest(fixtures.guarded))
        if problems:
            violations.append(f"seed {case_seed} ({case.command}: {case.what}): {'; '.join(problems)}")
            if report:
                print(f"  {violations[-1]}", flush=True)
            before = contract.digest(fixtures.guarded)
        shutil.rmtree(run_dir)
        contract.clear(tmp)
        if report and (n + 1 - first) % 500 == 0:
            print(f"arguments: {n + 1 - first} cases, {len(violations)} violation(s) so far", flush=True)
    if kdir and tree_before != contract.fingerprint(kdir):
        violations.append(f"{kdir}: the kernel tree changed")
    if report:
        by_command: dict[str, Counter[int | None]] = {}
        for (command, code), count in codes.items():
            by_command.setdefault(command, Counter())[code] += count
        print(f"arguments: {cases} cases, seed {seed}: {len(violations)} violation(s)")
        for command, counter in sorted(by_command.items()):
            print(f"  {command}: exit codes {dict(sorted(counter.items(), key=lambda kv: str(kv[0])))}")
    return violations


def main() -> int:
    p = contract.command_line(__doc__, cases=300, timeout=120)
    p.add_argument("--kdir", type=Path, help="a built kernel tree for module and build")
    args = p.parse_args()
    seed, first, cases = contract.cases_of(args)
    with tempfile.TemporaryDirectory(prefix="klpdiff-fuzz-args-") as tmp:
        work = Path(tmp)
        try:
            return 1 if fuzz(cases, seed, work, args.kdir, args.timeout, first=first,
                             verbose=args.verbose or args.replay is not None) else 0
        finally:
            for dirpath, dirs, _files in os.walk(work):  # a fuzzed mode must not stop the clean-up
                for d in dirs:
                    os.chmod(os.path.join(dirpath, d), stat.S_IRWXU)


if __name__ == "__main__":
    sys.exit(main())
