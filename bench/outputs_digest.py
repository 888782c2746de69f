#!/usr/bin/env python3
"""One line per diff of the public corpus: its exit code and the digests of its output and JSON report,
so that two versions of klpdiff can be compared byte for byte (a reshaping must change nothing).

usage: python3 bench/outputs_digest.py [--klpdiff CMD] [--e2e TREE] > digests.txt
       diff <(python3 bench/outputs_digest.py --klpdiff OLD/.venv/bin/klpdiff) \\
            <(python3 bench/outputs_digest.py --klpdiff NEW/.venv/bin/klpdiff)

Each pair of ../shared/corpus/kpatch-unit (ARCH/CASE.ORIG.o and .PATCHED.o, or the file expected.yaml
names) is diffed by `CMD ORIG PATCHED -o out.o --json report.json`, run in a fresh folder with relative
output names, so that the report holds no path of this run (the rule files' folder, which reports name,
is written RULES/); the summary printed is digested too. With --e2e TREE (a built kernel tree,
`tests/e2e/tree.sh x86_64`), each e2e patch is also built with `klpdiff build --check --workdir W`, and
every diff object and report it keeps is digested (the timings of the build report excepted), and the
build's summary from a second run without -q (its progress lines, which hold timings, left out).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "kpatch-unit"


# where each klpdiff's own rule files are: a report names them (rule origins) by absolute path
_RULES_PATH = re.compile(rb'[^"\s]*/rules/')


def _digest(path: Path) -> str:
    return _hash(path.read_bytes()) if path.exists() else "-"


def _hash(data: bytes) -> str:
    return hashlib.sha256(_RULES_PATH.sub(b"RULES/", data)).hexdigest()[:16]


def corpus_lines(klpdiff: list[str]) -> list[str]:
    cases = yaml.safe_load((CORPUS / "expected.yaml").read_text())["cases"]
    lines = []
    for key, case in sorted(cases.items()):
        arch, name = key.split("/")
        orig = CORPUS / arch / f"{name}.ORIG.o"
        patched = CORPUS / arch / case.get("patched", f"{name}.PATCHED.o")
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run([*klpdiff, str(orig), str(patched), "-o", "out.o", "--json", "report.json"],
                                  cwd=tmp, capture_output=True)
            lines.append(f"{key} exit {proc.returncode} out {_digest(Path(tmp) / 'out.o')} "
                         f"report {_digest(Path(tmp) / 'report.json')} stdout {_hash(proc.stdout)} stderr "
                         f"{_hash(proc.stderr.replace(tmp.encode(), b'TMP'))}")
    return lines


def e2e_lines(klpdiff: list[str], tree: Path) -> list[str]:
    lines = []
    for patch in sorted((ROOT / "tests" / "e2e" / "patches").glob("*.patch")):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp) / "work"
            proc = subprocess.run([*klpdiff, "build", "--check", "-q", "--kdir", str(tree), str(patch),
                                   "--workdir", str(work), "--json", "report.json"], cwd=tmp, capture_output=True)
            shown = subprocess.run([*klpdiff, "build", "--check", "--kdir", str(tree), str(patch),
                                    "--workdir", str(work)], cwd=tmp, capture_output=True)  # reuses the work
            summary = b"\n".join(line for line in (shown.stdout + shown.stderr).splitlines()
                                 if not line.startswith(b"klpdiff build: "))  # progress lines hold timings
            report = Path(tmp) / "report.json"
            doc = json.loads(report.read_text()) if report.exists() else {}
            doc.pop("seconds", None)
            kept = sorted(p for p in work.rglob("*") if p.is_file() and p.suffix in (".o", ".json")
                          and "diff" in p.parts) if work.exists() else []
            files = " ".join(f"{p.relative_to(work)}={_digest(p)}" for p in kept)
            lines.append(f"e2e/{patch.stem} exit {proc.returncode} report "
                         f"{_hash(json.dumps(doc).replace(tmp, 'TMP').encode())} summary "
                         f"{_hash(summary.replace(tmp.encode(), b'TMP'))} {files}")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--klpdiff", default=f"{sys.executable} -m klpdiff.cli", help="the command to run")
    p.add_argument("--e2e", type=Path, metavar="TREE", help="also build the e2e patches on this tree")
    args = p.parse_args()
    if not (CORPUS / "expected.yaml").exists():
        print(f"no corpus at {CORPUS}", file=sys.stderr)
        return 1
    klpdiff = shlex.split(args.klpdiff)
    lines = corpus_lines(klpdiff)
    if args.e2e:
        lines += e2e_lines(klpdiff, args.e2e)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
