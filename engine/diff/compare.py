"""The differ's compare stage (the stages: pipeline.py): decide, per patched function and data object, what changed.

In: both objects, their `Roles`, the `Correlation`, the `Ruleset`, their line
tables (`lines.py`, when compiled with -g) and `--struct-size` overrides. Out:
a `Comparison` — status per patched symbol (`same`, `changed`, `new`), the
original symbols that disappeared, a one-line reason per change, the functions
that differ by line numbers only (with the basis and each differing value),
and the special-section layouts (`entries.py`) the include stage plans with.

Two symbols are the same when their sizes match, their bytes match outside
relocated fields (field widths come from the relocation rules), and their
relocations match one by one: offset, type, correlated target, addend; string
literals compare by content, merged constants by value. A function is also
changed when its special-section entries differ (an alternative's feature or
replacement, an exception-table type, a static key), even with the same code.

A function whose only differences are line numbers (`__LINE__` passed to WARN
and friends, spelled into a string literal, or kept in a bug-table entry) is
unchanged. With line tables in both objects the decision rests on them: every
differing immediate of a rule-named load (`line_loads`), every differing digit
run of a referenced string and every differing `line_number` field must be a
line move (`lines.LineMoves.attests`): an instruction has the original value as
its line in the original and the patched value at the same offset in the
patched object (in the function, or in twin functions of one size anywhere in
the object); or, for a line with no instruction of its own (the call of an
inlined helper), the function's nearest own-file lines on both sides moved by
that same distance. A constant that did not move with its line is a change.
Without line tables the rules' heuristics decide (a `line_calls` sink or
companion near the load, a move the object's bug-table lines attest, a
`line_strings` pattern), and the comparison says so (`NoiseBasis.HEURISTIC`),
because a real constant change there could be hidden.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import field
from enum import Enum, StrEnum

from ..core.errors import InputError
from ..core.records import record
from ..elf.dwarf import Place, debug_info
from ..elf.lines import LineMoves, LineTable, is_line_move, line_moves
from ..elf.model import (
    SHF_MERGE,
    SHT_NOBITS,
    STT_FUNC,
    STT_OBJECT,
    STT_SECTION,
    ElfObject,
    Reloc,
    RelocIndex,
    Section,
    Symbol,
    Target,
)
from ..ruleset.compiled import Branch, LayoutRule, LineNoise, MarkerEffect, Ruleset
from .classify import Roles
from .correlate import Correlation, normalize_name
from .entries import (
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
)
from .ftrace import ftrace_sites


class Status(StrEnum):
    """What became of a symbol of the patched object (rule expressions compare it as text)."""

    SAME = "same"
    CHANGED = "changed"
    NEW = "new"


SAME, CHANGED, NEW = Status.SAME, Status.CHANGED, Status.NEW


class NoiseBasis(Enum):
    """How a function was judged to differ by line numbers only."""

    LINE_TABLE = "line-table"  # the line tables of both objects attest every differing value
    HEURISTIC = "heuristic"    # rules/noise.yaml line_calls and line_strings: a constant change would hide


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


@record(frozen=False)
class _Ctx:
    """What comparing one pair needs: both objects, their roles and indexes, and the rules."""

    orig: ElfObject
    patched: ElfObject
    corr: Correlation
    rs: Ruleset
    rel_o: RelocIndex
    rel_p: RelocIndex
    roles_o: Roles
    roles_p: Roles
    lines_o: LineTable | None = None
    lines_p: LineTable | None = None
    # without line tables: original line -> patched line, as special-section line fields (bug_entry.line)
    # of twin functions give them for the whole object
    entry_moves: dict[int, int] = field(default_factory=dict)
    # with line tables: original line -> patched line at the same offsets of twin functions of one size
    object_moves: dict[int, set[int]] | None = None
    # the symbols a reference to which names a place (_location), once per object
    places_o: set[int] = field(default_factory=set)
    places_p: set[int] = field(default_factory=set)
    # shared code sections (patched index) whose functions moved relative to each other
    moved_sections: dict[int, bool] = field(default_factory=dict)
    # where the original object's compiler recorded calls (DWARF call sites), read when first asked
    calls_o: set[Place] | None = None


def _field_mask(ctx: _Ctx, obj: ElfObject, sec: Section, r: Reloc) -> tuple[int, bytes]:
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


def _same_entry(ctx: _Ctx, loc_p: tuple[Section, int], loc_o: tuple[Section, int]) -> bool:
    """Compare two pointer-table entries (a `via` relocation's table of pointers) by what
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


def _places(ctx: _Ctx, in_text: bool, rtype: int, tp: Target, to: Target) -> tuple[_Place | None, _Place | None]:
    """Where two same-type relocations land when they name places rather than symbols."""
    if tp.sym not in ctx.places_p and to.sym not in ctx.places_o:
        return None, None
    bias = ctx.rs.place_bias(rtype, in_text)[0]
    return (_location(ctx.patched, ctx.roles_p.anonymous, tp, bias),
            _location(ctx.orig, ctx.roles_o.anonymous, to, bias))


def _same_target(ctx: _Ctx, in_text: bool, rp: Reloc, tp: Target, ro: Reloc, to: Target) -> bool:
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
    return sp.type == so.type and normalize_name(ctx.rs, sp.name) == normalize_name(ctx.rs, so.name)


@record(frozen=False)
class _Diff:
    """How a symbol differs from its twin: the first difference (None: identical), and the
    differences that may be line numbers — differing bytes (relocated fields masked) and the
    strings two relocations reach, as offsets in the symbol."""

    reason: str | None = None
    byte_offsets: list[int] = field(default_factory=list)
    strings: list[tuple[int, bytes, bytes]] = field(default_factory=list)  # (offset, patched, orig)
    final: bool = False  # a difference no line number explains


def _strings_reached(ctx: _Ctx, in_text: bool, rp: Reloc, tp: Target, ro: Reloc,
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


def _diff_symbol(ctx: _Ctx, sp: Symbol, so: Symbol) -> _Diff:
    if sp.type != so.type:
        return _Diff(f"type {so.type_name} -> {sp.type_name}", final=True)
    if sp.size != so.size:
        return _Diff(f"size {so.size} -> {sp.size}", final=True)
    secp, seco = ctx.patched.sections[sp.shndx], ctx.orig.sections[so.shndx]
    if (secp.type == SHT_NOBITS) != (seco.type == SHT_NOBITS):
        return _Diff("moved between initialised and zeroed data", final=True)
    relp = ctx.rel_p.in_range(sp.shndx, sp.value, sp.value + sp.size)
    relo = ctx.rel_o.in_range(so.shndx, so.value, so.value + so.size)
    if len(relp) != len(relo):
        return _Diff(f"{len(relo)} -> {len(relp)} relocations", final=True)
    diff = _Diff()
    for (rp, tp), (ro, to) in zip(relp, relo, strict=True):
        if rp.offset - sp.value != ro.offset - so.value:
            return _Diff(f"relocation moved at +{ro.offset - so.value:#x}", final=True)
        if _same_target(ctx, secp.is_text, rp, tp, ro, to):
            continue
        reason = (f"relocation at +{rp.offset - sp.value:#x} now targets "
                  f"{ctx.patched.symbols[tp.sym].name}{tp.addend:+#x} "
                  f"(was {ctx.orig.symbols[to.sym].name}{to.addend:+#x})")
        strings = _strings_reached(ctx, secp.is_text, rp, tp, ro, to)
        if strings is None:
            return _Diff(reason, final=True)
        diff.reason = diff.reason or reason + f": string {strings[1]!r} -> {strings[0]!r}"
        diff.strings.append((rp.offset - sp.value, *strings))
    if secp.type == SHT_NOBITS:
        return diff
    raw_p, raw_o = secp.data[sp.value: sp.value + sp.size], seco.data[so.value: so.value + so.size]
    shared = secp.is_text and bool(ctx.rs.branches) and _section_moved(ctx, sp.shndx)
    if raw_p == raw_o:  # the same bytes, relocated fields and all: the same code, unless a branch
        # the assembler resolved now lands on another function, the section's functions having moved
        retargeted = _retargeted_branch(ctx, sp, so, raw_p) if shared else None
        return _Diff(retargeted, final=True) if retargeted else diff
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


def _section_moved(ctx: _Ctx, shndx: int) -> bool:
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


def _retargeted_branch(ctx: _Ctx, sp: Symbol, so: Symbol, code: bytes) -> str | None:
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


def _may_be_call(ctx: _Ctx, so: Symbol, start: int, length: int) -> bool:
    """Could the branch-like bytes at `start` of the original function be a call or tail call? A
    byte pattern matched anywhere in variable-length code may sit inside other instructions; where
    the compiler recorded the function's calls (DWARF call sites: each call's address or the address
    after it), only a pattern at one of them is a call. Without such records, every match counts."""
    if ctx.calls_o is None:
        info = debug_info(ctx.orig)
        ctx.calls_o = info.calls if info is not None else set()
    recorded = {at for shndx, at in ctx.calls_o if shndx == so.shndx and so.value <= at <= so.value + so.size}
    return not recorded or so.value + start in recorded or so.value + start + length in recorded


def _mask_branches(ctx: _Ctx, sp: Symbol, so: Symbol, raw_p: bytes, raw_o: bytes, bp: bytearray,
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


def _same_branch_target(ctx: _Ctx, sp: Symbol, so: Symbol, raw_p: bytes, raw_o: bytes, bp: bytearray,
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


# A load that covers a differing byte: (offset of the load, its length, immediate patched, orig) -> accepted?
_LoadCheck = Callable[[int, int, int, int], bool]


def _covering_load(noise: LineNoise, code_p: bytes, code_o: bytes, at_byte: int, little_endian: bool,
                   accept: _LoadCheck) -> int | None:
    """The end of an accepted rule-named load whose immediate holds every differing bit of byte
    `at_byte` (the same load form in both objects), or None."""
    flipped = code_p[at_byte] ^ code_o[at_byte]
    for template in noise.loads:
        length = len(template)
        field_bits = template.field_mask("n")
        for at in range(max(0, at_byte - length + 1), at_byte + 1):
            if at % noise.insn_align or flipped & ~field_bits[at_byte - at]:
                continue
            n_p = template.number(code_p, at, "n", little_endian)
            n_o = template.number(code_o, at, "n", little_endian)
            if n_p is not None and n_o is not None and accept(at, length, n_p, n_o):
                return at + length
    return None


def _bytes_are_lines(ctx: _Ctx, sp: Symbol, so: Symbol, offsets: list[int], accept: _LoadCheck) -> bool:
    """Is every differing byte inside the immediate of an accepted line load?"""
    code_p = ctx.patched.sections[sp.shndx].data[sp.value: sp.value + sp.size]
    code_o = ctx.orig.sections[so.shndx].data[so.value: so.value + so.size]
    covered_until = -1
    for offset in offsets:
        if offset < covered_until:
            continue
        end = _covering_load(ctx.rs.line_noise, code_p, code_o, offset, ctx.patched.little_endian, accept)
        if end is None:
            return False
        covered_until = end
    return True


_DIGITS = re.compile(rb"(\d+)")


def _strings_are_lines(strings: list[tuple[int, bytes, bytes]], is_line: Callable[[int, int], bool]) -> bool:
    """With line tables: the strings differ only in digit runs, each a line move of the function."""
    for _offset, text_p, text_o in strings:
        parts_p, parts_o = _DIGITS.split(text_p), _DIGITS.split(text_o)
        if len(parts_p) != len(parts_o):
            return False
        for k, (part_p, part_o) in enumerate(zip(parts_p, parts_o, strict=True)):
            if part_p != part_o and (k % 2 == 0 or not is_line(int(part_o), int(part_p))):
                return False
    return True


def _strings_match_line_patterns(strings: list[tuple[int, bytes, bytes]], patterns: list[re.Pattern[str]]) -> bool:
    """Heuristic: the strings are equal once every rule-named line number in them is blanked out."""
    if not patterns:
        return False

    def blanked(text: bytes) -> str:
        out = text.decode("latin-1")
        for pattern in patterns:
            out = pattern.sub(lambda m: m.group(0)[: m.start("line") - m.start()] + "#"
                              + m.group(0)[m.end("line") - m.start():], out)
        return out

    return all(blanked(p) == blanked(o) for _off, p, o in strings)


def _line_noise(ctx: _Ctx, sp: Symbol, so: Symbol, diff: _Diff) -> tuple[NoiseBasis, list[str]] | None:
    """Do `sp` and its twin `so` differ by line numbers only? If so, on what basis, and each
    differing value in words (for `explain`)."""
    noise = ctx.rs.line_noise
    evidence: list[str] = []

    def recorded(accept: _LoadCheck, why: str) -> _LoadCheck:
        def check(at: int, length: int, n_p: int, n_o: int) -> bool:
            if not accept(at, length, n_p, n_o):
                return False
            evidence.append(f"+{at:#x}: immediate {n_o} -> {n_p} ({why})")
            return True
        return check

    def strings_evidence(why: str) -> list[str]:
        return [f"+{offset:#x}: string {text_o.decode('latin-1')!r} -> {text_p.decode('latin-1')!r} ({why})"
                for offset, text_p, text_o in diff.strings]

    if ctx.lines_p is not None and ctx.lines_o is not None:
        moves = line_moves(ctx.lines_o, (so.shndx, so.value), ctx.lines_p, (sp.shndx, sp.value), sp.size)

        def is_line(value_o: int, value_p: int) -> bool:
            return _attested(ctx, moves, value_o, value_p)

        def load_is_line(_at: int, _length: int, n_p: int, n_o: int) -> bool:
            return is_line(n_o, n_p)

        why = "a line of the function that moved so in the line tables"
        if _bytes_are_lines(ctx, sp, so, diff.byte_offsets, recorded(load_is_line, why)) \
                and _strings_are_lines(diff.strings, is_line):
            return NoiseBasis.LINE_TABLE, evidence + strings_evidence(why)
        return None
    relocs = ctx.rel_p.in_range(sp.shndx, sp.value, sp.value + sp.size)

    def sink_follows(at: int, length: int, n_p: int, n_o: int) -> bool:
        return _sink_follows(ctx, noise, relocs, sp.value + at, sp.value + at + length) \
            or is_line_move(ctx.entry_moves, n_o, n_p)

    why = f"a load before a line_calls sink, {noise.calls_origin}, or a move the bug-table lines attest"
    if noise.sinks is not None \
            and _bytes_are_lines(ctx, sp, so, diff.byte_offsets, recorded(sink_follows, why)) \
            and (not diff.strings or _strings_match_line_patterns(diff.strings, noise.strings)):
        return NoiseBasis.HEURISTIC, evidence + strings_evidence(f"line_strings, {noise.strings_origin}")
    return None


def _target_name(ctx: _Ctx, r: Reloc, t: Target) -> str | None:
    """The name a relocation of patched code reaches (through a pointer-table entry, under its
    original name); None for a string literal or an empty table entry."""
    rt = ctx.rs.reloc_types.get(r.type)
    sym = ctx.patched.symbols[t.sym]
    if rt is not None and sym.is_defined and ctx.patched.sections[sym.shndx].name == rt.via:
        entry = ctx.rel_p.at(sym.shndx, sym.value + t.addend)  # look through the pointer-table entry
        if entry is None:
            return None
        sym = ctx.patched.symbols[entry[1].sym]
    if sym.is_defined and ctx.patched.sections[sym.shndx].is_strings:
        return None
    twin = ctx.corr.sym_twin.get(sym.index)
    return ctx.orig.symbols[twin].name if twin is not None else sym.name


def _sink_follows(ctx: _Ctx, noise: LineNoise, relocs: list[tuple[Reloc, Target]], start: int, after: int) -> bool:
    """Heuristic: is the load at [start, after) part of a call's (function, line) arguments? The
    next relocation after it (strings and skip-listed targets passed over; with `reach` > 1, up to
    reach - 1 other references too) is a sink, or a companion (`__func__`) is among the references
    of the same call, before or after the load."""
    assert noise.sinks is not None
    if noise.companions is not None:
        for r, t in reversed([(r, t) for r, t in relocs if r.offset < start]):
            name = _target_name(ctx, r, t)
            if name is None:
                continue  # a string literal (the format)
            if noise.companions.search(name):
                return True
            if ctx.patched.symbols[t.sym].type == STT_FUNC or not ctx.patched.symbols[t.sym].is_defined:
                break  # the previous call: another call's arguments lie beyond
    passed = 0
    for r, t in relocs:
        if r.offset < after:
            continue
        name = _target_name(ctx, r, t)
        if name is None:
            continue
        if noise.companions is not None and noise.companions.search(name):
            return True
        if noise.skip is not None and noise.skip.search(name):
            continue
        if noise.sinks.search(name) is not None:
            return True
        passed += 1  # another reference first: a call on another path, scheduled between
        if passed >= noise.reach:
            return False
    return False


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


def _key_name(ctx: _Ctx, obj: ElfObject, index: int) -> str:
    """A symbol's name as both objects agree on it: the original's name for a pair of twins."""
    if obj is ctx.patched:
        twin = ctx.corr.sym_twin.get(index)
        if twin is not None:
            return ctx.orig.symbols[twin].name
    elif index in ctx.corr.sym_twin_rev:
        return obj.symbols[index].name
    return normalize_name(ctx.rs, obj.symbols[index].name)


def _describer(ctx: _Ctx, obj: ElfObject) -> Describe:
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
            return (f"its {ep.section} entry at +{ep.at:#x} differs in {name}: {value_o.shown()} -> "
                    f"{value_p.shown()}", [])
    return None, lines


def _compare_entries(ctx: _Ctx, result: Comparison, tables_o: EntryTables, tables_p: EntryTables) -> None:
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
            basis = _line_fields(ctx, sp, so, lines)
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


def _attested(ctx: _Ctx, moves: LineMoves, value_o: int, value_p: int) -> bool:
    """Is (value_o -> value_p) a line move: of the function (`moves`), or anywhere in the object?"""
    return moves.attests(value_o, value_p) \
        or (value_o != value_p and value_p in _object_moves(ctx).get(value_o, set()))


def _object_moves(ctx: _Ctx) -> dict[int, set[int]]:
    """Line moves the line tables attest anywhere in the object: at the same offsets of twin
    functions whose code has one size (so their instructions line up). A WARN inlined into a
    function whose own rows do not reach its line is still a line of the file that moved so."""
    if ctx.object_moves is None:
        moves: dict[int, set[int]] = {}
        assert ctx.lines_o is not None and ctx.lines_p is not None
        for index, twin in ctx.corr.sym_twin.items():
            sp, so = ctx.patched.symbols[index], ctx.orig.symbols[twin]
            if sp.type == STT_FUNC and sp.is_defined and so.is_defined and sp.size == so.size:
                found = line_moves(ctx.lines_o, (so.shndx, so.value), ctx.lines_p, (sp.shndx, sp.value), sp.size)
                for line_o, lines_p in found.any_file.items():
                    moves.setdefault(line_o, set()).update(lines_p)
        ctx.object_moves = moves
    return ctx.object_moves


def _entry_line_moves(ctx: _Ctx, tables_o: EntryTables, tables_p: EntryTables) -> dict[int, int]:
    """Original line -> patched line from the line-number fields of twin functions' entries that
    agree in everything else: the object's own record of how its lines moved, for objects
    without line tables."""
    moves: dict[int, int] = {}
    for index, entries_p in tables_p.by_function.items():
        twin = ctx.corr.sym_twin.get(index)
        entries_o = tables_o.by_function.get(twin) if twin is not None else None
        if not entries_o or len(entries_o) != len(entries_p):
            continue
        for ep, eo in zip(entries_p, entries_o, strict=True):
            if ep.section != eo.section or ep.at != eo.at:
                break
            for (_name, value_p), (_name_o, value_o) in zip(ep.fields, eo.fields, strict=True):
                if isinstance(value_p, LineNumber) and isinstance(value_o, LineNumber):
                    moves.setdefault(value_o.line, value_p.line)
    return moves


def _line_fields(ctx: _Ctx, sp: Symbol, so: Symbol, lines: list[tuple[int, int]]) -> NoiseBasis | None:
    """Line-number fields of entries: line moves of the function by its line tables, else (without
    them) taken as line numbers by heuristic."""
    if ctx.lines_p is None or ctx.lines_o is None:
        return NoiseBasis.HEURISTIC
    moves = line_moves(ctx.lines_o, (so.shndx, so.value), ctx.lines_p, (sp.shndx, sp.value), sp.size)
    return NoiseBasis.LINE_TABLE if all(_attested(ctx, moves, o, p) for o, p in lines) else None


def compare(orig: ElfObject, patched: ElfObject, roles_o: Roles, roles_p: Roles, corr: Correlation,
            rs: Ruleset, lines_o: LineTable | None = None, lines_p: LineTable | None = None,
            struct_sizes: Mapping[str, int] | None = None) -> Comparison:
    ctx = _Ctx(orig, patched, corr, rs, orig.relocs(), patched.relocs(), roles_o, roles_p,
               lines_o, lines_p)
    ctx.places_o = {s.index for s in orig.symbols if _names_a_place(orig, roles_o.anonymous, s)}
    ctx.places_p = {s.index for s in patched.symbols if _names_a_place(patched, roles_p.anonymous, s)}
    result = Comparison()
    result.ftrace_p = ftrace_sites(patched, rs, ctx.rel_p)
    tables_p = entry_tables(patched, roles_p, ctx.rel_p, struct_sizes or {}, _describer(ctx, patched))
    tables_o = entry_tables(orig, roles_o, ctx.rel_o, struct_sizes or {}, _describer(ctx, orig))
    ctx.entry_moves = _entry_line_moves(ctx, tables_o, tables_p)
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
            judged = _line_noise(ctx, sp, so, diff)
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
