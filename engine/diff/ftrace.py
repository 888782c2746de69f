"""Ftrace call sites: which functions the kernel's livepatch core can redirect (part of the compare
and include stages).

In: an object, the `Ruleset` (the arch's `ftrace:` rule: the symbols a call site calls, how far from
a function's start it may sit, the sections that record sites) and the object's relocation index.
Out: the functions with an ftrace call site (`ftrace_sites`), and where a function's site is
(`call_site`), the one scan of a function's first bytes both stages use.
"""

from __future__ import annotations

from ..elf.model import STT_FUNC, STT_SECTION, ElfObject, RelocIndex, Symbol
from ..ruleset.compiled import Ruleset


def call_site(obj: ElfObject, sym: Symbol, rel: RelocIndex, rs: Ruleset) -> int | None:
    """The offset in the function `sym` of the relocation of its ftrace call (a call to a symbol the
    rules name, within `within` bytes of its start), or None."""
    ft = rs.arch.ftrace
    calls = ft.calls
    for r, t in rel.in_range(sym.shndx, sym.value, sym.value + ft.within):
        if obj.symbols[t.sym].name in calls:
            return r.offset - sym.value
    return None


def ftrace_sites(obj: ElfObject, rs: Ruleset, rel: RelocIndex) -> set[int]:
    """Functions with an ftrace call site: an entry in a rule-named record section, or a call to a
    rule-named symbol near their start."""
    out = _recorded(obj, rs)
    # aliases (SYSCALL_DEFINE's __se_sys_x and sys_x share one body) share the call site
    for index in list(out):
        site = obj.symbols[index]
        if site.is_defined:
            out.update(i for i in obj.symbols_in.get(site.shndx, [])
                       if obj.symbols[i].value == site.value and obj.symbols[i].type == STT_FUNC)
    if not rs.arch.ftrace.calls:
        return out
    for sym in obj.symbols:
        if sym.type == STT_FUNC and sym.is_defined and sym.index not in out \
                and call_site(obj, sym, rel, rs) is not None:
            out.add(sym.index)
    return out


def _recorded(obj: ElfObject, rs: Ruleset) -> set[int]:
    """The functions the rule-named record sections list."""
    records = set(rs.arch.ftrace.records)
    within = rs.arch.ftrace.within
    out: set[int] = set()
    for sec in obj.sections:
        if sec.name not in records:
            continue
        for t in obj.targets.get(sec.index, []):
            site = obj.symbols[t.sym]
            if site.type != STT_SECTION:
                out.add(t.sym)
                continue
            # a site before the function's symbol (patchable-entry NOPs ahead of the entry point; an
            # assembler's label there is read as its place, elf/read.py) belongs to the function that
            # starts within `within` bytes after it
            for index in obj.symbols_in.get(site.shndx, []):
                func = obj.symbols[index]
                if func.type == STT_FUNC and t.addend <= func.value <= t.addend + within:
                    out.add(index)
    return out
