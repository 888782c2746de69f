"""The differ's refuse stage (the stages: pipeline.py): find every reason the change cannot be livepatched.

In: the patched object, its `Roles`, the `Comparison`, the `Inclusion` (which
carries entry-level refusals from special-section rules), the `Sites` (boot-only
code sites that could not be rewritten) and the `Ruleset`.
Out: the list of reasons, each naming the symbol and the rule that fired (or,
for a section no rule describes, the section); the pipeline exits 2 with all
of them when the list is not empty.
"""

from __future__ import annotations

from ..core.errors import Refusal, one_per_reason
from ..elf.model import STT_FUNC, STT_SECTION, ElfObject, RelocIndex
from ..lang.views import (
    ChangeEnv,
    ChangeSectionView,
    EntryContext,
    RelocEnv,
    SectionView,
    StagedSymbolView,
    TargetView,
)
from ..ruleset.compiled import RelocRule, Ruleset
from .bootsites import Sites
from .classify import Roles
from .compare import CHANGED, SAME, Comparison
from .correlate import child_test, function_bodies, prefix_test
from .include import Inclusion


def refusals(patched: ElfObject, roles: Roles, cmp: Comparison, inc: Inclusion, sites: Sites,
             rs: Ruleset, context: EntryContext) -> list[Refusal]:
    reasons: list[Refusal] = []
    is_prefix = prefix_test(patched, rs)
    # a caller patched in place of a changed function that has no ftrace site is patched like a changed one
    patched_as = {**{i: CHANGED for i in inc.patched_callers}, **cmp.status}
    for index, status in sorted(patched_as.items()):
        if status == SAME:
            continue
        sym = patched.symbols[index]
        sec = patched.sections[sym.shndx]
        not_through = inc.not_through.get(index)
        env = ChangeEnv(
            sym=StagedSymbolView(patched, sym, inc.symbols, child_test(rs)),
            section=ChangeSectionView(sec, function_bodies(patched, sym.shndx, is_prefix)),
            status=status,
            has_ftrace=index in cmp.ftrace_p,
            through_callers=index in inc.through_callers,
            callers_problem=not_through.why if not_through is not None else "",
        )
        for rule in rs.refusals:
            if rule.test(env):
                reasons.append(Refusal(rule.message(env), rule.origin, frozenset({index})))
    rel = patched.relocs()
    reasons.extend(_relocation_refusals(patched, cmp, inc, rs, rel, context))
    reasons.extend(inc.refusals)
    reasons.extend(sites.refusals)
    reasons.extend(unknown_section_refusals(patched, roles, inc, rel))
    return one_per_reason(reasons)  # one line per reason, not one per call site that gave it


def unknown_section_refusals(patched: ElfObject, roles: Roles, inc: Inclusion, rel: RelocIndex) -> list[Refusal]:
    """A section no rule claims may be a table the kernel reads or patches (at boot, or at module
    load): neither dropping it nor copying it is known to be right, so any link between it and the
    included code is a refusal, in either direction."""
    if not roles.unknown:
        return []
    included = inc.defined_included(patched)
    reasons = []
    for shndx in sorted(roles.unknown):
        sec = patched.sections[shndx]
        hits = {t.sym for t in patched.targets.get(shndx, [])
                if _is_included_code(patched, t.sym, included, inc.sections)}
        if hits:
            into = sorted({_code_name(patched, i) for i in hits})
            reasons.append(Refusal(
                f"section {sec.name} points into included code ({', '.join(into)}) but no rule describes it: "
                f"it may be a table the kernel applies at boot or module load; describe it in a rule file "
                f"(see docs/rules.md) or pass --rules", None, frozenset(hits)))
    for index in sorted(included):
        sym = patched.symbols[index]
        if sym.type != STT_FUNC:
            continue
        used = sorted({patched.sections[patched.symbols[t.sym].shndx].name
                       for _r, t in rel.in_range(sym.shndx, sym.value, sym.value + sym.size)
                       if patched.symbols[t.sym].shndx in roles.unknown})
        if used:
            reasons.append(Refusal(f"function {sym.name} references section {', '.join(used)}, which no rule "
                                   f"describes: describe it in a rule file (see docs/rules.md) or pass --rules",
                                   None, frozenset({index})))
    return reasons


def _is_included_code(obj: ElfObject, index: int, included: set[int], sections: set[int]) -> bool:
    sym = obj.symbols[index]
    if sym.type == STT_SECTION:
        return sym.is_defined and sym.shndx in sections and obj.sections[sym.shndx].is_text
    return index in included and sym.type == STT_FUNC


def _code_name(obj: ElfObject, index: int) -> str:
    sym = obj.symbols[index]
    return obj.sections[sym.shndx].name if sym.type == STT_SECTION else sym.name


def _relocation_refusals(patched: ElfObject, cmp: Comparison, inc: Inclusion, rs: Ruleset,
                         rel: RelocIndex, context: EntryContext) -> list[Refusal]:
    """Rules that refuse an included function (changed, new, or a helper copy) for one of its
    relocations."""
    if not rs.reloc_refusals:
        return []
    by_type: dict[int, list[RelocRule]] = {}
    for rule in rs.reloc_refusals:
        for number in rule.types:
            by_type.setdefault(number, []).append(rule)
    included = inc.defined_included(patched)
    reasons = []
    for index in sorted(included):
        sym = patched.symbols[index]
        status = cmp.status.get(index, SAME)
        if sym.type != STT_FUNC or (status == SAME and index not in inc.helpers):
            continue
        sec = patched.sections[sym.shndx]
        for r, t in rel.in_range(sym.shndx, sym.value, sym.value + sym.size):
            for rule in by_type.get(r.type, []):
                if not rule.fits(sec.data, r.offset):
                    continue
                env = RelocEnv(StagedSymbolView(patched, sym, included), SectionView(sec), status,
                               TargetView(patched, patched.symbols[t.sym], included, addend=t.addend,
                                         owner_of=context.owner_of, resolved_by_klp=context.resolved_by_klp))
                if rule.test(env):
                    reasons.append(Refusal(rule.message(env), rule.origin, frozenset({index, t.sym})))
    return reasons
