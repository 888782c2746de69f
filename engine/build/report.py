"""The report of `klpdiff build`: what a build came to, for people and for programs.

In: a `BuildResult` (the verdict, the module, the notes, the timings, and each object's `DiffReport`
from diff/report.py). Out: the JSON document (`build_json`, the same schema version as the differ's)
and its text summary (`build_summary`).
"""

from __future__ import annotations

from typing import Any

from ..core.errors import Verdict
from ..diff.report import SCHEMA, json_value, summary
from .command import BuildResult


def build_json(result: BuildResult) -> dict[str, Any]:
    """The whole `klpdiff build` report: the verdict, the module, and each object's own report."""
    return {
        "schema": SCHEMA,
        "verdict": result.verdict.value,
        "module": str(result.module) if result.module else None,
        "notes": result.notes,
        "seconds": result.seconds,
        "objects": [{"object": r.obj, "objname": r.objname, **json_value(r.diff.report)} for r in result.objects],
    }


def build_summary(result: BuildResult) -> str:
    lines = list(result.notes)
    for r in result.objects:
        lines.append(f"{r.obj} ({r.objname}): {r.verdict.value}")
        lines.extend(f"  {line}" for line in summary(r.diff.report).splitlines() if not line.startswith("wrote "))
    if result.verdict is Verdict.OK:
        lines.append(f"wrote {result.module}" if result.module else "checked: it can be livepatched (no module "
                                                                       "built with --check)")
    elif result.verdict is Verdict.NO_CHANGE:
        lines.append("no function changed: no module written")
    else:
        lines.append("refused: no module written")
    return "\n".join(lines)
