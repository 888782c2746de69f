"""The input/output contract of the `klpdiff` command, checked on one run of it as a separate process.

In: a command line (words as str or bytes: file names need not be UTF-8), the folder it runs in and the
files it must not change. Out: an `Outcome` (exit code, what it printed, whether it hung) and the list of
ways it broke the contract (README, "Bad input"):
- it ends within the time limit, with exit code 0, 1, 2 or 3 (4 is a klpdiff bug, anything else a crash);
- it never prints a Python traceback; an error (exit 1) is one line on stderr and nothing on stdout;
- it changes no file it was not told to write: the guarded files are byte-identical after it;
- what it leaves in its folder and in its temporary folder: nothing but the outputs it was given, and
  those only when it succeeded (a refusal's --json report may stay, as the README says).

The fuzz families (arguments.py, patches.py) build the command lines; this module only judges them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
Word = str | bytes


def klpdiff_command() -> list[str]:
    """How to run the klpdiff of this checkout: the venv's entry point, else `python -m klpdiff.cli`."""
    script = Path(sys.executable).parent / "klpdiff"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "klpdiff.cli"]


@dataclass(frozen=True)
class Outcome:
    code: int | None  # None: killed after the time limit
    stdout: bytes
    stderr: bytes

    @property
    def hung(self) -> bool:
        return self.code is None


def run(words: Sequence[Word], cwd: Path, tmpdir: Path, timeout: float,
        env: dict[str, str] | None = None) -> Outcome:
    """Run `klpdiff WORDS...` in `cwd`, with TMPDIR=`tmpdir` and standard input empty."""
    argv = [os.fsencode(w) for w in [*klpdiff_command(), *words]]
    environ = {**os.environ, **(env or {}), "TMPDIR": str(tmpdir)}
    try:
        proc = subprocess.run(argv, cwd=cwd, env=environ, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired as err:
        return Outcome(None, err.stdout or b"", err.stderr or b"")
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def one_line_of(stderr: bytes) -> str:
    """The last line a run printed on stderr, for a verbose listing."""
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:200] if lines else ""


def command_line(doc: str | None, **defaults: object) -> argparse.ArgumentParser:
    """The options every fuzz family takes: --cases, --seed, --timeout, -v and --replay."""
    p = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    p.add_argument("--cases", type=int, default=defaults.get("cases", 300))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=defaults.get("timeout", 120))
    p.add_argument("-v", "--verbose", action="store_true", help="print each case and what klpdiff said")
    p.add_argument("--replay", type=int, metavar="SEED", help="run the one case of this seed (as printed), verbosely")
    return p


def cases_of(args: argparse.Namespace) -> tuple[int, int, int]:
    """(seed, first case, number of cases) of a run: the whole run, or the one case --replay names (a
    case's seed is seed * 1,000,003 + its number)."""
    if args.replay is not None:
        return args.replay // 1_000_003, args.replay % 1_000_003, 1
    return args.seed, 0, args.cases


def fingerprint(tree: Path) -> str:
    """tests/e2e/tree_fingerprint.py's line for a tree: every path, its metadata and its content."""
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "e2e" / "tree_fingerprint.py"), str(tree)],
                          capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def digest(paths: Iterable[Path]) -> dict[Path, str]:
    """Type, size and content hash of each path (a FIFO or device by its type only: never opened)."""
    out = {}
    for path in paths:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            out[path] = "missing"
            continue
        if os.path.islink(path):
            out[path] = f"link {os.readlink(path)!r}"
        elif path.is_file() and st.st_size > 64 << 20:  # a sparse giant: its size and time
            out[path] = f"file {st.st_size} {st.st_mtime_ns}"
        elif path.is_file():
            with open(path, "rb") as fh:
                out[path] = f"file {st.st_size} {hashlib.file_digest(fh, 'sha256').hexdigest()}"
        else:
            out[path] = f"mode {st.st_mode:o}"
    return out


def listing(folder: Path) -> set[bytes]:
    """Every path under `folder` (as bytes, relative), without following links."""
    out = set()
    base = os.fsencode(folder)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, name), base))
    return out


def judge(outcome: Outcome, *, timeout: float, reports_findings: bool = False) -> list[str]:
    """The ways this run's exit and printout broke the contract. A command that `reports_findings`
    (rules lint, test, audit) exits 1 when it found some, after printing them on stdout: that is no
    error line."""
    if outcome.hung:
        return [f"no end within {timeout:.0f} s"]
    problems = []
    err = outcome.stderr.decode("utf-8", "replace")
    if outcome.code not in (0, 1, 2, 3):
        problems.append(f"exit {outcome.code}: {err.strip()[:300]}")
    if "Traceback (most recent call last)" in err:
        problems.append("a traceback")
    if outcome.code == 1 and not (reports_findings and outcome.stdout.strip()):
        lines = err.strip().splitlines()
        if len(lines) != 1:
            problems.append(f"the error is {len(lines)} lines: {err.strip()[:300]!r}")
        if outcome.stdout.strip():
            problems.append(f"an error with output on stdout: {outcome.stdout[:200]!r}")
    return problems


def leftovers(before: set[bytes], after: set[bytes], allowed: Iterable[bytes]) -> list[str]:
    """New paths the run left that it was not allowed to write."""
    stray = sorted(after - before - set(allowed))
    return [f"left {os.fsdecode(p)!r}" for p in stray[:5]]


def changed(before: dict[Path, str], after: dict[Path, str]) -> list[str]:
    return [f"changed {p}" for p in before if before[p] != after.get(p)]


def clear(folder: Path) -> None:
    """Empty a folder (the temporary folder between runs), links and all."""
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
