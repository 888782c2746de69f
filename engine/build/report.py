"""The report of `klpdiff build`: what a build came to, for people and for programs.

In: a `BuildResult` (the verdict, the module, the notes, and each object's diff report from
diff/report.py). Out: the JSON document (`build_facts`, the same schema version as the differ's) and
its text summary (`build_summary`).
"""

from __future__ import annotations

from typing import Any

from ..diff.report import SCHEMA, summary
from .command import BuildResult


def build_facts(result: BuildResult) -> dict[str, Any]:
    """The whole `klpdiff build` report: the verdict, the module, and each object's own facts."""
    return {
        "schema": SCHEMA,
        "verdict": result.verdict.value,
        "module": str(result.module) if result.module else None,
        "notes": result.notes,
        "seconds": result.seconds,
        "objects": [{"object": r.obj, "objname": r.objname, **{k: v for k, v in r.diff.facts.items() if k != "schema"}}
                    for r in result.objects],
    }


def build_summary(doc: dict[str, Any]) -> str:
    lines = list(doc["notes"])
    for obj in doc["objects"]:
        lines.append(f"{obj['object']} ({obj['objname']}): {obj['verdict']}")
        lines.extend(f"  {line}" for line in summary(obj).splitlines() if not line.startswith("wrote "))
    if doc["verdict"] == "ok":
        lines.append(f"wrote {doc['module']}" if doc["module"] else "checked: it can be livepatched (no module "
                                                                     "built with --check)")
    elif doc["verdict"] == "no-change":
        lines.append("no function changed: no module written")
    else:
        lines.append("refused: no module written")
    return "\n".join(lines)
