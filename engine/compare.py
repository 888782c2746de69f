"""Stage 3 — compare: decide, per patched function and data object, what changed.

In: both objects, their `Roles`, the `Correlation`, the `Ruleset`. Out: a
`Comparison` — status per patched symbol (`same`, `changed`, `new`), the
original symbols that disappeared, a one-line reason per change, and which
functions only differed by `__LINE__` noise.

Two symbols are the same when their sizes match, their bytes match outside
relocated fields (field widths come from the relocation rules), and their
relocations match one by one: offset, type, correlated target, addend; string
literals compare by content, merged constants by value. A byte difference is
forgiven when every differing byte is the immediate of a rule-named load
followed by a call to a rule-named sink (`__LINE__` passed to WARN and friends).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from .classify import Roles, normalize_name
from .correlate import Correlation
from .errors import InputError
from .model import (
    SHF_MERGE,
    SHT_NOBITS,
    STT_FUNC,
    STT_OBJECT,
    STT_SECTION,
    ElfObject,
    Reloc,
    Section,
    Symbol,
    Target,
)
from .ruleset import LineMacro, Ruleset

SAME, CHANGED, NEW = "same", "changed", "new"


@dataclass
class Comparison:
    status: dict[int, str] = field(default_factory=dict)   # patched sym -> SAME/CHANGED/NEW
    reason: dict[int, str] = field(default_factory=dict)   # patched sym -> first difference
    removed: list[int] = field(default_factory=list)       # orig syms with no twin
    line_noise: set[int] = field(default_factory=set)      # patched syms forgiven as __LINE__ noise
    aliases: dict[int, int] = field(default_factory=dict)  # patched alias function -> the one it shares
    ftrace_o: set[int] = field(default_factory=set)
    ftrace_p: set[int] = field(default_factory=set)


class RelocIndex:
    """Relocations of each section sorted by offset, for range queries."""

    def __init__(self, obj: ElfObject) -> None:
        self.obj = obj
        self._cache: dict[int, tuple[list[int], list[tuple[Reloc, Target]]]] = {}

    def in_range(self, shndx: int, lo: int, hi: int) -> list[tuple[Reloc, Target]]:
        entry = self._cache.get(shndx)
        if entry is None:
            sec = self.obj.sections[shndx]
            pairs = sorted(zip(sec.relocs, self.obj.targets.get(shndx, []), strict=True),
                           key=lambda rt: rt[0].offset)
            entry = ([r.offset for r, _ in pairs], pairs)
            self._cache[shndx] = entry
        offsets, pairs = entry
        return pairs[bisect.bisect_left(offsets, lo): bisect.bisect_left(offsets, hi)]

    def at(self, shndx: int, offset: int) -> tuple[Reloc, Target] | None:
        found = self.in_range(shndx, offset, offset + 1)
        return found[0] if found else None


def cstring(sec: Section, offset: int) -> bytes:
    """The NUL-terminated string at `offset` of a string section."""
    if offset < 0 or offset > len(sec.data):
        return b"\0<out of range %d>" % offset
    end = sec.data.find(b"\0", offset)
    return sec.data[offset: end if end >= 0 else len(sec.data)]


@dataclass
class _Ctx:
    orig: ElfObject
    patched: ElfObject
    corr: Correlation
    rs: Ruleset
    rel_o: RelocIndex
    rel_p: RelocIndex
    roles_o: Roles
    roles_p: Roles


def _bias(ctx: _Ctx, rtype: int, in_text: bool) -> int:
    rt = ctx.rs.reloc_types.get(rtype)
    return rt.text_bias if (rt is not None and in_text) else 0


def _field_mask(ctx: _Ctx, obj: ElfObject, sec: Section, r: Reloc) -> tuple[int, bytes]:
    """Where the relocated field starts (relative to r_offset) and a byte mask of the bits it writes."""
    rt = ctx.rs.reloc_types.get(r.type)
    if rt is None:
        raise InputError(f"{obj.path}: relocation type {r.type} in {sec.rela_name or sec.name} is unknown to "
                         f"the {ctx.rs.arch.name} rules (add it to rules/{ctx.rs.arch.name}/relocations.yaml)")
    if rt.bits is None:
        return rt.field_offset, b"\xff" * rt.width
    return rt.field_offset, rt.bits.to_bytes(rt.width, "little" if obj.little_endian else "big")


def _location(obj: ElfObject, anonymous: set[int], t: Target, bias: int) -> tuple[Section, int] | None:
    """Where a reference lands when it names a place rather than a symbol: a section symbol, a
    local label (`.LC5`), or anything inside a string or constant pool."""
    sym = obj.symbols[t.sym]
    if not sym.is_defined:
        return None
    sec = obj.sections[sym.shndx]
    if sym.type == STT_SECTION:
        return sec, t.addend + bias
    if sym.index in anonymous or sec.is_strings or (sec.flags & SHF_MERGE and sec.entsize):
        return sec, sym.value + t.addend + bias
    return None


def _same_entry(ctx: _Ctx, loc_p: tuple[Section, int], loc_o: tuple[Section, int]) -> bool:
    """Compare two pointer-table entries (a `via` relocation's table, such as ppc64's .toc) by what
    they point at, or, with no relocation, by value: a pointer of the object's ELF class."""
    (secp, offp), (seco, offo) = loc_p, loc_o
    entry_p, entry_o = ctx.rel_p.at(secp.index, offp), ctx.rel_o.at(seco.index, offo)
    if entry_p is None or entry_o is None:
        width = ctx.patched.elfclass // 8
        return entry_p is None and entry_o is None and \
            secp.data[offp: offp + width] == seco.data[offo: offo + width]
    return _same_target(ctx, False, entry_p[0], entry_p[1], entry_o[0], entry_o[1])


def _same_place(ctx: _Ctx, loc_p: tuple[Section, int], loc_o: tuple[Section, int]) -> bool:
    (secp, offp), (seco, offo) = loc_p, loc_o
    if secp.is_strings and seco.is_strings:
        return cstring(secp, offp) == cstring(seco, offo)
    if secp.flags & SHF_MERGE and secp.entsize and seco.entsize == secp.entsize:
        return secp.data[offp: offp + secp.entsize] == seco.data[offo: offo + seco.entsize]
    if ctx.corr.sec_twin.get(secp.index) != seco.index:
        return False
    return offp == offo or seco.index in ctx.roles_o.offset_free


def _same_target(ctx: _Ctx, in_text: bool, rp: Reloc, tp: Target, ro: Reloc, to: Target) -> bool:
    if rp.type != ro.type:
        return False
    bias = _bias(ctx, rp.type, in_text)
    loc_p = _location(ctx.patched, ctx.roles_p.anonymous, tp, bias)
    loc_o = _location(ctx.orig, ctx.roles_o.anonymous, to, bias)
    rt = ctx.rs.reloc_types.get(rp.type)
    if rt is not None and rt.via and loc_p is not None and loc_o is not None:
        return _same_entry(ctx, loc_p, loc_o)
    if loc_p is not None or loc_o is not None:
        return loc_p is not None and loc_o is not None and _same_place(ctx, loc_p, loc_o)
    sp, so = ctx.patched.symbols[tp.sym], ctx.orig.symbols[to.sym]
    if tp.addend != to.addend:
        return False
    twin = ctx.corr.sym_twin.get(sp.index)
    if twin is not None:
        return twin == so.index
    if so.index in ctx.corr.sym_twin_rev:
        return False
    return sp.type == so.type and normalize_name(ctx.rs, sp.name) == normalize_name(ctx.rs, so.name)


def _diff_symbol(ctx: _Ctx, sp: Symbol, so: Symbol) -> tuple[str | None, list[int]]:
    """Return (reason, differing byte offsets) — reason None means identical."""
    if sp.type != so.type:
        return f"type {so.type_name} -> {sp.type_name}", []
    if sp.size != so.size:
        return f"size {so.size} -> {sp.size}", []
    secp, seco = ctx.patched.sections[sp.shndx], ctx.orig.sections[so.shndx]
    if (secp.type == SHT_NOBITS) != (seco.type == SHT_NOBITS):
        return "moved between initialised and zeroed data", []
    relp = ctx.rel_p.in_range(sp.shndx, sp.value, sp.value + sp.size)
    relo = ctx.rel_o.in_range(so.shndx, so.value, so.value + so.size)
    if len(relp) != len(relo):
        return f"{len(relo)} -> {len(relp)} relocations", []
    for (rp, tp), (ro, to) in zip(relp, relo, strict=True):
        if rp.offset - sp.value != ro.offset - so.value:
            return f"relocation moved at +{ro.offset - so.value:#x}", []
        if not _same_target(ctx, secp.is_text, rp, tp, ro, to):
            return (f"relocation at +{rp.offset - sp.value:#x} now targets "
                    f"{ctx.patched.symbols[tp.sym].name}{tp.addend:+#x} "
                    f"(was {ctx.orig.symbols[to.sym].name}{to.addend:+#x})"), []
    if secp.type == SHT_NOBITS:
        return None, []
    bp = bytearray(secp.data[sp.value: sp.value + sp.size])
    bo = bytearray(seco.data[so.value: so.value + so.size])
    for rp, _ in relp:
        off, mask = _field_mask(ctx, ctx.patched, secp, rp)
        start = rp.offset - sp.value + off
        for i, m in enumerate(mask):
            if 0 <= start + i < len(bp):
                bp[start + i] &= ~m & 0xFF
                bo[start + i] &= ~m & 0xFF
    if bp == bo:
        return None, []
    diffs = [i for i in range(len(bp)) if bp[i] != bo[i]]
    return f"code or data differs at +{diffs[0]:#x}", diffs


def matches(pattern: tuple[bytes, bytes], data: bytes | bytearray, at: int) -> bool:
    value, mask = pattern
    if at < 0 or at + len(value) > len(data):
        return False
    return all((data[at + i] & mask[i]) == value[i] for i in range(len(value)))


def _only_line_noise(ctx: _Ctx, sp: Symbol, diffs: list[int], macros: Iterable[LineMacro]) -> bool:
    secp = ctx.patched.sections[sp.shndx]
    seco_sym = ctx.orig.symbols[ctx.corr.sym_twin[sp.index]]
    seco = ctx.orig.sections[seco_sym.shndx]
    code_p = secp.data[sp.value: sp.value + sp.size]
    code_o = seco.data[seco_sym.value: seco_sym.value + seco_sym.size]
    relocs = ctx.rel_p.in_range(sp.shndx, sp.value, sp.value + sp.size)
    covered_until = -1
    for d in diffs:
        if d < covered_until:
            continue
        hit = None
        for macro in macros:
            for pattern in macro.patterns:
                length = len(pattern[0])
                for at in range(d - length + 1, d + 1):
                    # the differing bits must all be immediate bits (outside the pattern's mask)
                    if at % macro.insn_align or (code_p[d] ^ code_o[d]) & pattern[1][d - at]:
                        continue
                    if matches(pattern, code_p, at) and matches(pattern, code_o, at) \
                            and _sink_follows(ctx, macro, relocs, sp.value + at + length):
                        hit = at + length
                        break
                if hit:
                    break
            if hit:
                break
        if hit is None:
            return False
        covered_until = hit
    return True


def _sink_follows(ctx: _Ctx, macro: LineMacro, relocs: list[tuple[Reloc, Target]], after: int) -> bool:
    """Is the next relocation after `after` (strings and skip-listed targets passed over) a sink?"""
    for r, t in relocs:
        if r.offset < after:
            continue
        rt = ctx.rs.reloc_types.get(r.type)
        if rt is not None and rt.via:  # look through the pointer-table entry
            sym = ctx.patched.symbols[t.sym]
            entry = ctx.rel_p.at(sym.shndx, sym.value + t.addend) if sym.is_defined else None
            if entry is None:
                continue
            t = entry[1]
        sym = ctx.patched.symbols[t.sym]
        if sym.is_defined and ctx.patched.sections[sym.shndx].is_strings:
            continue
        name = ctx.orig.symbols[ctx.corr.sym_twin[sym.index]].name if sym.index in ctx.corr.sym_twin \
            else sym.name
        if macro.skip is not None and macro.skip.search(name):
            continue
        return macro.sinks.search(name) is not None
    return False


def ftrace_sites(obj: ElfObject, rs: Ruleset, rel: RelocIndex) -> set[int]:
    """Functions with an ftrace call site: a call to a rule-named symbol near their start,
    or an entry in a rule-named record section."""
    calls = set(rs.arch.ftrace.calls)
    records = set(rs.arch.ftrace.records)
    out: set[int] = set()
    within = rs.arch.ftrace.within
    for sec in obj.sections:
        if sec.name not in records:
            continue
        for t in obj.targets.get(sec.index, []):
            site = obj.symbols[t.sym]
            if site.type != STT_SECTION:
                out.add(t.sym)
                continue
            # a site before the function's symbol (patchable-entry NOPs ahead of the entry point)
            # belongs to the function that starts within `within` bytes after it
            for index in obj.symbols_in.get(site.shndx, []):
                func = obj.symbols[index]
                if func.type == STT_FUNC and t.addend <= func.value <= t.addend + within:
                    out.add(index)
    # aliases (SYSCALL_DEFINE's __se_sys_x and sys_x share one body) share the call site
    for index in list(out):
        site = obj.symbols[index]
        if site.is_defined:
            out.update(i for i in obj.symbols_in.get(site.shndx, [])
                       if obj.symbols[i].value == site.value and obj.symbols[i].type == STT_FUNC)
    if not calls:
        return out
    for sym in obj.symbols:
        if sym.type != STT_FUNC or not sym.is_defined or sym.index in out:
            continue
        for _r, t in rel.in_range(sym.shndx, sym.value, sym.value + rs.arch.ftrace.within):
            if obj.symbols[t.sym].name in calls:
                out.add(sym.index)
                break
    return out


def function_aliases(obj: ElfObject) -> dict[int, int]:
    """Functions that share one body (same section and address) -> the one that stands for it:
    the symbol the section is named after (-ffunction-sections), else the first one."""
    out: dict[int, int] = {}
    for shndx, members in obj.symbols_in.items():
        by_value: dict[int, list[int]] = {}
        for i in members:
            if obj.symbols[i].type == STT_FUNC:
                by_value.setdefault(obj.symbols[i].value, []).append(i)
        sec_name = obj.sections[shndx].name
        for group in by_value.values():
            if len(group) < 2:
                continue
            primary = next((i for i in group if sec_name.endswith("." + obj.symbols[i].name)), group[0])
            out.update((i, primary) for i in group if i != primary)
    return out


def compare(orig: ElfObject, patched: ElfObject, roles_o: Roles, roles_p: Roles, corr: Correlation,
            rs: Ruleset) -> Comparison:
    ctx = _Ctx(orig, patched, corr, rs, RelocIndex(orig), RelocIndex(patched), roles_o, roles_p)
    result = Comparison()
    result.ftrace_o = ftrace_sites(orig, rs, ctx.rel_o)
    result.ftrace_p = ftrace_sites(patched, rs, ctx.rel_p)
    for sp in patched.symbols:
        if sp.type not in (STT_FUNC, STT_OBJECT) or not sp.is_defined:
            continue
        if not roles_p.is_plain(sp.shndx) or sp.index in roles_p.anonymous:
            continue
        twin = corr.sym_twin.get(sp.index)
        if twin is None:
            result.status[sp.index] = NEW
            result.reason[sp.index] = "fresh copy" if sp.index in roles_p.fresh else "new"
            continue
        so = orig.symbols[twin]
        if not so.is_defined:
            result.status[sp.index] = NEW
            result.reason[sp.index] = "was only referenced before"
            continue
        reason, diffs = _diff_symbol(ctx, sp, so)
        if reason is not None and diffs and sp.type == STT_FUNC and rs.line_macros \
                and _only_line_noise(ctx, sp, diffs, rs.line_macros):
            result.line_noise.add(sp.index)
            reason = None
        result.status[sp.index] = SAME if reason is None else CHANGED
        if reason is not None:
            result.reason[sp.index] = reason
    for so in orig.symbols:
        if so.type in (STT_FUNC, STT_OBJECT) and so.is_defined and roles_o.is_plain(so.shndx) \
                and so.index not in corr.sym_twin_rev and so.index not in roles_o.fresh \
                and so.index not in roles_o.anonymous:
            result.removed.append(so.index)
    result.aliases = function_aliases(patched)
    for alias in result.aliases:
        if alias in result.status:
            result.status[alias] = SAME  # patched through the function it shares a body with
    # a changed child that cannot be traced on its own drags its parent in
    for child, parent in corr.parent.items():
        if result.status.get(child) in (CHANGED, NEW) and child not in result.ftrace_p \
                and result.status.get(parent) == SAME:
            result.status[parent] = CHANGED
            result.reason[parent] = f"its part {patched.symbols[child].name} changed"
    return result
