"""`__LINE__` noise: do two twin functions differ by line numbers only? (part of the compare stage)

In: a `Pair` and how a function differs from its twin (`SymbolDiff`: its differing bytes and the
strings its relocations reach), or the line-number fields of its special-section entries. Out: None
(a real change), or the `NoiseBasis` of the decision and each differing value in words (`explain`
shows them).

A function whose only differences are line numbers (`__LINE__` passed to WARN and friends, spelled
into a string literal, or kept in a bug-table entry) is unchanged. With line tables in both objects
the decision rests on them: every differing immediate of a rule-named load (`line_loads`), every
differing digit run of a referenced string and every differing `line_number` field must be a line
move (`linetables.LineMoves.attests`): an instruction has the original value as its line in the original
and the patched value at the same offset in the patched object (in the function, or in twin
functions of one size anywhere in the object); or, for a line with no instruction of its own (the
call of an inlined helper), the function's nearest own-file lines on both sides moved by that same
distance. A constant that did not move with its line is a change. Without line tables the rules'
heuristics decide (a `line_calls` sink or companion near the load, a move the object's bug-table
lines attest, a `line_strings` pattern), and the decision says so (`NoiseBasis.HEURISTIC`), because
a real constant change there could be hidden.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import Enum

from ..elf.linetables import LineMoves, is_line_move, line_moves
from ..elf.model import STT_FUNC, Reloc, Symbol, Target
from ..lang.template import Template
from ..ruleset.compiled import LineNoise, SplitLoad
from .entrytables import EntryTables, LineNumber
from .pair import Pair, SymbolDiff


class NoiseBasis(Enum):
    """How a function was judged to differ by line numbers only."""

    LINE_TABLE = "line-table"  # the line tables of both objects attest every differing value
    HEURISTIC = "heuristic"    # rules/noise.yaml line_calls and line_strings: a constant change would hide


# A load that covers a differing byte: (offset of the load, its length, immediate patched, orig) -> accepted?
_LoadCheck = Callable[[int, int, int, int], bool]


def _covering_load(noise: LineNoise, code_p: bytes, code_o: bytes, at_byte: int, little_endian: bool,
                   accept: _LoadCheck, lines: Callable[[], set[int]]) -> int | None:
    """The end of an accepted rule-named load whose immediate holds every differing bit of byte
    `at_byte` (the same load form in both objects), or None. For a split load, the end of the part
    that holds the byte (what lies between the parts is compared on its own)."""
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
    for split in noise.split:
        end = _covering_split(split, noise.insn_align, code_p, code_o, at_byte, little_endian, accept, lines)
        if end is not None:
            return end
    return None


def _covering_split(split: SplitLoad, align: int, code_p: bytes, code_o: bytes, at_byte: int, little_endian: bool,
                    accept: _LoadCheck, lines: Callable[[], set[int]]) -> int | None:
    """`_covering_load` for a load split over two instructions: the end of the part that holds every
    differing bit of byte `at_byte`, when the load it belongs to is accepted. A low part whose high
    part is out of sight (loaded on another path, or long before) is taken with the high part of each
    of the function's `lines`: the high instruction, wherever it is, did not change."""
    flipped = code_p[at_byte] ^ code_o[at_byte]
    for is_high, parts, letter in ((True, split.highs, "n"), (False, split.lows, "s")):
        for part in parts:
            field_bits = part.field_mask(letter)
            for at in range(max(0, at_byte - len(part) + 1), at_byte + 1):
                if at % align or flipped & ~field_bits[at_byte - at] or not part.fits(code_p, at):
                    continue
                found = _split_partner(split, align, code_p, at, part, is_high)
                if found is not None:
                    hi_at, high, lo_at, low = found
                    n_p = _split_value(split, code_p, (hi_at, high), (lo_at, low), little_endian)
                    n_o = _split_value(split, code_o, (hi_at, high), (lo_at, low), little_endian)
                    if n_p is not None and n_o is not None and accept(hi_at, lo_at + len(low) - hi_at, n_p, n_o):
                        return at + len(part)
                if not is_high:  # (the nearest high part may be another path's)
                    low_p, low_o = _signed(part, code_p, at, little_endian), _signed(part, code_o, at, little_endian)
                    half = 1 << (split.shift - 1)
                    if any(accept(at, len(part), (h << split.shift) + low_p, (h << split.shift) + low_o)
                           for h in sorted({(line + half) >> split.shift for line in lines()})):
                        return at + len(part)
    return None


def _signed(template: Template, code: bytes, at: int, little_endian: bool) -> int:
    """The `s` bits of a matching low part, read as a signed number."""
    value = template.number(code, at, "s", little_endian)
    assert value is not None  # the caller matched it
    bits = template.letters["s"]
    return value - ((value >> (bits - 1)) << bits)


def _split_partner(split: SplitLoad, align: int, code: bytes, at: int, part: Template,
                   is_high: bool) -> tuple[int, Template, int, Template] | None:
    """(high's offset, its template, low's offset, its template) for the part at `at`: the nearest
    other part within `apart` bytes that names the same register `r`."""
    r = part.match(code, at)
    assert r is not None
    if is_high:
        first = at + len(part)
        for lo_at in range(first, first + split.apart + 1):
            for low in split.lows:
                m = low.match(code, lo_at) if lo_at % align == 0 else None
                if m is not None and m.get("r") == r.get("r"):
                    return at, part, lo_at, low
        return None
    for high in split.highs:
        last = at - len(high)
        for hi_at in range(last, max(-1, last - split.apart - 1), -1):
            m = high.match(code, hi_at) if hi_at % align == 0 else None
            if m is not None and m.get("r") == r.get("r"):
                return hi_at, high, at, part
    return None


def _split_value(split: SplitLoad, code: bytes, high: tuple[int, Template], low: tuple[int, Template],
                 little_endian: bool) -> int | None:
    """The value a split load sets, its (offset, template) parts in `code`: the high `n` bits shifted by
    `shift`, plus the low `s` bits read as a signed number (None: the parts are not there, or name
    different registers)."""
    (hi_at, hi_part), (lo_at, lo_part) = high, low
    m_high, m_low = hi_part.match(code, hi_at), lo_part.match(code, lo_at)
    if m_high is None or m_low is None or m_high.get("r") != m_low.get("r"):
        return None
    n = hi_part.number(code, hi_at, "n", little_endian)
    assert n is not None
    return (n << split.shift) + _signed(lo_part, code, lo_at, little_endian)


def _bytes_are_lines(ctx: Pair, sp: Symbol, so: Symbol, offsets: list[int], accept: _LoadCheck) -> bool:
    """Is every differing byte inside the immediate of an accepted line load?"""
    code_p = ctx.patched.sections[sp.shndx].data[sp.value: sp.value + sp.size]
    code_o = ctx.orig.sections[so.shndx].data[so.value: so.value + so.size]
    covered_until = -1
    known: list[set[int]] = []

    def lines() -> set[int]:  # the original function's lines (none known: {0}), read once if asked
        if not known:
            found = ctx.lines_o.lines_in(so.shndx, so.value, so.value + so.size) if ctx.lines_o is not None else set()
            known.append(found or {0})
        return known[0]

    for offset in offsets:
        if offset < covered_until:
            continue
        end = _covering_load(ctx.rs.line_noise, code_p, code_o, offset, ctx.patched.little_endian, accept, lines)
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


def line_noise(ctx: Pair, sp: Symbol, so: Symbol, diff: SymbolDiff) -> tuple[NoiseBasis, list[str]] | None:
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
    # the references a call's arguments are made of: one per pair, and none to the function's own code
    # (a branch within it that keeps a relocation, as RISC-V's do)
    relocs = [(r, t) for r, t in ctx.rel_p.in_range(sp.shndx, sp.value, sp.value + sp.size)
              if r.type not in ctx.rs.completing and t.sym != sp.index]

    def sink_follows(at: int, length: int, n_p: int, n_o: int) -> bool:
        return _sink_follows(ctx, noise, relocs, sp.value + at, sp.value + at + length) \
            or is_line_move(ctx.entry_moves, n_o, n_p)

    why = f"a load before a line_calls sink, {noise.calls_origin}, or a move the bug-table lines attest"
    if noise.sinks is not None \
            and _bytes_are_lines(ctx, sp, so, diff.byte_offsets, recorded(sink_follows, why)) \
            and (not diff.strings or _strings_match_line_patterns(diff.strings, noise.strings)):
        return NoiseBasis.HEURISTIC, evidence + strings_evidence(f"line_strings, {noise.strings_origin}")
    return None


def _target_name(ctx: Pair, r: Reloc, t: Target) -> str | None:
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


def _sink_follows(ctx: Pair, noise: LineNoise, relocs: list[tuple[Reloc, Target]], start: int, after: int) -> bool:
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


def _attested(ctx: Pair, moves: LineMoves, value_o: int, value_p: int) -> bool:
    """Is (value_o -> value_p) a line move: of the function (`moves`), or anywhere in the object?"""
    return moves.attests(value_o, value_p) \
        or (value_o != value_p and value_p in _object_moves(ctx).get(value_o, set()))


def _object_moves(ctx: Pair) -> dict[int, set[int]]:
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


def entry_line_moves(ctx: Pair, tables_o: EntryTables, tables_p: EntryTables) -> dict[int, int]:
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


def line_fields(ctx: Pair, sp: Symbol, so: Symbol, lines: list[tuple[int, int]]) -> NoiseBasis | None:
    """Line-number fields of entries: line moves of the function by its line tables, else (without
    them) taken as line numbers by heuristic."""
    if ctx.lines_p is None or ctx.lines_o is None:
        return NoiseBasis.HEURISTIC
    moves = line_moves(ctx.lines_o, (so.shndx, so.value), ctx.lines_p, (sp.shndx, sp.value), sp.size)
    return NoiseBasis.LINE_TABLE if all(_attested(ctx, moves, o, p) for o, p in lines) else None
