"""`klpdiff explain`: why a symbol or special-section entry ended up as it did.

In: an `Analysis` and a query — a symbol name (patched or original), or
`SECTION[N]` for the N-th entry (from 0) of a special section. Out: lines of
facts in pipeline order — what it is, how it was correlated, what the
comparison found, whether and why it was included, and the rules that fired.
"""

from __future__ import annotations

import re

from ..diff.compare import SAME
from ..diff.linenoise import NoiseBasis
from ..diff.pipeline import Analysis
from ..elf.model import STT_FUNC, Symbol

_ENTRY = re.compile(r"^(?P<section>.+)\[(?P<index>\d+)\]$")


def explain(a: Analysis, query: str) -> list[str]:
    m = _ENTRY.match(query)
    if m:
        return _explain_entry(a, m.group("section"), int(m.group("index")))
    patched = [s for s in a.patched.symbols if s.name == query and s.index]
    orig = [s for s in a.orig.symbols if s.name == query and s.index]
    if not patched:
        twins = [a.corr.sym_twin_rev[s.index] for s in orig if s.index in a.corr.sym_twin_rev]
        patched = [a.patched.symbols[i] for i in twins]
    if not patched and not orig:
        return [f"{query}: no such symbol in {a.orig.path} or {a.patched.path}"]
    if not patched:
        return [f"{query}: only in the original object ({_describe(a, orig[0], original=True)}): "
                f"removed by the patch; callers that were changed no longer reach it"]
    lines: list[str] = []
    for sym in patched:
        lines.extend(_explain_symbol(a, sym))
    return lines


def _describe(a: Analysis, sym: Symbol, original: bool = False) -> str:
    obj = a.orig if original else a.patched
    sec = obj.section_of(sym)
    where = f"in {sec.name}" if sec is not None else "undefined (a reference)"
    return f"{sym.type_name} {sym.bind_name} {where}, {sym.size} bytes"


def _explain_symbol(a: Analysis, sym: Symbol) -> list[str]:
    """Each stage's word on a symbol: correlation, comparison, ftrace, inclusion, refusals, entries."""
    return [f"{sym.name}: {_describe(a, sym)}", *_correlation_lines(a, sym), *_comparison_lines(a, sym),
            *_inclusion_lines(a, sym), *(f"  refused: {r}" for r in a.refused if sym.index in r.symbols),
            *_entry_mentions(a, sym.name)]


def _correlation_lines(a: Analysis, sym: Symbol) -> list[str]:
    i, roles, out = sym.index, a.roles_p, []
    if i in roles.fresh:
        out.append("  correlation: never correlated (a 'fresh' rule in correlation.yaml): "
                   "each build's copy is its own object")
    elif i in roles.anonymous:
        out.append("  correlation: an anonymous label (correlation.yaml anonymous): references to it "
                   "compare by the place it names")
    twin = a.corr.sym_twin.get(i)
    if twin is not None:
        orig_name = a.orig.symbols[twin].name
        renamed = f" (output uses the original name {orig_name})" if orig_name != sym.name else ""
        out.append(f"  correlation: paired with original {orig_name}: {a.corr.how.get(i, 'same name')}{renamed}")
    elif i not in roles.fresh and i not in roles.anonymous:
        out.append("  correlation: no original twin, so it is new")
    if i in a.corr.parent:
        out.append(f"  part of {a.patched.symbols[a.corr.parent[i]].name} (a compiler-split child)")
    if i in a.cmp.aliases:
        out.append(f"  shares its body with {a.patched.symbols[a.cmp.aliases[i]].name}, which stands for both")
    return out


def _comparison_lines(a: Analysis, sym: Symbol) -> list[str]:
    i, out = sym.index, []
    status = a.cmp.status.get(i)
    if status is not None:
        reason = a.cmp.reason.get(i)
        out.append(f"  comparison: {status}" + (f" — {reason}" if reason else ""))
        basis = a.cmp.line_noise.get(i)
        if basis is NoiseBasis.LINE_TABLE:
            out.append("  comparison: its only differences are line numbers, attested by the line tables of both "
                       "objects, so it counts as unchanged:")
        elif basis is NoiseBasis.HEURISTIC:
            out.append("  comparison: its only differences look like line numbers (no line tables: rules/noise.yaml "
                       "heuristics), so it counts as unchanged; a changed constant there would not be seen:")
        out.extend(f"    {line}" for line in a.cmp.line_evidence.get(i, []))
    if sym.type == STT_FUNC and sym.is_defined:
        has = i in a.cmp.ftrace_p
        out.append(f"  ftrace: {'has' if has else 'has no'} call site (arch.yaml ftrace)")
        callers = a.inc.through_callers.get(i)
        if callers is not None:
            out.append("  patched through its callers: " + ", ".join(a.patched.symbols[c].name for c in callers))
        elif i in a.inc.not_through:
            out.append(f"  cannot be patched through its callers: {a.inc.not_through[i].why}")
    return out


def _inclusion_lines(a: Analysis, sym: Symbol) -> list[str]:
    i, status = sym.index, a.cmp.status.get(sym.index)
    if i in a.inc.defined_included(a.patched):
        why = a.inc.why_symbol.get(i, "")
        sec_why = a.inc.why_section.get(sym.shndx, "")
        return [f"  inclusion: copied into the output ({why}; its section: {sec_why})"]
    if i in a.inc.symbols:
        return [f"  inclusion: stays a reference to the running kernel's copy "
                f"({a.inc.why_symbol.get(i, 'referenced')}, and it is {status or SAME})"]
    return ["  inclusion: left out (" + ("unchanged and " if status in (None, SAME) else "")
            + "not referenced by anything included)"]


def _entry_mentions(a: Analysis, name: str) -> list[str]:
    """The special-section entries whose decisions name the symbol, by section."""
    out = []
    mention = re.compile(rf"(?<![\w.]){re.escape(name)}[+-]")
    for plan in a.inc.plans:
        hits = [n for n, d in plan.decisions.items() if mention.search(str(d))]
        if hits:
            sec = a.patched.sections[plan.section].name
            kept = sum(1 for n in hits if n in plan.kept)
            out.append(f"  {sec}: {len(hits)} entries name it, {kept} kept "
                       f"(explain them as {sec}[{hits[0]}] …)")
    return out


def _explain_entry(a: Analysis, section: str, index: int) -> list[str]:
    plans = [p for p in a.inc.plans if a.patched.sections[p.section].name == section]
    if not plans:
        known = sorted({a.patched.sections[p.section].name for p in a.inc.plans})
        return [f"{section}: not a special section of {a.patched.path} (special sections here: "
                f"{', '.join(known) or 'none'})"]
    lines = []
    for plan in plans:
        if index >= plan.total:
            lines.append(f"{section}[{index}]: the section has {plan.total} entries")
            continue
        lines.append(f"{section}[{index}]: struct {plan.spec.struct}, {plan.layout.size} bytes per entry "
                     f"(from {plan.layout_source}), rule {plan.spec.origin}")
        decision = plan.decisions.get(index)
        lines.append(f"  {decision if decision is not None else 'left out: no relocation in this entry'}")
        outcome = a.sites.outcome.get((plan.section, index))
        if outcome is not None:
            lines.append(f"  applied by vmlinux at boot only: {outcome}")
    return lines
