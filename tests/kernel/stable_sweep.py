"""A stable update, fix by fix: every changed .c file that Debian's amd64 config builds, compiled in the
old and the new Debian linux-source tree as `klpdiff build` compiles it, diffed with klpdiff.

    .venv/bin/python tests/kernel/stable_sweep.py 6.12 6.12.113-1~deb12u1 6.12.115-2~deb12u1 [--sample N]

Each `linux-source-SERIES` package is fetched with `apt-get download` (no root) into
${KLPDIFF_KERNEL_CACHE:-~/.cache/klpdiff-kernel}/stable/, unpacked, configured with the series' Debian amd64
config (linux-config-SERIES: the archive keeps only its newest builds, so the newest one serves every
version, through `make olddefconfig`) and `make prepare`d once per version. The changed .c files are found
by comparing the two trees (or a random sample of them, `--sample N --seed S`); their objects are
compiled in both trees in one `make -k` run each (kbuild's own flags plus the section flags; an object the
config does not build is passed over), and every pair is diffed. One line per object: the verdict,
the changed functions, the reasons. Then a summary: objects, verdicts, refusals by class, with the layout
refusals in full, and every section of the built objects that no rule describes (`klpdiff rules audit`).
Nothing is asserted: this is a survey (the README has the results).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

SECTION_FLAGS = "-ffunction-sections -fdata-sections"
CONFIG_NAME = "config.amd64_none_amd64.xz"


def cache() -> Path:
    root = Path(os.environ.get("KLPDIFF_KERNEL_CACHE", Path.home() / ".cache" / "klpdiff-kernel"))
    return root / "stable"


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def fetch(package: str, version: str) -> Path:
    """The unpacked contents of a Debian package version (apt-get download needs no root)."""
    dest = cache() / "debs" / f"{package}_{version}"
    if (dest / ".done").exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    proc = _run(["apt-get", "download", f"{package}={version}"], cwd=dest)
    if proc.returncode != 0:
        raise SystemExit(f"apt-get download {package}={version}: {proc.stderr.strip()}")
    (deb,) = dest.glob("*.deb")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    deb.unlink()
    (dest / ".done").write_text("ok\n")
    return dest


def newest_config(series: str) -> Path:
    proc = _run(["apt-cache", "madison", f"linux-config-{series}"])
    versions = [line.split("|")[1].strip() for line in proc.stdout.splitlines() if "|" in line]
    if not versions:
        raise SystemExit(f"linux-config-{series} is not in the archive (apt-get update?)")
    root = fetch(f"linux-config-{series}", versions[0])
    (config,) = root.glob(f"usr/src/linux-config-{series}/{CONFIG_NAME}")
    return config


def tree(series: str, version: str) -> Path:
    """The configured and prepared tree of one version (cached)."""
    base = cache() / "trees" / version
    src = base / f"linux-source-{series}"
    if (base / "prepared").exists():
        return src
    pkg = fetch(f"linux-source-{series}", version)
    (tarball,) = pkg.glob(f"usr/src/linux-source-{series}.tar.xz")
    base.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tar:
        tar.extractall(base, filter="tar")
    subprocess.run(f"xz -dc {newest_config(series)} > {src / '.config'}", shell=True, check=True)
    for target in ("olddefconfig", "prepare"):
        proc = _run(["make", "-C", str(src), f"-j{os.cpu_count() or 2}", target])
        if proc.returncode != 0:
            raise SystemExit(f"make {target} in {src} failed:\n{proc.stderr[-2000:]}")
    (base / "prepared").write_text("ok\n")
    return src


def changed_sources(old: Path, new: Path) -> list[str]:
    """The .c files whose text differs between the trees (added and removed ones are no fix to diff)."""
    proc = _run(["diff", "-rq", "--no-dereference", "-x", "*.o", "-x", ".*", "-x", "scripts", "-x",
                 "Documentation", "-x", "tools", str(old), str(new)])
    out = []
    for line in proc.stdout.splitlines():
        m = re.match(r"^Files (\S+) and (\S+) differ$", line)
        if m and m.group(1).endswith(".c"):
            out.append(str(Path(m.group(1)).relative_to(old)))
    return sorted(out)


def compile_objects(src: Path, objects: list[str]) -> dict[str, Path]:
    """Compile the objects as klpdiff build does (kbuild's flags plus the section flags), in one make run
    that goes on past errors (`-k`): those the config does not build are left out. Objects built before
    are removed first, so every one is built with the section flags."""
    for obj in objects:
        (src / obj).unlink(missing_ok=True)
    _run(["make", "-C", str(src), "-k", f"-j{os.cpu_count() or 2}", f"KCFLAGS={SECTION_FLAGS}", *objects])
    return {obj: src / obj for obj in objects if (src / obj).exists()}


def diff(klpdiff: Path, orig: Path, patched: Path, out: Path) -> dict[str, object]:
    report = out.with_suffix(".json")
    proc = _run([str(klpdiff), str(orig), str(patched), "-o", str(out), "--json", str(report), "-q"])
    if report.exists():
        doc: dict[str, object] = json.loads(report.read_text())
        doc["exit"] = proc.returncode
        return doc
    return {"verdict": "input-error", "exit": proc.returncode, "refused": [proc.stderr.strip()]}


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def refusal_class(reason: str) -> str:
    """A short class name for a refusal line."""
    for pattern, name in ((r"changes layout .*, used by ", "layout, used directly"),
                          (r"changes layout .*, reached through", "layout, reached through members"),
                          (r"changes type", "variable type"),
                          (r"__init/__exit", "__init/__exit code"), (r"no ftrace call site", "no ftrace site"),
                          (r"data object .* changed", "changed data"), (r"no rule describes", "unknown section"),
                          (r"shares its section|shared section|in \.ref\.text|in \.noinstr", "shared section"),
                          (r"tracepoint|trace event", "trace events")):
        if re.search(pattern, reason):
            return name
    return re.sub(r"\b[\w.]*\d[\w.]*\b", "N", reason.split(":")[0])[:60]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("series")
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--sample", type=int, default=0, help="only this many changed files, drawn at random (0: all)")
    ap.add_argument("--seed", type=int, default=1, help="the sample's random seed")
    ap.add_argument("--reuse", action="store_true", help="diff the pairs an earlier run compiled (after a "
                                                            "change to klpdiff), without compiling")
    ap.add_argument("--klpdiff", type=Path, default=Path(sys.executable).parent / "klpdiff")
    args = ap.parse_args(argv)
    start = time.monotonic()
    old, new = tree(args.series, args.old), tree(args.series, args.new)
    print(f"trees ready in {time.monotonic() - start:.0f} s", flush=True)
    sources = changed_sources(old, new)
    print(f"{len(sources)} changed .c files", flush=True)
    if args.sample and args.sample < len(sources):
        sources = sorted(random.Random(args.seed).sample(sources, args.sample))
        print(f"a sample of {len(sources)} (seed {args.seed})", flush=True)
    objects = [source[:-2] + ".o" for source in sources]
    work = cache() / "sweeps" / f"{args.old}..{args.new}"
    work.mkdir(parents=True, exist_ok=True)
    if args.reuse:  # the pairs an earlier run of the same sample copied
        built_old = {o: work / f"{o.replace('/', '__')}.orig" for o in objects
                     if (work / f"{o.replace('/', '__')}.orig").exists()}
        built_new = {o: work / f"{o.replace('/', '__')}.patched" for o in built_old}
    else:
        built_old, built_new = compile_objects(old, objects), compile_objects(new, objects)
    print(f"compiled in {time.monotonic() - start:.0f} s", flush=True)
    verdicts: Counter[str] = Counter()
    classes: Counter[str] = Counter()
    layouts: list[str] = []
    direct_types: Counter[str] = Counter()
    diffed = skipped = 0
    for obj in objects:
        orig, patched = built_old.get(obj), built_new.get(obj)
        if orig is None or patched is None:
            skipped += 1
            continue
        flat = obj.replace("/", "__")
        if not args.reuse:
            (work / f"{flat}.orig").write_bytes(orig.read_bytes())
            (work / f"{flat}.patched").write_bytes(patched.read_bytes())
        doc = diff(args.klpdiff, work / f"{flat}.orig", work / f"{flat}.patched", work / f"{flat}.diff.o")
        diffed += 1
        verdict = str(doc["verdict"])
        verdicts[verdict] += 1
        reasons = [str(r) for r in _list(doc.get("refused"))]
        for cls in sorted({refusal_class(r) for r in reasons}):
            classes[cls] += 1
        layouts.extend(f"{obj}: {r}" for r in reasons if "changes layout" in r or "changes type" in r)
        for r in reasons:
            m = re.match(r"^(.*?) changes layout .*, used by ", r)
            if m:
                direct_types[m.group(1)] += 1
        functions = ", ".join(str(f) for f in _list(doc.get("changed_functions")))
        print(f"{obj}: {verdict}" + (f" [{functions}]" if functions else "")
              + "".join(f"\n    {r[:300]}" for r in reasons), flush=True)
    print(f"\n{args.series} {args.old} -> {args.new}: {len(sources)} changed .c files, {diffed} objects diffed, "
          f"{skipped} not built by the config, in {time.monotonic() - start:.0f} s")
    print("verdicts: " + ", ".join(f"{v} {n}" for v, n in verdicts.most_common()))
    print("refused objects by class: " + ", ".join(f"{c} {n}" for c, n in classes.most_common()))
    print("changed types used directly (objects): " + ", ".join(f"{t} {n}" for t, n in direct_types.most_common()))
    for line in layouts:
        print(f"  {line[:600]}")
    built = sorted(work.glob("*.patched"))
    if built:  # every section of every object the sweep built must have a rule
        proc = _run([str(args.klpdiff), "rules", "audit", *map(str, built)])
        unknown = [line for line in proc.stdout.splitlines() if "(no rule;" in line]
        print(f"sections without a rule in the {len(built)} objects: {len(unknown)}")
        print("\n".join(unknown))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
