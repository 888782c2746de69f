"""The differ's compare stage (the stages: pipeline.py): decide, per patched function and data object, what changed.

In: both objects, their `Roles`, the `Correlation`, the `Ruleset`, their line
tables (`linetables.py`, when compiled with -g) and `--struct-size` overrides. Out:
a `Comparison` — status per patched symbol (`same`, `changed`, `new`), the
original symbols that disappeared, a one-line reason per change, the functions
that differ by line numbers only (with the basis and each differing value),
and the special-section layouts (`entrytables.py`) the include stage plans with.

Two symbols are the same when their sizes match, their bytes match outside
relocated fields (field widths come from the relocation rules), and their
relocations match one by one: offset, type, correlated target, addend; string
literals compare by content, merged constants by value. A function is also
changed when its special-section entries differ (an alternative's feature or
replacement, an exception-table type, a static key), even with the same code.

A function whose only differences are line numbers (`__LINE__` in WARN and friends, in a string
literal, in a bug-table entry) is unchanged; linenoise.py decides, with the line tables when both
objects have them, else by the rules' heuristics (and says so).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Mapping
from dataclasses import field
from enum import StrEnum

from ..core.errors import InputError
from ..core.records import record
from ..elf.dwarf import debug_info
from ..elf.linetables import LineTable
from ..elf.model import (
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
from ..ruleset.compiled import Branch, LayoutRule, MarkerEffect, Ruleset
from .classify import Roles
from .correlate import Correlation
from .entrytables import (
    CodeAt,
    Describe,
    EntrySignature,
    EntryTables,
    FieldValue,
    LineNumber,
    OwnOffset,
    StringAt,
    SymbolRef,
    entry_tables,
    shown,
)
from .ftrace import ftrace_sites
from .linenoise import NoiseBasis, entry_line_moves, line_fields, line_noise
from .pair import Pair, SymbolDiff


class Status(StrEnum):
    """What became of a symbol of the patched object (rule expressions compare it as text)."""

    SAME = "same"
    CHANGED = "changed"
    NEW = "new"


SAME, CHANGED, NEW = Status.SAME, Status.CHANGED, Status.NEW


@record(frozen=False)
class Comparison:
    """What compare found: each symbol's status and why, and the facts later stages reuse."""

    status: dict[int, Status] = field(default_factory=dict)   # patched sym -> its status
    reason: dict[int, str] = field(default_factory=dict)   # patched sym -> first difference
    removed: list[int] = field(default_factory=list)       # orig syms with no twin
    line_noise: dict[int, NoiseBasis] = field(default_factory=dict)  # patched syms with only line changes
    line_evidence: dict[int, list[str]] = field(default_factory=dict)  # each differing line value, in words
    layouts: dict[int, tuple[LayoutRule, str]] = field(default_factory=dict)  # patched special sections
    aliases: dict[int, int] = field(default_factory=dict)  # patched alias function -> the one it shares
    ftrace_p: set[int] = field(default_factory=set)


def _field_mask(ctx: Pair, obj: ElfObject, sec: Section, r: Reloc) -> tuple[int, bytes]:
    """Where the relocated field starts (relative to r_offset) and a byte mask of the bits it writes."""
    rt = ctx.rs.reloc_types.get(r.type)
    if rt is None:
        raise InputError(f"{obj.path}: relocation type {r.type} in {sec.rela_name or sec.name} is unknown to "
                         f"the {ctx.rs.arch.name} rules (add it to rules/{ctx.rs.arch.name}/relocations.yaml)")
    if rt.bits is None:
        return rt.field_offset, b"\xff" * rt.width
    return rt.field_offset, rt.bits.to_bytes(rt.width, "little" if obj.little_endian else "big")


def _names_a_place(obj: ElfObject, anonymous: set[int], sym: Symbol) -> bool:
    """Does a reference to `sym` name a place (a section symbol, a local label, anything inside a
    string or constant pool) rather than the symbol itself?"""
    if not sym.is_defined:
        return False
    sec = obj.sections[sym.shndx]
    return (sym.type == STT_SECTION or sym.index in anonymous or sec.is_strings
            or bool(sec.flags & SHF_MERGE and sec.entsize))


def _location(obj: ElfObject, anonymous: set[int], t: Target, bias: int) -> tuple[Section, int] | None:
    """Where a reference lands when it names a place rather than a symbol: a section symbol, a
    local label (`.LC5`), or anything inside a string or constant pool."""
    sym = obj.symbols[t.sym]
    if not _names_a_place(obj, anonymous, sym):
        return None
    base = 0 if sym.type == STT_SECTION else sym.value
    return obj.sections[sym.shndx], base + t.addend + bias


def _same_entry(ctx: Pair, loc_p: tuple[Section, int], loc_o: tuple[Section, int]) -> bool:
    """Compare two pointer-table entries (a `via` relocation's table of pointers) by what
    they point at, or, with no relocation, by value: a pointer of the object's ELF class."""
    (secp, offp), (seco, offo) = loc_p, loc_o
    entry_p, entry_o = ctx.rel_p.at(secp.index, offp), ctx.rel_o.at(seco.index, offo)
    if entry_p is None or entry_o is None:
        width = ctx.patched.elfclass // 8
        return entry_p is None and entry_o is None and \
            secp.data[offp: offp + width] == seco.data[offo: offo + width]
    return _same_target(ctx, False, entry_p[0], entry_p[1], entry_o[0], entry_o[1])


def _same_place(ctx: Pair, loc_p: tuple[Section, int], loc_o: tuple[Section, int]) -> bool:
    (secp, offp), (seco, offo) = loc_p, loc_o
    if secp.is_strings and seco.is_strings:
        return secp.string_at(offp) == seco.string_at(offo)
    if secp.flags & SHF_MERGE and secp.entsize and seco.entsize == secp.entsize:
        return secp.data[offp: offp + secp.entsize] == seco.data[offo: offo + seco.entsize]
    if ctx.corr.sec_twin.get(secp.index) != seco.index:
        return False
    return offp == offo or seco.index in ctx.roles_o.offset_free


def _in_table(table: str | None, loc_p: tuple[Section, int], loc_o: tuple[Section, int]) -> bool:
    """Do both places lie in the pointer table a `via` relocation reaches through?"""
    return table is not None and loc_p[0].name == table and loc_o[0].name == table


_Place = tuple[Section, int]


def _places(ctx: Pair, in_text: bool, rtype: int, tp: Target, to: Target) -> tuple[_Place | None, _Place | None]:
    """Where two same-type relocations land when they name places rather than symbols."""
    if tp.sym not in ctx.places_p and to.sym not in ctx.places_o:
        return None, None
    bias = ctx.rs.place_bias(rtype, in_text)[0]
    return (_location(ctx.patched, ctx.roles_p.anonymous, tp, bias),
            _location(ctx.orig, ctx.roles_o.anonymous, to, bias))


def _same_target(ctx: Pair, in_text: bool, rp: Reloc, tp: Target, ro: Reloc, to: Target) -> bool:
    if rp.type != ro.type:
        return False
    if tp.sym in ctx.places_p or to.sym in ctx.places_o:
        loc_p, loc_o = _places(ctx, in_text, rp.type, tp, to)
        if loc_p is None or loc_o is None:
            return False  # one names a place, the other a symbol
        rt = ctx.rs.reloc_types.get(rp.type)
        if rt is not None and _in_table(rt.via, loc_p, loc_o):
            return _same_entry(ctx, loc_p, loc_o)
        return _same_place(ctx, loc_p, loc_o)
    # both name symbols (most references)
    if tp.addend != to.addend:
        return False
    twin = ctx.corr.sym_twin.get(tp.sym)
    if twin is not None:
        return twin == to.sym
    if to.sym in ctx.corr.sym_twin_rev:
        return False
    sp, so = ctx.patched.symbols[tp.sym], ctx.orig.symbols[to.sym]
    return sp.type == so.type and ctx.rs.normalize_name(sp.name) == ctx.rs.normalize_name(so.name)


def _strings_reached(ctx: Pair, in_text: bool, rp: Reloc, tp: Target, ro: Reloc,
                     to: Target) -> tuple[bytes, bytes] | None:
    """The two string literals a pair of same-type relocations reach, if both reach one."""
    if rp.type != ro.type:
        return None
    loc_p, loc_o = _places(ctx, in_text, rp.type, tp, to)
    if loc_p is None or loc_o is None:
        return None
    rt = ctx.rs.reloc_types.get(rp.type)
    if rt is not None and _in_table(rt.via, loc_p, loc_o):  # the entries' own targets
        entry_p, entry_o = ctx.rel_p.at(loc_p[0].index, loc_p[1]), ctx.rel_o.at(loc_o[0].index, loc_o[1])
        if entry_p is None or entry_o is None:
            return None
        loc_p = _location(ctx.patched, ctx.roles_p.anonymous, entry_p[1], 0)
        loc_o = _location(ctx.orig, ctx.roles_o.anonymous, entry_o[1], 0)
        if loc_p is None or loc_o is None:
            return None
    if not (loc_p[0].is_strings and loc_o[0].is_strings):
        return None
    return loc_p[0].string_at(loc_p[1]), loc_o[0].string_at(loc_o[1])


def _diff_symbol(ctx: Pair, sp: Symbol, so: Symbol) -> SymbolDiff:
    if sp.type != so.type:
        return SymbolDiff(f"type {so.type_name} -> {sp.type_name}", final=True)
    if sp.size != so.size:
        return SymbolDiff(f"size {so.size} -> {sp.size}", final=True)
    secp, seco = ctx.patched.sections[sp.shndx], ctx.orig.sections[so.shndx]
    if (secp.type == SHT_NOBITS) != (seco.type == SHT_NOBITS):
        return SymbolDiff("moved between initialised and zeroed data", final=True)
    relp = ctx.rel_p.in_range(sp.shndx, sp.value, sp.value + sp.size)
    relo = ctx.rel_o.in_range(so.shndx, so.value, so.value + so.size)
    if len(relp) != len(relo):
        return SymbolDiff(f"{len(relo)} -> {len(relp)} relocations", final=True)
    diff = SymbolDiff()
    for (rp, tp), (ro, to) in zip(relp, relo, strict=True):
        if rp.offset - sp.value != ro.offset - so.value:
            return SymbolDiff(f"relocation moved at +{ro.offset - so.value:#x}", final=True)
        if _same_target(ctx, secp.is_text, rp, tp, ro, to):
            continue
        reason = (f"relocation at +{rp.offset - sp.value:#x} now targets "
                  f"{ctx.patched.symbols[tp.sym].name}{tp.addend:+#x} "
                  f"(was {ctx.orig.symbols[to.sym].name}{to.addend:+#x})")
        strings = _strings_reached(ctx, secp.is_text, rp, tp, ro, to)
        if strings is None:
            return SymbolDiff(reason, final=True)
        diff.reason = diff.reason or reason + f": string {strings[1]!r} -> {strings[0]!r}"
        diff.strings.append((rp.offset - sp.value, *strings))
    if secp.type == SHT_NOBITS:
        return diff
    raw_p, raw_o = secp.data[sp.value: sp.value + sp.size], seco.data[so.value: so.value + so.size]
    shared = secp.is_text and bool(ctx.rs.branches) and _section_moved(ctx, sp.shndx)
    if raw_p == raw_o:  # the same bytes, relocated fields and all: the same code, unless a branch
        # the assembler resolved now lands on another function, the section's functions having moved
        retargeted = _retargeted_branch(ctx, sp, so, raw_p) if shared else None
        return SymbolDiff(retargeted, final=True) if retargeted else diff
    bp, bo = bytearray(raw_p), bytearray(raw_o)
    for rp, _ in relp:
        off, mask = _field_mask(ctx, ctx.patched, secp, rp)
        start = rp.offset - sp.value + off
        for i, m in enumerate(mask):
            if 0 <= start + i < len(bp):
                bp[start + i] &= ~m & 0xFF
                bo[start + i] &= ~m & 0xFF
    if bp != bo and shared:
        _mask_branches(ctx, sp, so, raw_p, raw_o, bp, bo)
    if bp != bo:
        diff.byte_offsets = [i for i in range(len(bp)) if bp[i] != bo[i]]
        diff.reason = diff.reason or f"code or data differs at +{diff.byte_offsets[0]:#x}"
    return diff


def _section_moved(ctx: Pair, shndx: int) -> bool:
    """Is patched section `shndx` shared by several functions that moved relative to each other (or
    did one come or go)? Only there can the assembler's own branches between them change: differ in
    their displacement with the same target, or reach other places with the same bytes."""
    known = ctx.moved_sections.get(shndx)
    if known is not None:
        return known
    if sum(1 for i in ctx.patched.symbols_in.get(shndx, []) if ctx.patched.symbols[i].type == STT_FUNC) < 2:
        ctx.moved_sections[shndx] = False
        return False
    deltas: set[int | None] = set()
    twins, orig_shndx = 0, None
    for index in ctx.patched.symbols_in.get(shndx, []):
        sym = ctx.patched.symbols[index]
        if sym.type != STT_FUNC:
            continue
        twin = ctx.corr.sym_twin.get(index)
        if twin is None:
            deltas.add(None)
            continue
        twins += 1
        orig_shndx = ctx.orig.symbols[twin].shndx
        deltas.add(sym.value - ctx.orig.symbols[twin].value)
    orig_functions = 0 if orig_shndx is None else sum(
        1 for i in ctx.orig.symbols_in.get(orig_shndx, []) if ctx.orig.symbols[i].type == STT_FUNC)
    moved = len(deltas) > 1 or None in deltas or orig_functions != twins
    ctx.moved_sections[shndx] = moved
    return moved


def _retargeted_branch(ctx: Pair, sp: Symbol, so: Symbol, code: bytes) -> str | None:
    """A relocation-less branch of identical code that lands on the start of a function in one
    object and not on its twin in the other: the reason, else None."""
    little = ctx.patched.little_endian
    for br in ctx.rs.branches:
        for start in range(0, len(code) - len(br.template) + 1, br.align):
            at = br.target(code, start, little)
            if at is None or 0 <= at < max(sp.size, 1):
                continue  # not this branch, or a branch within the function
            fp = ctx.patched.function_at(sp.shndx, sp.value + at)
            fo = ctx.orig.function_at(so.shndx, so.value + at)
            lands = (fp is not None and fp.value == sp.value + at) or (fo is not None and fo.value == so.value + at)
            if not lands:
                continue  # an operand that only looks like a branch, reaching no function's start
            if not _may_be_call(ctx, so, start, len(br.template)):
                continue  # bytes inside other instructions: the compiler recorded no call there
            if fp is None or fo is None or ctx.corr.sym_twin.get(fp.index) != fo.index \
                    or sp.value + at - fp.value != so.value + at - fo.value:
                return (f"branch at +{start:#x} now reaches {fp.name if fp else 'no function'} "
                        f"(was {fo.name if fo else 'no function'})")
    return None


def _may_be_call(ctx: Pair, so: Symbol, start: int, length: int) -> bool:
    """Could the branch-like bytes at `start` of the original function be a call or tail call? A
    byte pattern matched anywhere in variable-length code may sit inside other instructions; where
    the compiler recorded the function's calls (DWARF call sites: each call's address or the address
    after it), only a pattern at one of them is a call. Without such records, every match counts."""
    if ctx.calls_o is None:
        info = debug_info(ctx.orig)
        ctx.calls_o = info.calls if info is not None else set()
    recorded = {at for shndx, at in ctx.calls_o if shndx == so.shndx and so.value <= at <= so.value + so.size}
    return not recorded or so.value + start in recorded or so.value + start + length in recorded


def _mask_branches(ctx: Pair, sp: Symbol, so: Symbol, raw_p: bytes, raw_o: bytes, bp: bytearray,
                   bo: bytearray) -> None:
    """Clear, in `bp` and `bo`, the displacement of each relocation-less branch (relocations.yaml
    `branches`) whose two versions reach twin functions at the same offset: code that moved within a
    shared section reaches the same place with another displacement. A differing byte no such
    branch explains ends the search (the function is changed anyway)."""
    for i in range(len(bp)):
        if bp[i] == bo[i]:
            continue
        explained = any(_same_branch_target(ctx, sp, so, raw_p, raw_o, bp, bo, br, start)
                        for br in ctx.rs.branches
                        for start in range(max(0, i - len(br.template) + 1), i + 1)
                        if br.template.field_mask("d")[i - start])
        if not explained or bp[i] != bo[i]:
            return


def _same_branch_target(ctx: Pair, sp: Symbol, so: Symbol, raw_p: bytes, raw_o: bytes, bp: bytearray,
                        bo: bytearray, br: Branch, start: int) -> bool:
    """Is there a `br` branch at `start` in both versions that reaches twin functions at one offset?
    If so, its displacement bits are cleared in `bp` and `bo`."""
    little = ctx.patched.little_endian
    at_p, at_o = br.target(raw_p, start, little), br.target(raw_o, start, little)
    if at_p is None or at_o is None:
        return False
    fp = ctx.patched.function_at(sp.shndx, sp.value + at_p)
    fo = ctx.orig.function_at(so.shndx, so.value + at_o)
    if fp is None or fo is None or ctx.corr.sym_twin.get(fp.index) != fo.index \
            or sp.value + at_p - fp.value != so.value + at_o - fo.value:
        return False
    for k, m in enumerate(br.template.field_mask("d")):
        bp[start + k] &= ~m & 0xFF
        bo[start + k] &= ~m & 0xFF
    return True


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


def _key_name(ctx: Pair, obj: ElfObject, index: int) -> str:
    """A symbol's name as both objects agree on it: the original's name for a pair of twins."""
    if obj is ctx.patched:
        twin = ctx.corr.sym_twin.get(index)
        if twin is not None:
            return ctx.orig.symbols[twin].name
    elif index in ctx.corr.sym_twin_rev:
        return obj.symbols[index].name
    return ctx.rs.normalize_name(obj.symbols[index].name)


def _describer(ctx: Pair, obj: ElfObject) -> Describe:
    """What a relocated field of a special-section entry reaches, in terms both objects share: the
    entry's own function (by offset), a string (by content), a place in anonymous code such as an
    alternative's replacement (by its bytes, up to the next place entries reach), or a symbol (by
    name and addend)."""
    rel = ctx.rel_p if obj is ctx.patched else ctx.rel_o
    boundaries: dict[tuple[int, int], list[int]] = {}

    def region(table: Section, shndx: int, offset: int) -> bytes:
        key = (table.index, shndx)
        if key not in boundaries:
            boundaries[key] = sorted({t.addend for r, t in rel.in_range(table.index, 0, table.size)
                                      if obj.symbols[t.sym].type == STT_SECTION and obj.symbols[t.sym].shndx == shndx})
        marks = boundaries[key]
        k = bisect.bisect_right(marks, offset)
        sec = obj.sections[shndx]
        end = marks[k] if k < len(marks) else len(sec.data)
        data = bytearray(sec.data[offset:end])
        for r, _t in rel.in_range(shndx, offset, end):
            start, mask = _field_mask(ctx, obj, sec, r)
            for i, m in enumerate(mask):
                if 0 <= r.offset - offset + start + i < len(data):
                    data[r.offset - offset + start + i] &= ~m & 0xFF
        return bytes(data)

    def describe(table: Section, t: Target, owner: int) -> FieldValue:
        if t.sym == owner:
            return OwnOffset(t.addend)
        sym = obj.symbols[t.sym]
        if sym.is_defined and obj.sections[sym.shndx].is_strings:
            return StringAt(obj.sections[sym.shndx].string_at(sym.value + t.addend))
        if sym.type == STT_SECTION and sym.is_defined:
            return CodeAt(obj.sections[sym.shndx].name, region(table, sym.shndx, t.addend))
        return SymbolRef(_key_name(ctx, obj, t.sym), t.addend)

    return describe


def _entries_differ(entries_p: list[EntrySignature],
                    entries_o: list[EntrySignature]) -> tuple[str | None, list[tuple[int, int]]]:
    """The first difference between two functions' special-section entries (None: the same), and
    the (original, patched) values of differing line-number fields."""
    if [e.section for e in entries_p] != [e.section for e in entries_o]:
        count_o, count_p = Counter(e.section for e in entries_o), Counter(e.section for e in entries_p)
        return f"its special-section entries differ: {dict(count_o)} -> {dict(count_p)}", []
    lines: list[tuple[int, int]] = []
    for ep, eo in zip(entries_p, entries_o, strict=True):
        if ep.at != eo.at:
            return f"its {ep.section} entry moved from +{eo.at:#x} to +{ep.at:#x}", []
        for (name, value_p), (_name, value_o) in zip(ep.fields, eo.fields, strict=True):
            if value_p == value_o:
                continue
            if isinstance(value_p, LineNumber) and isinstance(value_o, LineNumber):
                lines.append((value_o.line, value_p.line))
                continue
            return (f"its {ep.section} entry at +{ep.at:#x} differs in {name}: {shown(value_o)} -> "
                    f"{shown(value_p)}", [])
    return None, lines


def _compare_entries(ctx: Pair, result: Comparison, tables_o: EntryTables, tables_p: EntryTables) -> None:
    """A function whose code is the same but whose special-section entries differ (an alternative's
    CPU feature, an exception-table type, a jump label's key) is changed; entries that differ in
    line-number fields only are decided like any __LINE__ difference."""
    aliases_o = function_aliases(ctx.orig)
    by_o: dict[int, list[EntrySignature]] = {}
    for index, signatures in tables_o.by_function.items():
        by_o.setdefault(aliases_o.get(index, index), []).extend(signatures)
    by_p: dict[int, list[EntrySignature]] = {}
    for index, signatures in tables_p.by_function.items():
        by_p.setdefault(result.aliases.get(index, index), []).extend(signatures)
    for index, status in list(result.status.items()):
        sp = ctx.patched.symbols[index]
        if status != SAME or sp.type != STT_FUNC or index in result.aliases:
            continue
        so = ctx.orig.symbols[ctx.corr.sym_twin[index]]
        entries_p = sorted(by_p.get(index, []), key=lambda e: (e.section, e.at))
        entries_o = sorted(by_o.get(aliases_o.get(so.index, so.index), []), key=lambda e: (e.section, e.at))
        why, lines = _entries_differ(entries_p, entries_o)
        if why is None and lines:
            basis = line_fields(ctx, sp, so, lines)
            if basis is None:
                why = f"a line-number field of its special-section entries changed: {lines}"
            else:
                result.line_noise.setdefault(index, basis)
                result.line_evidence.setdefault(index, []).extend(
                    f"entry line {line_o} -> {line_p} ({basis.value})" for line_o, line_p in lines)
        if why is not None:
            result.status[index] = CHANGED
            result.reason[index] = why
            result.line_noise.pop(index, None)


def compare(orig: ElfObject, patched: ElfObject, roles_o: Roles, roles_p: Roles, corr: Correlation,
            rs: Ruleset, lines_o: LineTable | None = None, lines_p: LineTable | None = None,
            struct_sizes: Mapping[str, int] | None = None) -> Comparison:
    ctx = Pair(orig, patched, corr, rs, orig.relocs(), patched.relocs(), roles_o, roles_p,
               lines_o, lines_p)
    ctx.places_o = {s.index for s in orig.symbols if _names_a_place(orig, roles_o.anonymous, s)}
    ctx.places_p = {s.index for s in patched.symbols if _names_a_place(patched, roles_p.anonymous, s)}
    result = Comparison()
    result.ftrace_p = ftrace_sites(patched, rs, ctx.rel_p)
    tables_p = entry_tables(patched, roles_p, ctx.rel_p, struct_sizes or {}, _describer(ctx, patched),
                            rs.subtracting)
    tables_o = entry_tables(orig, roles_o, ctx.rel_o, struct_sizes or {}, _describer(ctx, orig), rs.subtracting)
    ctx.entry_moves = entry_line_moves(ctx, tables_o, tables_p)
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
        diff = _diff_symbol(ctx, sp, so)
        reason = diff.reason
        if reason is not None and not diff.final and sp.type == STT_FUNC:
            judged = line_noise(ctx, sp, so, diff)
            if judged is not None:
                result.line_noise[sp.index], result.line_evidence[sp.index] = judged
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
    result.layouts = tables_p.layouts
    _compare_entries(ctx, result, tables_o, tables_p)
    for alias in result.aliases:
        if alias in result.status:
            result.status[alias] = SAME  # patched through the function it shares a body with
    # a changed child that cannot be traced on its own drags its parent in
    for child, parent in corr.parent.items():
        if result.status.get(child) in (CHANGED, NEW) and child not in result.ftrace_p \
                and result.status.get(parent) == SAME:
            result.status[parent] = CHANGED
            result.reason[parent] = f"its part {patched.symbols[child].name} changed"
    _apply_markers(patched, roles_p, result)
    return result


def _apply_markers(patched: ElfObject, roles: Roles, cmp: Comparison) -> None:
    """Patch-author macro sections (kpatch's KPATCH_FORCE_UNSAFE, KPATCH_IGNORE_FUNCTION and
    KPATCH_IGNORE_SECTION): force or ignore the functions (and sections) they point at."""
    ignored_sections: set[str] = set()
    for shndx, marker in roles.markers.items():
        effect = marker.effect
        targets = patched.targets.get(shndx, [])
        if effect is MarkerEffect.IGNORE_SECTION:
            for t in targets:
                sym = patched.symbols[t.sym]
                if sym.is_defined:
                    name = patched.sections[sym.shndx].string_at(t.addend)
                    ignored_sections.add(name.decode("utf-8", "replace"))
        for t in targets:
            sym = patched.symbols[t.sym]
            if sym.type != STT_FUNC or sym.index not in cmp.status:
                continue
            if effect is MarkerEffect.FORCE:
                cmp.status[sym.index] = CHANGED
                cmp.reason[sym.index] = "forced by marker section"
            elif effect is MarkerEffect.IGNORE_FUNCTION:
                cmp.status[sym.index] = SAME
    if ignored_sections:
        for index, status in list(cmp.status.items()):
            sym = patched.symbols[index]
            if status != NEW and patched.sections[sym.shndx].name in ignored_sections:
                cmp.status[index] = SAME
