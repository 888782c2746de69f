"""Many diffs at once, in worker processes (what `klpdiff build` needs for a header patch).

In: `DiffJob`s (two object paths, the output path, the options) and a number of
workers. Out: one `DiffResult` per job, in job order: the verdict, the output
written (or None) and the diff's report, exactly what running the jobs one at a
time gives. The diff is pure Python, so threads would share one interpreter
lock: the jobs run in worker processes forked from this one after it compiled
the rule set of each architecture among the jobs, which they inherit. A forked
worker never returns into its parent's code (multiprocessing ends it with
os._exit), so no cleanup of the caller runs twice. A bad input (`KlpdiffError`)
stops the batch with its message, as it would stop a single diff.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ..core.errors import KlpdiffError, Verdict
from ..core.records import record
from ..diff.pipeline import Options, run
from ..diff.report import DiffReport, diff_report
from ..ruleset.load import arch_for_machine, load_ruleset, rule_dirs


@record
class DiffJob:
    orig: Path
    patched: Path
    output: Path
    options: Options


@record
class DiffResult:
    verdict: Verdict
    output: Path | None
    report: DiffReport  # what the summary and --json say of this diff


def diff_one(job: DiffJob) -> DiffResult:
    outcome = run(job.orig, job.patched, job.output, job.options)
    return DiffResult(outcome.verdict, outcome.output,
                      diff_report(outcome.analysis, outcome.output, outcome.verdict, outcome.analysis.refused))


def diff_many(jobs: Sequence[DiffJob], workers: int) -> list[DiffResult]:
    """Run the jobs with up to `workers` processes (one: in this process), results in job order."""
    if workers <= 1 or len(jobs) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [diff_one(job) for job in jobs]
    _warm(jobs)
    context = multiprocessing.get_context("fork")
    processes = min(workers, len(jobs), os.cpu_count() or workers)
    chunks = [list(jobs[start:end]) for start, end in guided_chunks(len(jobs), processes)]
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        return [result for done in pool.map(_diff_chunk, chunks) for result in done]


def guided_chunks(count: int, processes: int) -> list[tuple[int, int]]:
    """[start, end) ranges of the jobs, handed out in order, that shrink as the queue drains: each a
    1/(2·processes) share of the jobs left, at least one. The first are large (few round trips for
    many small diffs), the last single jobs, so the workers end together."""
    chunks = []
    start = 0
    while start < count:
        end = start + max(1, (count - start) // (2 * processes))
        chunks.append((start, end))
        start = end
    return chunks


def _diff_chunk(jobs: list[DiffJob]) -> list[DiffResult]:
    return [diff_one(job) for job in jobs]


def _warm(jobs: Sequence[DiffJob]) -> None:
    """Compile the rule set of each architecture among the jobs here, once, so that the workers forked
    from this process inherit it instead of each compiling it again."""
    seen: set[tuple[tuple[Path, ...], int]] = set()
    for job in jobs:
        try:
            with job.orig.open("rb") as f:
                header = f.read(20)
        except OSError:
            continue  # the diff itself reports it
        if len(header) < 20 or header[:4] != b"\x7fELF":
            continue
        machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
        key = (tuple(job.options.rules_dirs), machine)
        if key in seen:
            continue
        seen.add(key)
        try:
            dirs = rule_dirs(job.options.rules_dirs)
            arch = arch_for_machine(dirs, machine)
            if arch is not None:
                load_ruleset(dirs, arch)
        except KlpdiffError:
            continue  # the diff itself reports it
