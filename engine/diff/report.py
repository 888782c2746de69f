"""The differ's report stage (the stages: pipeline.py): say what the diff found, for people and for programs.

In: an `Analysis` (and the output path, or the refusal reasons). Out: a short
human summary and a JSON document with the same facts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.errors import Refusal, Verdict
from ..core.outputs import atomic_write
from ..elf.model import STT_FUNC, STT_OBJECT
from .compare import CHANGED, NEW, NoiseBasis
from .layoutcheck import LayoutStatus, layout_json
from .pipeline import Analysis

# The version of the --json reports' shape (docs/report.md): raised when a field is removed or changes
# meaning; new fields may appear in any version.
SCHEMA = 1


def facts(a: Analysis, output: Path | None, verdict: Verdict, reasons: list[Refusal] | None = None) -> dict[str, Any]:
    included = _included_names(a)
    return {
        "schema": SCHEMA,
        "verdict": verdict.value,
        "arch": a.rules.arch.name,
        "original": a.orig.path,
        "patched": a.patched.path,
        "output": str(output) if output else None,
        "changed_functions": a.names(CHANGED, STT_FUNC),
        "new_functions": a.names(NEW, STT_FUNC),
        "changed_objects": a.names(CHANGED, STT_OBJECT),
        "new_objects": sorted(n for n in a.names(NEW, STT_OBJECT) if n in included),
        "included_functions": a.included_functions(),
        "helpers": {_name(a, i): a.inc.why_symbol.get(i, "") for i in sorted(a.inc.helpers)},
        "callbacks": [{"object": cb.object or a.objname, "kind": cb.kind, "function": _name(a, cb.function)}
                      for cb in a.inc.callbacks],
        "through_callers": {_name(a, f): [_name(a, c) for c in callers]
                            for f, callers in sorted(a.inc.through_callers.items())},
        "line_number_only": sorted(a.patched.symbols[i].name for i in a.cmp.line_noise),
        "line_number_heuristic": sorted(a.patched.symbols[i].name for i, basis in a.cmp.line_noise.items()
                                        if basis is NoiseBasis.HEURISTIC),
        "removed": sorted(a.orig.symbols[i].name for i in a.cmp.removed),
        "reasons": {_name(a, i): r for i, r in sorted(a.cmp.reason.items()) if a.cmp.status.get(i) == CHANGED},
        "special_sections": [
            {"section": a.patched.sections[p.section].name, "struct": p.spec.struct, "entry_size": p.layout.size,
             "layout_from": p.layout_source, "entries": p.total, "kept": len(p.kept), "dropped": p.dropped,
             "rule": str(p.spec.origin)}
            for p in a.inc.special],
        "rewritten_sites": a.sites.notes,
        "layout_check": a.layout.status.value,
        "layout_changes": [
            {"type": f.change.name, "changes": list(f.change.how), "used_by": f.used_by,
             "members_crossed": f.members_crossed, "allowed": f.allowed,
             "before": layout_json(f.change.before), "after": layout_json(f.change.after)}
            for f in a.layout.findings],
        "refused": [str(r) for r in reasons or []],
    }


def _included_names(a: Analysis) -> set[str]:
    return {_name(a, i) for i in a.inc.defined_included(a.patched)}


def _name(a: Analysis, index: int) -> str:
    return a.corr.name_of(a.orig, a.patched, index)


def summary(doc: dict[str, Any]) -> str:
    lines = []
    for label, key in (("changed", "changed_functions"), ("new", "new_functions"),
                       ("changed data", "changed_objects"), ("new data", "new_objects")):
        if doc[key]:
            lines.append(f"{label}: {', '.join(doc[key])}")
    for name, reason in doc["reasons"].items():
        lines.append(f"  {name}: {reason}")
    lines.extend(f"patched through its callers: {f} has no ftrace call site; patched in its place: "
                 f"{', '.join(callers)}" for f, callers in doc["through_callers"].items())
    lines.extend(f"callback: {cb['kind']} of {cb['object']}: {cb['function']}" for cb in doc["callbacks"])
    if doc["helpers"]:
        lines.append(f"copied unchanged (helpers, not patched): {', '.join(doc['helpers'])}")
    if doc["line_number_only"]:
        lines.append(f"__LINE__ only (unchanged): {', '.join(doc['line_number_only'])}")
    if doc["line_number_heuristic"]:
        lines.append(f"warning: {len(doc['line_number_heuristic'])} function(s) judged __LINE__ only by heuristic, "
                     f"without line tables: {', '.join(doc['line_number_heuristic'])}; a constant changed at "
                     f"those places would not be seen (compile with -g for exact decisions)")
    if doc["layout_check"] == LayoutStatus.NO_DEBUG_INFO:
        lines.append("warning: no debug information in both objects: the layouts of the types the changed code "
                     "uses were not compared (compile with -g)")
    lines.extend(f"layout change allowed: {c['type']} ({'; '.join(c['changes'])}), used by {c['used_by']}"
                 for c in doc["layout_changes"] if c["allowed"])
    for s in doc["special_sections"]:
        if s["kept"] or s["dropped"]:
            lines.append(f"{s['section']}: kept {s['kept']} of {s['entries']} {s['struct']} entries "
                         f"({s['entry_size']} bytes, from {s['layout_from']})")
    lines.extend(f"rewritten: {note}" for note in doc["rewritten_sites"])
    if doc["verdict"] == "ok":
        lines.append(f"wrote {doc['output']} with {len(doc['included_functions'])} function(s)")
    elif doc["verdict"] == "no-change":
        lines.append("no function changed: nothing written")
    else:
        lines.extend(f"refused: {r}" for r in doc["refused"])
    return "\n".join(lines)


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write the report atomically (never half a file)."""
    import json  # only for --json

    atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode())
