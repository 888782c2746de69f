"""The differ's report stage (the stages: pipeline.py): say what the diff found, for people and for programs.

In: an `Analysis` (and the output path, the verdict, the refusal reasons). Out: a `DiffReport`, typed
records of what was found, and its two renderings: `summary` (a few lines for people) and
`report_json` (the --json document, docs/report.md). Each fact is taken from the stage that found it;
the renderings read the records and nothing else.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from ..core.errors import Refusal, Verdict
from ..core.outputs import atomic_write
from ..core.records import record
from ..elf.model import STT_FUNC, STT_OBJECT
from .compare import CHANGED, NEW
from .layoutcheck import LayoutStatus, layout_json
from .linenoise import NoiseBasis
from .pipeline import Analysis

# The version of the --json reports' shape (docs/report.md): raised when a field is removed or changes
# meaning; new fields may appear in any version.
SCHEMA = 1


@record
class CallbackFacts:
    """A patch-author callback the livepatch registers."""

    object: str      # the kernel object it is for
    kind: str        # pre_patch, post_patch, pre_unpatch or post_unpatch
    function: str


@record
class SpecialSectionFacts:
    """A special section the output carries part of."""

    section: str
    struct: str
    entry_size: int
    layout_from: str  # where the entry layout came from (a rule, DWARF, --struct-size)
    entries: int
    kept: int
    dropped: list[str]  # why each dropped entry was dropped (a rule's message)
    rule: str         # the rule's origin, file:line


@record
class LayoutChangeFacts:
    """A changed type the included code reaches."""

    type: str
    changes: list[str]
    used_by: str
    members_crossed: int
    allowed: bool
    before: dict[str, object]  # the layout, as docs/report.md shows it
    after: dict[str, object]


@record
class DiffReport:
    """Everything a diff reports, in the order the JSON document lists it."""

    verdict: Verdict
    arch: str
    original: str
    patched: str
    output: str | None
    changed_functions: list[str]
    new_functions: list[str]
    changed_objects: list[str]
    new_objects: list[str]
    included_functions: list[str]
    helpers: dict[str, str]                     # unchanged function copied -> why
    callbacks: list[CallbackFacts]
    through_callers: dict[str, list[str]]       # changed function without an ftrace site -> its callers
    line_number_only: list[str]
    line_number_heuristic: list[str]
    removed: list[str]
    reasons: dict[str, str]                     # changed function -> what changed
    special_sections: list[SpecialSectionFacts]
    rewritten_sites: list[str]
    layout_check: LayoutStatus
    layout_changes: list[LayoutChangeFacts]
    refused: list[str]


def diff_report(a: Analysis, output: Path | None, verdict: Verdict, reasons: list[Refusal] | None = None) -> DiffReport:
    """What the analysis found, as records."""
    included = _included_names(a)
    return DiffReport(
        verdict=verdict,
        arch=a.rules.arch.name,
        original=a.orig.path,
        patched=a.patched.path,
        output=str(output) if output else None,
        changed_functions=a.names(CHANGED, STT_FUNC),
        new_functions=a.names(NEW, STT_FUNC),
        changed_objects=a.names(CHANGED, STT_OBJECT),
        new_objects=sorted(n for n in a.names(NEW, STT_OBJECT) if n in included),
        included_functions=a.included_functions(),
        helpers={_name(a, i): a.inc.why_symbol.get(i, "") for i in sorted(a.inc.helpers)},
        callbacks=[CallbackFacts(cb.object or a.objname, cb.kind, _name(a, cb.function)) for cb in a.inc.callbacks],
        through_callers={_name(a, f): [_name(a, c) for c in callers]
                         for f, callers in sorted(a.inc.through_callers.items())},
        line_number_only=sorted(a.patched.symbols[i].name for i in a.cmp.line_noise),
        line_number_heuristic=sorted(a.patched.symbols[i].name for i, basis in a.cmp.line_noise.items()
                                     if basis is NoiseBasis.HEURISTIC),
        removed=sorted(a.orig.symbols[i].name for i in a.cmp.removed),
        reasons={_name(a, i): r for i, r in sorted(a.cmp.reason.items()) if a.cmp.status.get(i) == CHANGED},
        special_sections=[
            SpecialSectionFacts(a.patched.sections[p.section].name, p.spec.struct, p.layout.size, p.layout_source,
                                p.total, len(p.kept), p.dropped, str(p.spec.origin))
            for p in a.inc.special],
        rewritten_sites=a.sites.notes,
        layout_check=a.layout.status,
        layout_changes=[
            LayoutChangeFacts(f.change.name, list(f.change.how), f.used_by, f.members_crossed, f.allowed,
                              layout_json(f.change.before), layout_json(f.change.after))
            for f in a.layout.findings],
        refused=[str(r) for r in reasons or []],
    )


def _included_names(a: Analysis) -> set[str]:
    return {_name(a, i) for i in a.inc.defined_included(a.patched)}


def _name(a: Analysis, index: int) -> str:
    return a.corr.name_of(a.orig, a.patched, index)


def summary(report: DiffReport) -> str:
    """The report for people: what changed and why, what was copied, warnings, and the outcome."""
    r = report
    lines = [f"{label}: {', '.join(names)}" for label, names in (
        ("changed", r.changed_functions), ("new", r.new_functions),
        ("changed data", r.changed_objects), ("new data", r.new_objects)) if names]
    lines.extend(f"  {name}: {reason}" for name, reason in r.reasons.items())
    lines.extend(f"patched through its callers: {f} has no ftrace call site; patched in its place: "
                 f"{', '.join(callers)}" for f, callers in r.through_callers.items())
    lines.extend(f"callback: {cb.kind} of {cb.object}: {cb.function}" for cb in r.callbacks)
    if r.helpers:
        lines.append(f"copied unchanged (helpers, not patched): {', '.join(r.helpers)}")
    if r.line_number_only:
        lines.append(f"__LINE__ only (unchanged): {', '.join(r.line_number_only)}")
    lines.extend(_warnings(r))
    lines.extend(f"layout change allowed: {c.type} ({'; '.join(c.changes)}), used by {c.used_by}"
                 for c in r.layout_changes if c.allowed)
    lines.extend(f"{s.section}: kept {s.kept} of {s.entries} {s.struct} entries ({s.entry_size} bytes, from "
                 f"{s.layout_from})" for s in r.special_sections if s.kept or s.dropped)
    lines.extend(f"rewritten: {note}" for note in r.rewritten_sites)
    lines.extend(_outcome(r))
    return "\n".join(lines)


def _warnings(r: DiffReport) -> list[str]:
    """What the diff could decide only approximately, and how to make it exact."""
    lines = []
    if r.line_number_heuristic:
        lines.append(f"warning: {len(r.line_number_heuristic)} function(s) judged __LINE__ only by heuristic, "
                     f"without line tables: {', '.join(r.line_number_heuristic)}; a constant changed at "
                     f"those places would not be seen (compile with -g for exact decisions)")
    if r.layout_check is LayoutStatus.NO_DEBUG_INFO:
        lines.append("warning: no debug information in both objects: the layouts of the types the changed code "
                     "uses were not compared (compile with -g)")
    return lines


def _outcome(r: DiffReport) -> list[str]:
    if r.verdict is Verdict.OK:
        return [f"wrote {r.output} with {len(r.included_functions)} function(s)"]
    if r.verdict is Verdict.NO_CHANGE:
        return ["no function changed: nothing written"]
    return [f"refused: {reason}" for reason in r.refused]


def json_value(value: Any) -> Any:
    """A report record as JSON data: records become objects (fields in order), enums their word,
    tuples lists; everything else is already JSON data."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_value(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    return value


def report_json(report: DiffReport) -> dict[str, Any]:
    """The --json document of a diff: the schema version, then every field of the report."""
    return {"schema": SCHEMA, **json_value(report)}


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write a JSON document atomically (never half a file)."""
    import json  # only for --json

    atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode())
