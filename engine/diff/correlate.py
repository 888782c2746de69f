"""The differ's correlate stage (the stages: pipeline.py): pair every patched symbol and section with its original.

In: both `ElfObject`s, their `Roles`, the `Ruleset`. Out: a `Correlation`:
symbol twins (patched → orig and back), section twins, and child → parent links.

Order of work:
1. ordinary symbols by (normalised name, type, FILE scope); one candidate each
   side pairs at once, several pair exact names first, then in symtab order;
2. static locals (`var.N`) through the correlated functions that reference
   them — the i-th distinct static of a name in the original function pairs with
   the i-th in its patched twin — then, for statics no function reaches, by
   name when that is unambiguous;
3. sections through the symbols they hold, then by normalised name.
Fresh symbols (rules: lockdep keys, once flags, …) are never paired.

This stage also owns what correlation.yaml says of names, which later stages ask
too: `Ruleset.normalize_name` (compiler counters removed), `parent_name` / `child_test`
(compiler-split parts such as `.cold`) and `prefix_test` (padding symbols in front
of a function).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import field

from ..core.records import record
from ..elf.model import STT_FILE, STT_FUNC, STT_SECTION, ElfObject, Symbol
from ..ruleset.compiled import Ruleset
from .classify import Roles

# ------------------------------------------------------------------------------------------------
# names: what correlation.yaml says about them (also asked by later stages)

def parent_name(rs: Ruleset, name: str) -> str | None:
    for pattern in rs.child:
        m = pattern.match(name)
        if m:
            return m.group("parent")
    return None


def prefix_test(obj: ElfObject, rs: Ruleset) -> Callable[[Symbol], bool]:
    """Is a symbol the padding in front of a function (rules: correlation prefix) that sits right
    before that function in the same section?"""
    starts = {(s.name, s.shndx): s.value for s in obj.symbols if s.type == STT_FUNC}

    def is_prefix(sym: Symbol) -> bool:
        for pattern in rs.prefix:
            m = pattern.match(sym.name)
            if m and starts.get((m.group("function"), sym.shndx)) == sym.value + sym.size:
                return True
        return False

    return is_prefix


def function_bodies(obj: ElfObject, shndx: int, is_prefix: Callable[[Symbol], bool]) -> int:
    """Distinct function start addresses in a section (aliases of one body count once, padding
    symbols in front of a function not at all)."""
    return len({obj.symbols[i].value for i in obj.symbols_in.get(shndx, [])
                if obj.symbols[i].type == STT_FUNC and not is_prefix(obj.symbols[i])})


def child_test(rs: Ruleset) -> Callable[[Symbol], bool]:
    """Is a symbol a compiler-split part (.cold, .part) of another function?"""
    return lambda sym: parent_name(rs, sym.name) is not None


@record(frozen=False)
class Correlation:
    """The twins of the pair: symbols and sections, children's parents, and how each was paired."""

    sym_twin: dict[int, int] = field(default_factory=dict)      # patched sym -> orig sym
    sym_twin_rev: dict[int, int] = field(default_factory=dict)  # orig sym -> patched sym
    sec_twin: dict[int, int] = field(default_factory=dict)      # patched section -> orig section
    parent: dict[int, int] = field(default_factory=dict)        # patched child sym -> patched parent sym
    orig_parent: dict[int, int] = field(default_factory=dict)   # orig child sym -> orig parent sym
    how: dict[int, str] = field(default_factory=dict)           # patched sym -> how it was paired

    def name_of(self, orig: ElfObject, patched: ElfObject, index: int) -> str:
        """The name a patched symbol goes by in the output: its original twin's, else its own."""
        twin = self.sym_twin.get(index)
        return orig.symbols[twin].name if twin is not None else patched.symbols[index].name

    def pair(self, patched: int, orig: int, how: str = "same name") -> None:
        self.sym_twin[patched] = orig
        self.sym_twin_rev[orig] = patched
        self.how[patched] = how


def _key(rs: Ruleset, obj: ElfObject, sym: Symbol, files: dict[str, str] | None = None) -> tuple[str, int, str]:
    scope = obj.file_of.get(sym.index, "")
    if files is not None:
        scope = files.get(scope, scope)
    return (rs.normalize_name(sym.name), sym.type, scope)


def file_scopes(orig: ElfObject, patched: ElfObject) -> dict[str, str]:
    """Patched FILE name -> original FILE name: by name, else by position (a renamed source)."""
    names_o = [s.name for s in orig.symbols if s.type == STT_FILE]
    names_p = [s.name for s in patched.symbols if s.type == STT_FILE]
    mapping = {n: n for n in names_p if n in names_o}
    if len(names_o) == len(names_p):
        for o, p in zip(names_o, names_p, strict=True):
            mapping.setdefault(p, o)
    return mapping


def _candidates(obj: ElfObject, roles: Roles) -> list[Symbol]:
    out = []
    for sym in obj.symbols:
        if sym.index == 0 or sym.type in (STT_FILE, STT_SECTION):
            continue
        if sym.index in roles.fresh or sym.index in roles.anonymous:
            continue
        if sym.is_defined and not roles.is_plain(sym.shndx) and sym.shndx not in roles.carried:
            continue
        out.append(sym)
    return out


def _fingerprint(obj: ElfObject, sym: Symbol) -> tuple[int, int]:
    """Size and a hash of the bytes (RELA objects keep relocated fields zero, so clones with the
    same body look alike whatever their counters)."""
    if not sym.is_defined:
        return (sym.size, 0)
    sec = obj.sections[sym.shndx]
    return (sym.size, hash(sec.data[sym.value: sym.value + sym.size]))


def _pair_groups(corr: Correlation, orig: ElfObject, patched: ElfObject, group_o: list[Symbol],
                 group_p: list[Symbol]) -> None:
    """Pair candidates sharing a correlation key: alone → at once; several → identical bodies
    first (a renumbered clone), then in symbol-table order (objtool's funnel does the same)."""
    if len(group_o) == 1 and len(group_p) == 1:
        corr.pair(group_p[0].index, group_o[0].index, "the only symbol with this name once counters are removed")
        return
    prints_o: dict[tuple[int, int], list[Symbol]] = defaultdict(list)
    for o in group_o:
        prints_o[_fingerprint(orig, o)].append(o)
    prints_p: dict[tuple[int, int], list[Symbol]] = defaultdict(list)
    for p in group_p:
        prints_p[_fingerprint(patched, p)].append(p)
    paired: set[int] = set()
    for fp, ps in prints_p.items():
        os_ = prints_o.get(fp, [])
        if len(ps) == 1 and len(os_) == 1:
            corr.pair(ps[0].index, os_[0].index, "same name without counters and an identical body")
            paired.update((ps[0].index, os_[0].index))
    rest_o = [o for o in group_o if o.index not in paired]
    rest_p = [p for p in group_p if p.index not in paired]
    for p, o in zip(rest_p, rest_o, strict=False):
        corr.pair(p.index, o.index, "same name without counters, paired in symbol-table order")


def correlate(orig: ElfObject, patched: ElfObject, roles_o: Roles, roles_p: Roles, rs: Ruleset) -> Correlation:
    corr = Correlation()
    groups_o: dict[tuple[str, int, str], list[Symbol]] = defaultdict(list)
    groups_p: dict[tuple[str, int, str], list[Symbol]] = defaultdict(list)
    statics_o = [s for s in _candidates(orig, roles_o) if s.index in roles_o.static_local]
    statics_p = [s for s in _candidates(patched, roles_p) if s.index in roles_p.static_local]
    for s in _candidates(orig, roles_o):
        if s.index not in roles_o.static_local:
            groups_o[_key(rs, orig, s)].append(s)
    files = file_scopes(orig, patched)
    for s in _candidates(patched, roles_p):
        if s.index not in roles_p.static_local:
            groups_p[_key(rs, patched, s, files)].append(s)
    for key, members in groups_p.items():
        if key in groups_o:
            _pair_groups(corr, orig, patched, groups_o[key], members)

    _correlate_statics(orig, patched, statics_o, statics_p, corr, rs)
    _correlate_sections(orig, patched, corr, rs)
    _link_children(patched, corr.parent, rs)
    _link_children(orig, corr.orig_parent, rs)
    return corr


def _static_refs(obj: ElfObject, func: Symbol, statics: set[int]) -> list[int]:
    """Static locals a function references, in first-reference order (its section's relocations)."""
    if not func.is_defined:
        return []
    seen: list[int] = []
    targets = obj.targets.get(func.shndx, [])
    sec = obj.sections[func.shndx]
    lo, hi = func.value, func.value + max(func.size, 1)
    for r, t in zip(sec.relocs, targets, strict=True):
        if lo <= r.offset < hi and t.sym in statics and t.sym not in seen:
            seen.append(t.sym)
    return seen


def _correlate_statics(orig: ElfObject, patched: ElfObject, statics_o: list[Symbol], statics_p: list[Symbol],
                       corr: Correlation, rs: Ruleset) -> None:
    if not statics_o or not statics_p:
        return
    set_o = {s.index for s in statics_o}
    set_p = {s.index for s in statics_p}
    # who references each static: scan relocations once per object (linear)
    referrers_p = _referrers(patched, set_p)
    referrers_o = _referrers(orig, set_o)
    funcs_p = sorted({f for fs in referrers_p.values() for f in fs})
    funcs_o = {f for fs in referrers_o.values() for f in fs}
    for fp in funcs_p:
        fo = corr.sym_twin.get(fp)
        if fo is None or fo not in funcs_o:
            continue
        refs_p = _static_refs(patched, patched.symbols[fp], set_p)
        refs_o = _static_refs(orig, orig.symbols[fo], set_o)
        by_name_o: dict[str, list[int]] = defaultdict(list)
        for i in refs_o:
            by_name_o[rs.normalize_name(orig.symbols[i].name)].append(i)
        by_name_p: dict[str, list[int]] = defaultdict(list)
        for i in refs_p:
            by_name_p[rs.normalize_name(patched.symbols[i].name)].append(i)
        for name, ps in by_name_p.items():
            for p, o in zip(ps, by_name_o.get(name, []), strict=False):
                if p in corr.sym_twin or o in corr.sym_twin_rev:
                    continue
                if patched.symbols[p].type != orig.symbols[o].type:
                    continue
                corr.pair(p, o, f"static local referenced alike by {patched.symbols[fp].name}")
    # statics no correlated function reaches: by name, only when unambiguous
    left_o: dict[str, list[Symbol]] = defaultdict(list)
    for s in statics_o:
        if s.index not in corr.sym_twin_rev:
            left_o[rs.normalize_name(s.name)].append(s)
    left_p: dict[str, list[Symbol]] = defaultdict(list)
    for s in statics_p:
        if s.index not in corr.sym_twin:
            left_p[rs.normalize_name(s.name)].append(s)
    for name, ps_left in left_p.items():
        os_left = left_o.get(name, [])
        if len(ps_left) == 1 and len(os_left) == 1:
            corr.pair(ps_left[0].index, os_left[0].index, "the only static local with this name")


def _referrers(obj: ElfObject, statics: set[int]) -> dict[int, set[int]]:
    """static symbol -> functions whose code references it."""
    out: dict[int, set[int]] = defaultdict(set)
    for shndx, targets in obj.targets.items():
        funcs = [obj.symbols[i] for i in obj.symbols_in.get(shndx, []) if obj.symbols[i].type == STT_FUNC]
        if not funcs:
            continue
        sec = obj.sections[shndx]
        for r, t in zip(sec.relocs, targets, strict=True):
            if t.sym in statics:
                for f in funcs:
                    if f.value <= r.offset < f.value + max(f.size, 1):
                        out[t.sym].add(f.index)
    return out


def _correlate_sections(orig: ElfObject, patched: ElfObject, corr: Correlation, rs: Ruleset) -> None:
    for p, o in corr.sym_twin.items():
        sp, so = patched.symbols[p], orig.symbols[o]
        if sp.is_defined and so.is_defined and sp.shndx not in corr.sec_twin:
            corr.sec_twin[sp.shndx] = so.shndx
    taken = set(corr.sec_twin.values())
    by_name_o: dict[str, list[int]] = defaultdict(list)
    for sec in orig.sections:
        if sec.index and sec.index not in taken:
            by_name_o[rs.normalize_name(sec.name)].append(sec.index)
    exact_o = {orig.sections[i].name: i for ids in by_name_o.values() for i in ids}
    for sec in patched.sections:
        if not sec.index or sec.index in corr.sec_twin:
            continue
        exact = exact_o.get(sec.name)
        if exact is not None and exact not in taken:
            corr.sec_twin[sec.index] = exact
            taken.add(exact)
            continue
        cands = [i for i in by_name_o.get(rs.normalize_name(sec.name), []) if i not in taken]
        if len(cands) == 1:
            corr.sec_twin[sec.index] = cands[0]
            taken.add(cands[0])


def _link_children(obj: ElfObject, out: dict[int, int], rs: Ruleset) -> None:
    funcs: dict[tuple[str, str], int] = {}
    for sym in obj.symbols:
        if sym.type == STT_FUNC and sym.is_defined:
            funcs.setdefault((sym.name, obj.file_of.get(sym.index, "")), sym.index)
    for sym in obj.symbols:
        if sym.type != STT_FUNC or not sym.is_defined:
            continue
        parent = parent_name(rs, sym.name)
        while parent is not None:
            found = funcs.get((parent, obj.file_of.get(sym.index, "")))
            if found is not None:
                out[sym.index] = found
                break
            parent = parent_name(rs, parent)
