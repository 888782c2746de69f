"""kpatch's integration patches on the real-kernel trees of tests/kernel/ktree.py: what `klpdiff build --check`
finds for each patch, one column per arch, side by side (the function sets, or why there is none).

    .venv/bin/python tests/kernel/integration_sets.py [--corpus DIR] ARCH [ARCH ...]

DIR defaults to ../shared/corpus/kpatch-integration/linux-6.17.0 beside the checkout; the patches apply to
linux-source-6.12 with --fuzz 3. The objects a patch changes are compiled in the arch's cached tree first
(`klpdiff build` needs their compile commands); a file the arch's config does not build is reported so.
The trees are this script's own (ktree's cache): no user tree is touched.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(HERE))

from tests.kernel import ktree  # noqa: E402

CORPUS = HERE.parent / "shared" / "corpus" / "kpatch-integration" / "linux-6.17.0"
_TARGET = re.compile(r"^\+\+\+ [^/\s]+/(\S+\.c)\s", re.M)


def changed_objects(patch: Path) -> list[str]:
    """The objects of the C files a patch changes."""
    return sorted({m.group(1)[:-2] + ".o" for m in _TARGET.finditer(patch.read_text())})


def built_in_config(arch: str, obj: str) -> bool:
    """Does the arch's tree build `obj` (tried once: make says so when the config leaves it out)?"""
    try:
        ktree.build_objects(arch, [obj], Path(tempfile.mkdtemp(prefix="klpdiff-it-")))
    except RuntimeError:
        return False
    return True


def result(arch: str, patch: Path) -> str:
    """One cell: the changed functions, "no change", or the refusal / error line."""
    objects = changed_objects(patch)
    missing = [o for o in objects if not built_in_config(arch, o)]
    if missing:
        return f"not built by this config: {', '.join(missing)}"
    tree = ktree.prepare(arch)
    proc = subprocess.run([str(HERE / ".venv" / "bin" / "klpdiff"), "build", "--check", "--kdir", str(tree),
                           "--fuzz", "3", str(patch)], capture_output=True, text=True)
    if proc.returncode == 0:
        found = {kind: sorted({name for line in proc.stdout.splitlines() if line.startswith(f"  {kind}: ")
                               for name in line.removeprefix(f"  {kind}: ").split(", ")})
                 for kind in ("changed", "new")}
        return "; ".join(f"{kind}: {', '.join(names)}" for kind, names in found.items() if names)
    if proc.returncode == 3:
        return "no change (exit 3)"
    reason = next((line.strip() for line in (proc.stdout + proc.stderr).splitlines()
                   if "refused:" in line or "error:" in line), "")
    return f"exit {proc.returncode}: {reason.replace(chr(92) + 'n', ' ')[:200]}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("arches", nargs="+", choices=sorted(ktree.ARCHES))
    args = parser.parse_args(argv)
    if not args.corpus.is_dir():
        print(f"integration_sets: no kpatch integration patches at {args.corpus}", file=sys.stderr)
        return 2
    print("| patch | " + " | ".join(args.arches) + " |")
    print("| --- |" + " --- |" * len(args.arches))
    start = time.monotonic()
    for patch in sorted(args.corpus.glob("*.patch")):
        cells = [result(arch, patch) for arch in args.arches]
        print(f"| {patch.stem} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
