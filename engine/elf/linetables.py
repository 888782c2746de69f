"""Line tables — which source line each instruction of a code section came from.

In: a loaded `ElfObject`. Out: a `LineTable` (or None when the object has no
`.debug_line`): for a code section and an offset in it, the line of the row
that covers the offset, which is the line of the instruction there.

The compare stage asks it whether a differing immediate or string digit run is
`__LINE__`: the pair of values must be a move of a line, as the two tables give
it for the same instructions (`line_moves`, `LineMoves.attests`).

The DWARF line program (versions 2 to 5) is decoded here directly: only the
header fields that drive the state machine are read (the header length skips
the directory and file tables: rows keep their file's index, never its name). In a
relocatable object every code section starts at address 0, so an address alone
does not say which section a sequence describes: the relocation on each
`DW_LNE_set_address` operand does (its symbol's section, plus symbol value and
addend for the address). Where an assembler cannot know an address difference
(RISC-V's, which keeps the code relaxable), a `DW_LNS_fixed_advance_pc` operand
is 0 and a pair of relocations computes it: one adds the end's place, the other
(a type the caller names as `subtracting`) subtracts the start's.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import field

from ..core.errors import InputError
from ..core.records import record
from .dwarf import leb128
from .model import ElfObject, Symbol

# standard opcodes (DWARF 5, section 6.2.5.2)
_COPY, _ADVANCE_PC, _ADVANCE_LINE, _SET_FILE, _SET_COLUMN = 1, 2, 3, 4, 5
_NEGATE_STMT, _SET_BASIC_BLOCK, _CONST_ADD_PC, _FIXED_ADVANCE_PC = 6, 7, 8, 9
# extended opcodes
_END_SEQUENCE, _SET_ADDRESS = 1, 2


@record(frozen=False)
class SectionLines:
    """The rows of one code section: row addresses ascending, the line of each (0: no line, the
    compiler's own code; -1: past the end of a sequence)."""

    addresses: list[int] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    files: list[int] = field(default_factory=list)  # the file table index of each row

    def row_at(self, offset: int) -> tuple[int, int] | None:
        """(line, file) of the row covering `offset`, None where no line is known."""
        i = bisect.bisect_right(self.addresses, offset) - 1
        if i < 0 or self.lines[i] <= 0:
            return None
        return self.lines[i], self.files[i]

    def line_at(self, offset: int) -> int | None:
        row = self.row_at(offset)
        return None if row is None else row[0]

    def row_addresses(self, lo: int, hi: int) -> list[int]:
        """The addresses in [lo, hi) where a row starts."""
        return self.addresses[bisect.bisect_left(self.addresses, lo): bisect.bisect_left(self.addresses, hi)]


@record(frozen=False)
class LineTable:
    """An object's source lines, per code section, by instruction offset."""

    sections: dict[int, SectionLines]

    def line_at(self, shndx: int, offset: int) -> int | None:
        """The source line of the instruction at `offset` of section `shndx`; None if unknown."""
        rows = self.sections.get(shndx)
        return None if rows is None else rows.line_at(offset)

    def lines_in(self, shndx: int, lo: int, hi: int) -> set[int]:
        """The source lines of the rows that start in [lo, hi) of section `shndx`."""
        rows = self.sections.get(shndx)
        if rows is None:
            return set()
        return {line for a in rows.row_addresses(lo, hi) if (line := rows.line_at(a)) is not None}


@record(frozen=False)
class LineMoves:
    """How the lines of one function moved between the two objects: original line -> patched line
    at the same instructions, for the function's own file, and for any file (code inlined from
    another file keeps that file's lines)."""

    own: dict[int, int] = field(default_factory=dict)
    any_file: dict[int, set[int]] = field(default_factory=dict)  # a line may be in several files

    def attests(self, value_o: int, value_p: int) -> bool:
        """Is (value_o -> value_p) a move of a line of the function: an instruction of it has those
        lines, or (a line with no instruction of its own) its own file's nearest lines on both
        sides moved by the same distance?"""
        if value_o != value_p and value_p in self.any_file.get(value_o, ()):
            return True
        return is_line_move(self.own, value_o, value_p)


def line_moves(orig: LineTable, orig_at: tuple[int, int], patched: LineTable, patched_at: tuple[int, int],
               size: int) -> LineMoves:
    """The line moves of one function, `size` bytes at (section, address) in each object. Its own
    file is the file of its first instruction with a line."""
    (shndx_o, base_o), (shndx_p, base_p) = orig_at, patched_at
    rows_o, rows_p = orig.sections.get(shndx_o), patched.sections.get(shndx_p)
    moves = LineMoves()
    if rows_o is None or rows_p is None:
        return moves
    offsets = {a - base_o for a in rows_o.row_addresses(base_o, base_o + size)}
    offsets |= {a - base_p for a in rows_p.row_addresses(base_p, base_p + size)}
    first = next((o for o in sorted(offsets) if rows_o.row_at(base_o + o) and rows_p.row_at(base_p + o)), None)
    if first is None:
        return moves
    first_o, first_p = rows_o.row_at(base_o + first), rows_p.row_at(base_p + first)
    assert first_o is not None and first_p is not None
    for offset in sorted(offsets):
        row_o, row_p = rows_o.row_at(base_o + offset), rows_p.row_at(base_p + offset)
        if row_o is None or row_p is None:
            continue
        moves.any_file.setdefault(row_o[0], set()).add(row_p[0])
        if row_o[1] == first_o[1] and row_p[1] == first_p[1]:
            moves.own.setdefault(row_o[0], row_p[0])
    return moves


def is_line_move(moves: dict[int, int], value_o: int, value_p: int) -> bool:
    """Is (value_o -> value_p) a move of a line of the function? Either an instruction has those
    lines, or the nearest lines of the function's instructions on both sides of value_o moved by
    the same distance (a line with no instruction of its own, such as the call of an inlined helper
    whose code carries the helper's lines)."""
    if value_o == value_p:
        return False
    if moves.get(value_o) == value_p:
        return True
    below = [line for line in moves if line < value_o]
    above = [line for line in moves if line > value_o]
    if not below or not above:
        return False
    low, high = max(below), min(above)
    return moves[low] - low == moves[high] - high == value_p - value_o


class _Reader:
    def __init__(self, data: bytes, little_endian: bool, path: str) -> None:
        self.data, self.pos, self.path = data, 0, path
        self.order = "<" if little_endian else ">"

    def _need(self, size: int) -> None:
        if self.pos + size > len(self.data):
            raise InputError(f"{self.path}: .debug_line is truncated at offset {self.pos:#x}")

    def unsigned(self, size: int) -> int:
        self._need(size)
        value = int.from_bytes(self.data[self.pos: self.pos + size], "little" if self.order == "<" else "big")
        self.pos += size
        return value

    def signed8(self) -> int:
        self._need(1)
        (value,) = struct.unpack_from("b", self.data, self.pos)
        self.pos += 1
        return int(value)

    def uleb(self) -> int:
        return self._leb128(signed=False)

    def sleb(self) -> int:
        return self._leb128(signed=True)

    def _leb128(self, signed: bool) -> int:
        try:
            value, self.pos = leb128(self.data, self.pos, signed)
        except IndexError:
            raise InputError(f"{self.path}: .debug_line is truncated at offset {self.pos:#x}") from None
        return value


# the relocations at each operand offset of .debug_line: (symbol, addend, subtracts)
_Targets = dict[int, list[tuple[Symbol, int, bool]]]


def line_table(obj: ElfObject, subtracting: frozenset[int] = frozenset()) -> LineTable | None:
    """The object's line table, or None when it has no `.debug_line`. `subtracting`: the relocation
    types that subtract their place from the operand (the arch rules' `subtracts`)."""
    sec = obj.section_by_name(".debug_line")
    if sec is None:
        return None
    targets: _Targets = {}
    for r in sec.relocs:
        targets.setdefault(r.offset, []).append((obj.symbols[r.sym], r.addend, r.type in subtracting))
    reader = _Reader(sec.data, obj.little_endian, obj.path)
    out: dict[int, SectionLines] = {}
    while reader.pos < len(sec.data):
        _decode_unit(reader, targets, out)
    for rows in out.values():
        _sort(rows)
    return LineTable(out)


def _decode_unit(reader: _Reader, targets: _Targets, out: dict[int, SectionLines]) -> None:
    """Decode one line program (a unit's header and its opcodes) into `out`."""
    header = _unit_header(reader)
    _run_program(reader, header, targets, out)
    reader.pos = header.end


@record
class _UnitHeader:
    """What running a unit's line program needs from its header."""

    end: int               # where the unit ends in .debug_line
    min_insn: int          # minimum_instruction_length
    line_base: int
    line_range: int
    opcode_base: int
    arg_counts: list[int]  # standard_opcode_lengths: the operands of each standard opcode


def _unit_header(reader: _Reader) -> _UnitHeader:
    """Read a unit's header, leaving `reader` at the start of its line program."""
    length = reader.unsigned(4)
    offset_size = 4
    if length == 0xFFFFFFFF:
        length, offset_size = reader.unsigned(8), 8
    end = reader.pos + length
    version = reader.unsigned(2)
    if not 2 <= version <= 5:
        raise InputError(f"{reader.path}: .debug_line version {version} is not DWARF 2 to 5")
    if version >= 5:
        reader.unsigned(2)  # address_size, segment_selector_size
    header_length = reader.unsigned(offset_size)
    program = reader.pos + header_length
    min_insn = reader.unsigned(1)
    if version >= 4:
        reader.unsigned(1)  # maximum_operations_per_instruction (VLIW only)
    reader.unsigned(1)  # default_is_stmt: every row counts, a __LINE__ load need not start a statement
    line_base = reader.signed8()
    line_range = reader.unsigned(1)
    opcode_base = reader.unsigned(1)
    arg_counts = [reader.unsigned(1) for _ in range(opcode_base - 1)]
    if line_range == 0 or program > end or end > len(reader.data):
        raise InputError(f"{reader.path}: .debug_line has a malformed header at offset {reader.pos:#x}")
    reader.pos = program
    return _UnitHeader(end, min_insn, line_base, line_range, opcode_base, arg_counts)


def _run_program(reader: _Reader, h: _UnitHeader, targets: _Targets, out: dict[int, SectionLines]) -> None:
    """The DWARF line-number state machine over one unit's program, writing the rows of this object's
    code sections into `out` (rows of sections it does not have are skipped). The state lives in
    locals: the loop runs once per row of every unit."""
    rows: SectionLines | None = None
    address, line, file = 0, 1, 1

    def emit(at_line: int) -> None:
        if rows is not None:
            rows.addresses.append(address)
            rows.lines.append(at_line)
            rows.files.append(file)

    while reader.pos < h.end:
        op = reader.unsigned(1)
        if op >= h.opcode_base:
            adjusted = op - h.opcode_base
            address += (adjusted // h.line_range) * h.min_insn
            line += h.line_base + adjusted % h.line_range
            emit(line)
        elif op == 0:
            size = reader.uleb()
            after = reader.pos + size
            sub = reader.unsigned(1) if size else 0
            if sub == _END_SEQUENCE:
                emit(-1)
                rows, address, line, file = None, 0, 1, 1
            elif sub == _SET_ADDRESS:
                rows, address = _sequence_start(reader, size, targets, out)
            reader.pos = after
        elif op == _COPY:
            emit(line)
        elif op == _ADVANCE_PC:
            address += reader.uleb() * h.min_insn
        elif op == _ADVANCE_LINE:
            line += reader.sleb()
        elif op == _CONST_ADD_PC:
            address += ((255 - h.opcode_base) // h.line_range) * h.min_insn
        elif op == _FIXED_ADVANCE_PC:
            at = reader.pos
            address += reader.unsigned(2) + _relocated(targets.get(at))
        elif op == _SET_FILE:
            file = reader.uleb()
        else:  # set_file, set_column, negate_stmt, ...: operands skipped by their count
            for _ in range(h.arg_counts[op - 1]):
                reader.uleb()


def _relocated(relocs: list[tuple[Symbol, int, bool]] | None) -> int:
    """What the relocations at an address-difference operand add to it: each place, or its negative
    for a subtracting one (both places lie in one section, so the difference is its offsets')."""
    return sum(-(sym.value + addend) if subtracts else sym.value + addend
               for sym, addend, subtracts in relocs or ())


def _sequence_start(reader: _Reader, size: int, targets: _Targets,
                    out: dict[int, SectionLines]) -> tuple[SectionLines | None, int]:
    """DW_LNE_set_address: the rows the sequence goes to (None: a section this object does not have)
    and its first address."""
    relocs = targets.get(reader.pos)
    raw = reader.unsigned(size - 1)
    if relocs and relocs[0][0].is_defined:
        sym, addend, _ = relocs[0]
        return out.setdefault(sym.shndx, SectionLines()), sym.value + addend + raw
    return None, raw


def _sort(rows: SectionLines) -> None:
    """Rows by address; at one address, a sequence's end before the rows of the next sequence."""
    if any(a > b for a, b in zip(rows.addresses, rows.addresses[1:], strict=False)):
        rows_sorted = sorted(zip(rows.addresses, rows.lines, rows.files, strict=True),
                             key=lambda row: (row[0], row[1] != -1))
        rows.addresses = [a for a, _, _ in rows_sorted]
        rows.lines = [x for _, x, _ in rows_sorted]
        rows.files = [f for _, _, f in rows_sorted]
