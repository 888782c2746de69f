"""Stage 5 — refuse: find every reason the change cannot be livepatched.

In: the patched object, its `Roles`, the `Comparison`, the `Inclusion` (which
carries entry-level refusals from special-section rules) and the `Ruleset`.
Out: the list of reasons, each naming the symbol and the rule that fired; the
pipeline exits 2 with all of them when the list is not empty.
"""

from __future__ import annotations

from .classify import parent_name
from .compare import CHANGED, Comparison
from .include import Inclusion
from .model import ElfObject
from .ruleset import Ruleset
from .views import ChangeEnv, SymbolView, symbol_env


def refusals(patched: ElfObject, cmp: Comparison, inc: Inclusion, rs: Ruleset) -> list[str]:
    reasons: list[str] = []
    for index, status in sorted(cmp.status.items()):
        if status != CHANGED:
            continue
        sym = patched.symbols[index]
        base = symbol_env(patched, sym)
        env = ChangeEnv(
            sym=SymbolView(patched, sym, inc.symbols, lambda s: parent_name(rs, s.name) is not None),
            section=base.section,
            status=status,
            has_ftrace=index in cmp.ftrace_p,
        )
        for rule in rs.refusals:
            if rule.test(env):
                reasons.append(f"{rule.message(env)} [{rule.origin}]")
    reasons.extend(inc.refusals)
    return reasons
