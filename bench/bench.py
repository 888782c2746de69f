#!/usr/bin/env python3
"""klpdiff benchmarks: prints figures, asserts nothing.

1. corpus: the eight largest ORIG/PATCHED pairs of ../shared/corpus/kpatch-unit —
   klpdiff's wall time next to `readelf -aW` of both inputs, and the ratio. klpdiff's
   modules are byte-compiled first (as an installed copy is) and its rule cache is warm
   (the first run after a rule change, which compiles the rules, is timed apart).
2. scale: a generated C file with N small functions (each with its own static
   data, calls and a printk), compiled kernel-style, 10 of them patched;
   klpdiff's wall time and peak memory for each N.
3. kpatch (with --kpatch SRC, a checkout of github.com/dynup/kpatch): builds its
   create-diff-object from that source in a temporary folder and times it next to
   klpdiff on the eight largest x86_64 corpus pairs, each given the struct sizes
   expected.yaml lists for it (kpatch needs them in its *_STRUCT_SIZE variables).

usage: bench/bench.py [--corpus] [--scale N ...] [--kpatch SRC] [--klpdiff PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "kpatch-unit"
KERNEL_FLAGS = ["-O2", "-fno-pie", "-mcmodel=kernel", "-mno-red-zone", "-pg", "-mfentry", "-mrecord-mcount",
                "-ffunction-sections", "-fdata-sections", "-c"]


def timed(cmd: list[str]) -> tuple[float, int, int]:
    """Run cmd; return (seconds, exit code, peak RSS in KiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - start, os.waitstatus_to_exitcode(status), usage.ru_maxrss


def klpdiff_cmd(args: argparse.Namespace) -> list[str]:
    """The command users run: --klpdiff, else the klpdiff script installed beside this Python."""
    installed = Path(sys.executable).with_name("klpdiff")
    if args.klpdiff:
        return [args.klpdiff]
    return [str(installed)] if installed.exists() else [sys.executable, "-m", "klpdiff.cli"]


def as_installed() -> None:
    """Byte-compile klpdiff's modules, as pip does on install (this machine may set
    PYTHONDONTWRITEBYTECODE, which would make every run compile them again)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "engine")], check=True)


def cold_rule_cache(args: argparse.Namespace, orig: Path, patched: Path, out: Path) -> float:
    """One run with an empty rule cache (it compiles the rules and stores them), as after a rule change."""
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        subprocess.run([*klpdiff_cmd(args), "-q", str(orig), str(patched), "-o", str(out)],
                       env={**os.environ, "KLPDIFF_CACHE_DIR": cache}, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        return time.perf_counter() - start


def corpus_bench(args: argparse.Namespace) -> None:
    if not CORPUS.is_dir():
        print(f"corpus: skipped ({CORPUS} not found)")
        return
    pairs = []
    for orig in CORPUS.glob("*/*.ORIG.o"):
        stem = orig.name[: -len(".ORIG.o")]
        patched = next(iter(sorted(orig.parent.glob(f"{stem}.PATCHED*.o"))), None)
        if patched is not None:
            pairs.append((orig.stat().st_size + patched.stat().st_size, orig, patched))
    pairs.sort(reverse=True)
    readelf = shutil.which("readelf") or "readelf"
    from klpdiff.diff.pipeline import Options, run

    as_installed()

    print(f"{'pair':50} {'klpdiff s':>10} {'in-proc s':>10} {'readelf s':>10} {'ratio':>7} {'in-proc':>8}")
    ratios, inproc_ratios = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _, orig, patched in pairs[:8]:
            out = Path(tmp) / "out.o"
            subprocess.run([*klpdiff_cmd(args), "-q", str(orig), str(patched), "-o", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # warm the rule cache
            k = min(timed([*klpdiff_cmd(args), "-q", str(orig), str(patched), "-o", str(out)])[0]
                    for _ in range(args.repeat))
            inproc = []
            for _ in range(args.repeat + 1):  # the first run warms the rule cache
                start = time.perf_counter()
                run(orig, patched, out, Options())
                inproc.append(time.perf_counter() - start)
            i = min(inproc[1:])
            r = min(timed([readelf, "-aW", str(orig)])[0] + timed([readelf, "-aW", str(patched)])[0]
                    for _ in range(args.repeat))
            ratios.append(k / r)
            inproc_ratios.append(i / r)
            name = f"{orig.parent.name}/{orig.name[:-7]}"
            print(f"{name:50} {k:10.3f} {i:10.3f} {r:10.3f} {k / r:7.2f} {i / r:8.2f}")
        cold = cold_rule_cache(args, pairs[0][1], pairs[0][2], Path(tmp) / "out.o")
    print(f"median ratio klpdiff/readelf: {statistics.median(ratios):.2f}x as a command, "
          f"{statistics.median(inproc_ratios):.2f}x in-process (without interpreter start and imports)")
    print(f"first run after a rule change (rules compiled and stored), largest pair: {cold:.3f} s")


def generate(n: int, patched: bool, changed: set[int]) -> str:
    lines = ["extern int printk(const char *fmt, ...);", "extern void sink(int *p);"]
    for i in range(n):
        delta = 2 if (patched and i in changed) else 1
        lines.append(f"static int state_{i}[4] = {{ {i}, {i + 1} }};")
        lines.append(f"__attribute__((noinline)) int fn_{i}(int x) {{")
        lines.append(f"  state_{i}[x & 3] += {delta};")
        if i:
            lines.append(f"  if (x > {i}) x = fn_{i - 1}(x - 1);")
        lines.append(f'  printk("fn_{i} %d\\n", x);')
        lines.append(f"  sink(state_{i});")
        lines.append(f"  return x + state_{i}[0];\n}}")
    return "\n".join(lines) + "\n"


def scale_bench(args: argparse.Namespace) -> None:
    gcc = shutil.which("x86_64-linux-gnu-gcc") or shutil.which("gcc")
    if gcc is None:
        print("scale: skipped (no x86_64 gcc)")
        return
    as_installed()
    print(f"{'functions':>9} {'symbols':>8} {'klpdiff s':>10} {'peak MiB':>9} {'s per 1k fn':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for n in args.scale:
            changed = set(range(0, n, max(n // 10, 1)))
            objs = []
            for variant in (False, True):
                src = work / f"scale_{n}_{int(variant)}.c"
                src.write_text(generate(n, variant, changed))
                obj = src.with_suffix(".o")
                subprocess.run([gcc, *KERNEL_FLAGS, str(src), "-o", str(obj)], check=True)
                objs.append(obj)
            secs, code, rss = timed([*klpdiff_cmd(args), "-q", str(objs[0]), str(objs[1]),
                                     "-o", str(work / "out.o")])
            nsyms = sum(1 for _ in subprocess.run(["readelf", "-sW", str(objs[1])], capture_output=True,
                                                  text=True).stdout.splitlines())
            status = "" if code == 0 else f"  (exit {code})"
            print(f"{n:9d} {nsyms:8d} {secs:10.2f} {rss / 1024:9.0f} {secs / n * 1000:12.3f}{status}")


# expected.yaml's struct names -> the environment variables kpatch's create-diff-object reads them from
KPATCH_SIZES = {"paravirt_patch_site": "PARA_STRUCT_SIZE", "exception_table_entry": "EX_STRUCT_SIZE",
                "bug_entry": "BUG_STRUCT_SIZE", "alt_instr": "ALT_STRUCT_SIZE", "jump_entry": "JUMP_STRUCT_SIZE",
                "orc_entry": "ORC_STRUCT_SIZE", "static_call_site": "STATIC_CALL_STRUCT_SIZE",
                "pi_entry": "PRINTK_INDEX_STRUCT_SIZE", "fixup_entry": "FIXUP_STRUCT_SIZE"}


def build_kpatch(src: Path, work: Path) -> Path | None:
    """kpatch's create-diff-object, built from its source (kpatch-build/, kmod/patch/, Makefile.inc)."""
    copy = work / "kpatch"
    for part in ("kpatch-build", "kmod", "Makefile.inc"):
        if not (src / part).exists():
            print(f"kpatch: skipped ({src / part} not found)")
            return None
        if (src / part).is_dir():
            shutil.copytree(src / part, copy / part)
        else:
            shutil.copy(src / part, copy / part)
    proc = subprocess.run(["make", "-C", str(copy / "kpatch-build"), "ARCH=x86_64", "create-diff-object"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"kpatch: skipped (building create-diff-object failed: {proc.stderr.strip()[-300:]})")
        return None
    return copy / "kpatch-build" / "create-diff-object"


def kpatch_bench(args: argparse.Namespace) -> None:
    import yaml

    expected = CORPUS / "expected.yaml"
    if not expected.exists():
        print(f"kpatch: skipped ({CORPUS} not found)")
        return
    cases = yaml.safe_load(expected.read_text())["cases"]
    as_installed()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cdo = build_kpatch(Path(args.kpatch), work)
        if cdo is None:
            return
        ok = [(key, c) for key, c in cases.items() if key.startswith("x86_64/") and c["verdict"] == "ok"]
        sized = sorted(ok, key=lambda kc: -(CORPUS / f"{kc[0]}.ORIG.o").stat().st_size)[:8]
        print(f"{'pair':45} {'klpdiff s':>10} {'in-proc s':>10} {'kpatch s':>9} {'ratio':>7} {'in-proc':>8}")
        from klpdiff.diff.pipeline import Options, run

        ratios, inproc_ratios = [], []
        for key, case in sized:
            orig, patched = CORPUS / f"{key}.ORIG.o", CORPUS / f"{key}.PATCHED.o"
            symtab = work / "symtab"
            symtab.write_text(subprocess.run(["readelf", "-s", "--wide", str(orig)], capture_output=True,
                                             text=True).stdout)
            env = {**os.environ, **{KPATCH_SIZES[k]: str(v) for k, v in case.get("struct_sizes", {}).items()
                                    if k in KPATCH_SIZES}}
            k_times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                code = subprocess.run([str(cdo), str(orig), str(patched), "vmlinux", str(symtab), "/dev/null",
                                       "test_bench", str(work / "kpatch.o")], env=env, capture_output=True).returncode
                k_times.append(time.perf_counter() - start)
            kp = min(k_times)
            ours = min(timed([*klpdiff_cmd(args), "-q", str(orig), str(patched), "-o", str(work / "out.o")])[0]
                       for _ in range(args.repeat))
            run(orig, patched, work / "out.o", Options())  # warm the rule set
            inproc = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                run(orig, patched, work / "out.o", Options())
                inproc.append(time.perf_counter() - start)
            ratios.append(ours / kp)
            inproc_ratios.append(min(inproc) / kp)
            status = "" if code == 0 else f"  (kpatch exit {code})"
            print(f"{key:45} {ours:10.3f} {min(inproc):10.3f} {kp:9.3f} {ours / kp:7.2f} {min(inproc) / kp:8.2f}"
                  f"{status}")
        print(f"median ratio klpdiff/kpatch create-diff-object: {statistics.median(ratios):.2f}x as a command, "
              f"{statistics.median(inproc_ratios):.2f}x in-process")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", action="store_true", help="only the corpus bench")
    p.add_argument("--scale", type=int, nargs="*", help="only the scale bench, for these N")
    p.add_argument("--repeat", type=int, default=3, help="best of this many corpus runs")
    p.add_argument("--klpdiff", help="klpdiff command (default: the klpdiff installed beside this Python)")
    p.add_argument("--kpatch", metavar="SRC", help="a kpatch checkout: also time its create-diff-object")
    args = p.parse_args()
    if args.kpatch:
        kpatch_bench(args)
        return
    run_all = not args.corpus and args.scale is None
    if args.corpus or run_all:
        corpus_bench(args)
    if args.scale or run_all:
        args.scale = args.scale or [2000, 8000, 20000]
        scale_bench(args)


if __name__ == "__main__":
    main()
