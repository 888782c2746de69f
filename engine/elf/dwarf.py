"""Debug information entries — the part of `.debug_info` that says what types the code uses.

In: a loaded `ElfObject`. Out: a `DebugInfo` (or None when the object has no `.debug_info`):
every debugging information entry (DIE) of the object's units with the few attributes the layout
check reads (name, type, sizes, offsets, bounds, enumerator values, origins), its parent and
children, which DIE describes the code or data at a (section, offset) of the object, and where
the compiler recorded calls (call sites, which the comparison asks about branches it cannot
decode).

DWARF versions 2 to 5 are decoded here directly, as `linetables.py` decodes line programs: the
abbreviation tables give each entry's attributes and forms, every form is read or skipped by its
size, and only the attributes in `KEPT` are stored. In a relocatable object the values that point
into other sections (string offsets, addresses) are relocations: a string offset is the
relocation's addend (plus what the field holds), and an address names its symbol's section. The
string and address index forms of DWARF 5 (`strx*`, `addrx*`: clang's) are read through
`.debug_str_offsets` and `.debug_addr`, relocated the same way.
"""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from ..core.errors import InputError
from ..core.records import record
from .model import ElfObject, Section
from .read import c_string

# tags (DWARF 5, section 7.5.4)
TAG_ARRAY = 0x01
TAG_ENUMERATION = 0x04
TAG_FORMAL_PARAMETER = 0x05
TAG_LEXICAL_BLOCK = 0x0B
TAG_MEMBER = 0x0D
TAG_POINTER = 0x0F
TAG_REFERENCE = 0x10
TAG_COMPILE_UNIT = 0x11
TAG_STRUCTURE = 0x13
TAG_SUBROUTINE_TYPE = 0x15
TAG_TYPEDEF = 0x16
TAG_UNION = 0x17
TAG_INLINED_SUBROUTINE = 0x1D
TAG_SUBRANGE = 0x21
TAG_BASE = 0x24
TAG_CONST = 0x26
TAG_ENUMERATOR = 0x28
TAG_SUBPROGRAM = 0x2E
TAG_VARIABLE = 0x34
TAG_VOLATILE = 0x35
TAG_RESTRICT = 0x37
TAG_UNSPECIFIED = 0x3B
TAG_ATOMIC = 0x47
TAG_CALL_SITE = 0x48
TAG_GNU_CALL_SITE = 0x4109  # DWARF 4's GNU extension: DW_AT_low_pc is the return address

# attributes kept (the rest are skipped by their form's size)
AT_LOCATION = 0x02
AT_NAME = 0x03
AT_BYTE_SIZE = 0x0B
AT_BIT_OFFSET = 0x0C      # DWARF 2/3 bit fields: from the storage unit's most significant bit
AT_BIT_SIZE = 0x0D
AT_LOW_PC = 0x11
AT_CONST_VALUE = 0x1C
AT_UPPER_BOUND = 0x2F
AT_ABSTRACT_ORIGIN = 0x31
AT_COUNT = 0x37
AT_DATA_MEMBER_LOCATION = 0x38
AT_DECLARATION = 0x3C
AT_SPECIFICATION = 0x47
AT_TYPE = 0x49
AT_DATA_BIT_OFFSET = 0x6B
AT_STR_OFFSETS_BASE = 0x72
AT_ADDR_BASE = 0x73
AT_CALL_RETURN_PC = 0x7D
AT_CALL_PC = 0x81
KEPT = frozenset({AT_LOCATION, AT_NAME, AT_BYTE_SIZE, AT_BIT_OFFSET, AT_BIT_SIZE, AT_LOW_PC, AT_CONST_VALUE,
                  AT_UPPER_BOUND, AT_ABSTRACT_ORIGIN, AT_COUNT, AT_DATA_MEMBER_LOCATION, AT_DECLARATION,
                  AT_SPECIFICATION, AT_TYPE, AT_DATA_BIT_OFFSET, AT_STR_OFFSETS_BASE, AT_ADDR_BASE,
                  AT_CALL_RETURN_PC, AT_CALL_PC})
_CODE_ADDRESSES = frozenset({AT_LOW_PC, AT_CALL_RETURN_PC, AT_CALL_PC})
_CALL_SITES = frozenset({TAG_CALL_SITE, TAG_GNU_CALL_SITE})
_REFERENCES = frozenset({AT_TYPE, AT_ABSTRACT_ORIGIN, AT_SPECIFICATION})

_OP_ADDR, _OP_PLUS_UCONST, _OP_ADDRX, _OP_GNU_ADDR_INDEX = 0x03, 0x23, 0xA1, 0xFB

Place = tuple[int, int]  # (section index, offset in it) of this object


@record(frozen=False, slots=True)
class Die:
    """One debugging information entry: its tag, the kept attributes (references as absolute
    `.debug_info` offsets, addresses as a `Place`, strings as text), its parent's offset (-1 for a
    unit) and its children's offsets in order."""

    offset: int
    tag: int
    attrs: dict[int, object]
    parent: int
    children: list[int] = field(default_factory=list)

    @property
    def name(self) -> str | None:
        value = self.attrs.get(AT_NAME)
        return value if isinstance(value, str) else None

    def ref(self, attr: int) -> int | None:
        """The offset of the entry an attribute refers to (type, origin, specification)."""
        value = self.attrs.get(attr)
        return value if isinstance(value, int) and attr in _REFERENCES else None

    def number(self, attr: int) -> int | None:
        value = self.attrs.get(attr)
        return value if isinstance(value, int) and not isinstance(value, bool) else None


@record(frozen=False)
class DebugInfo:
    """The entries of every unit, by offset; the units' own entries; and where code and data
    live: the entry of each concrete function (by its `DW_AT_low_pc`) and each variable with a
    fixed address (by its `DW_AT_location`); and the places the compiler recorded calls at (each
    call site's call and return addresses: the compiler's own list of the calls it emitted)."""

    dies: dict[int, Die]
    units: list[int]
    functions: dict[Place, list[int]]
    variables: dict[Place, list[int]]
    little_endian: bool = True
    calls: set[Place] = field(default_factory=set)

    def die(self, offset: int | None) -> Die | None:
        return None if offset is None else self.dies.get(offset)


class _Relocated:
    """The bytes of one debug section with its relocations: a field's value is what it holds plus
    the relocation's symbol value and addend; `place` names the section a relocated address is in."""

    def __init__(self, obj: ElfObject, sec: Section | None) -> None:
        self.data = sec.data if sec is not None else b""
        self.order: Literal["little", "big"] = "little" if obj.little_endian else "big"
        self.relocs = {r.offset: r for r in sec.relocs} if sec is not None else {}
        self.symbols = obj.symbols

    def value(self, offset: int, size: int) -> int:
        raw = int.from_bytes(self.data[offset: offset + size], self.order)
        r = self.relocs.get(offset)
        if r is None:
            return raw
        sym = self.symbols[r.sym]
        return raw + r.addend + (sym.value if sym.is_defined else 0)

    def place(self, offset: int, size: int) -> Place | None:
        r = self.relocs.get(offset)
        if r is None:
            return None
        sym = self.symbols[r.sym]
        if not sym.is_defined:
            return None
        raw = int.from_bytes(self.data[offset: offset + size], self.order)
        return sym.shndx, sym.value + r.addend + raw


def leb128(data: bytes, pos: int, signed: bool = False) -> tuple[int, int]:
    """The LEB128 number at `pos` and the offset after it (DWARF 5, section 7.6); an IndexError when the
    data ends inside it."""
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return (value - (1 << shift) if signed and byte & 0x40 else value), pos


_uleb = leb128


@record(frozen=False, slots=True)
class _Abbrev:
    tag: int
    has_children: bool
    specs: list[tuple[int, int, int]]  # (attribute, form, implicit constant)


def _abbrevs(data: bytes, offset: int) -> dict[int, _Abbrev]:
    """The abbreviation table that starts at `offset` of `.debug_abbrev`."""
    table: dict[int, _Abbrev] = {}
    pos = offset
    while True:
        code, pos = _uleb(data, pos)
        if code == 0:
            return table
        tag, pos = _uleb(data, pos)
        has_children = bool(data[pos])
        pos += 1
        specs = []
        while True:
            attr, pos = _uleb(data, pos)
            form, pos = _uleb(data, pos)
            implicit = 0
            if form == 0x21:  # implicit_const: the value is in the abbreviation
                implicit, pos = leb128(data, pos, signed=True)
            if attr == 0 and form == 0:
                break
            specs.append((attr, form, implicit))
        table[code] = _Abbrev(tag, has_children, specs)


_ADDRESS_SIZED, _OFFSET_SIZED = -1, -2
# fixed-size forms: form -> size in bytes, or the unit's address or offset size
_FIXED = {0x01: _ADDRESS_SIZED, 0x05: 2, 0x06: 4, 0x07: 8, 0x0B: 1, 0x0C: 1, 0x0E: _OFFSET_SIZED,
          0x10: _OFFSET_SIZED, 0x11: 1, 0x12: 2, 0x13: 4, 0x14: 8, 0x17: _OFFSET_SIZED, 0x19: 0, 0x1C: 4,
          0x1D: _OFFSET_SIZED, 0x1E: 16, 0x1F: _OFFSET_SIZED, 0x20: 8, 0x24: 8, 0x25: 1, 0x26: 2, 0x27: 3,
          0x28: 4, 0x29: 1, 0x2A: 2, 0x2B: 3, 0x2C: 4, 0x1F20: _OFFSET_SIZED, 0x1F21: _OFFSET_SIZED}
_ULEB_FORMS = frozenset({0x0F, 0x15, 0x1A, 0x1B, 0x22, 0x23, 0x1F01, 0x1F02})
_BLOCK_FORMS = {0x0A: 1, 0x03: 2, 0x04: 4, 0x09: 0, 0x18: 0}  # length field size (0: uleb)
_STRX = frozenset({0x1A, 0x25, 0x26, 0x27, 0x28, 0x1F02})
_ADDRX = frozenset({0x1B, 0x29, 0x2A, 0x2B, 0x2C, 0x1F01})
_REF_UNIT = frozenset({0x11, 0x12, 0x13, 0x14, 0x15})


class _Sections:
    """The debug sections one object's units are read from."""

    def __init__(self, obj: ElfObject, info: Section) -> None:
        def sec(name: str) -> _Relocated:
            return _Relocated(obj, obj.section_by_name(name))
        self.path = obj.path
        self.info = _Relocated(obj, info)
        self.abbrev = sec(".debug_abbrev").data
        self.str = sec(".debug_str").data
        self.line_str = sec(".debug_line_str").data
        self.str_offsets = sec(".debug_str_offsets")
        self.addr = sec(".debug_addr")


@record(frozen=False, slots=True)
class _Unit:
    start: int
    version: int
    offset_size: int
    address_size: int
    str_offsets_base: int = 8
    addr_base: int = 8


def debug_info(obj: ElfObject) -> DebugInfo | None:
    """The object's debugging entries, or None when it has no `.debug_info`. A malformed section
    is an `InputError` naming the object."""
    sec = obj.section_by_name(".debug_info")
    if sec is None or not sec.data:
        return None
    out = DebugInfo({}, [], {}, {}, obj.little_endian)
    sections = _Sections(obj, sec)
    pos = 0
    try:
        while pos < len(sec.data):
            pos = _read_unit(sections, pos, out)
    except (IndexError, KeyError, ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{obj.path}: .debug_info is malformed near offset {pos:#x} ({type(err).__name__})") from err
    return out


def _read_unit(s: _Sections, start: int, out: DebugInfo) -> int:
    """Read the unit at `start` into `out`; the offset of the next unit."""
    data = s.info.data
    order = s.info.order
    length = int.from_bytes(data[start: start + 4], order)
    pos, offset_size = start + 4, 4
    if length == 0xFFFFFFFF:
        length, pos, offset_size = int.from_bytes(data[pos: pos + 8], order), pos + 8, 8
    end = pos + length
    if end > len(data):
        raise ValueError("unit past the end of the section")
    version = int.from_bytes(data[pos: pos + 2], order)
    pos += 2
    if not 2 <= version <= 5:
        raise InputError(f"{s.path}: .debug_info unit at {start:#x} has version {version}, not DWARF 2 to 5")
    if version >= 5:
        unit_type, address_size = data[pos], data[pos + 1]
        pos += 2
        abbrev_offset = s.info.value(pos, offset_size)
        pos += offset_size
        if unit_type in (0x02, 0x06):  # type unit: signature and type offset
            pos += 8 + offset_size
        elif unit_type in (0x04, 0x05):  # skeleton and split units: a dwo id
            pos += 8
    else:
        abbrev_offset = s.info.value(pos, offset_size)
        address_size = data[pos + offset_size]
        pos += offset_size + 1
    unit = _Unit(start, version, offset_size, address_size)
    abbrevs = _abbrevs(s.abbrev, abbrev_offset)
    _read_entries(s, unit, abbrevs, pos, end, out)
    return end


def _read_entries(s: _Sections, unit: _Unit, abbrevs: dict[int, _Abbrev], pos: int, end: int,
                  out: DebugInfo) -> None:
    """The entries of one unit, between its header and `end`, into `out`."""
    data = s.info.data
    dies = out.dies
    stack: list[Die] = []
    pending: list[tuple[Die, int, int, int]] = []  # (entry, attribute, form, raw) resolved after the unit's bases
    placed: list[Die] = []  # entries with an address kept (or an index to one), indexed once resolved
    while pos < end:
        offset = pos
        code, pos = _uleb(data, pos)
        if code == 0:
            if stack:
                stack.pop()
            continue
        abbrev = abbrevs[code]
        die = Die(offset, abbrev.tag, {}, stack[-1].offset if stack else -1)
        pos = _read_attributes(s, unit, abbrev, die, pos, pending)
        if AT_LOW_PC in die.attrs or AT_LOCATION in die.attrs or abbrev.tag in _CALL_SITES:
            placed.append(die)
        dies[offset] = die
        if stack:
            stack[-1].children.append(offset)
        else:
            out.units.append(offset)
        if abbrev.tag == TAG_COMPILE_UNIT:
            unit.str_offsets_base = _int(die.attrs.get(AT_STR_OFFSETS_BASE), 8)
            unit.addr_base = _int(die.attrs.get(AT_ADDR_BASE), 8)
        if abbrev.has_children:
            stack.append(die)
    for die, attr, form, raw in pending:
        _resolve(s, unit, die, attr, form, raw)
    for die in placed:
        _index_place(die, out)


def _read_attributes(s: _Sections, unit: _Unit, abbrev: _Abbrev, die: Die, pos: int,
                     pending: list[tuple[Die, int, int, int]]) -> int:
    """Read (or skip) one entry's attribute values at `pos`, keeping those in `KEPT`; the offset after."""
    data = s.info.data
    attrs = die.attrs
    for attr, form, implicit in abbrev.specs:
        keep = attr in KEPT
        if form == 0x16:  # indirect: the form comes first
            form, pos = _uleb(data, pos)
        size = _FIXED.get(form)
        if size is not None:
            if size < 0:
                size = unit.address_size if size == _ADDRESS_SIZED else unit.offset_size
            if keep:
                _keep_fixed(s, unit, die, attr, form, pos, size, pending)
            pos += size
        elif form in _ULEB_FORMS:
            value, pos = _uleb(data, pos)
            if keep:
                if form in _STRX or form in _ADDRX:  # resolved once the unit's bases are known
                    attrs[attr] = None
                    pending.append((die, attr, form, value))
                else:
                    attrs[attr] = value + unit.start if form == 0x15 else value
        elif form == 0x0D:  # sdata
            value, pos = leb128(data, pos, signed=True)
            if keep:
                attrs[attr] = value
        elif form == 0x08:  # string
            stop = data.index(b"\0", pos)
            if keep:
                attrs[attr] = data[pos:stop].decode("utf-8", "replace")
            pos = stop + 1
        elif form in _BLOCK_FORMS:
            width = _BLOCK_FORMS[form]
            if width:
                blen, pos = int.from_bytes(data[pos: pos + width], s.info.order), pos + width
            else:
                blen, pos = _uleb(data, pos)
            if keep:
                _keep_block(s, unit, die, attr, pos, blen, pending)
            pos += blen
        elif form == 0x21:
            if keep:
                attrs[attr] = implicit
        else:
            raise InputError(f"{s.path}: .debug_info uses form {form:#x} at {die.offset:#x}, which klpdiff "
                             "cannot read")
    return pos


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) else default


def _keep_fixed(s: _Sections, unit: _Unit, die: Die, attr: int, form: int, pos: int, size: int,
                pending: list[tuple[Die, int, int, int]]) -> None:
    """Store a fixed-size attribute value: references made absolute, strings looked up."""
    info = s.info
    if form == 0x19:  # flag_present
        die.attrs[attr] = True
    elif form == 0x0C:
        die.attrs[attr] = bool(info.data[pos])
    elif form in _REF_UNIT:  # unit-relative: never relocated
        die.attrs[attr] = int.from_bytes(info.data[pos: pos + size], info.order) + unit.start
    elif form == 0x10:  # ref_addr: an offset in .debug_info
        die.attrs[attr] = info.value(pos, size)
    elif form == 0x0E:
        die.attrs[attr] = c_string(s.str, info.value(pos, size))
    elif form == 0x1F:
        die.attrs[attr] = c_string(s.line_str, info.value(pos, size))
    elif form in _STRX or form in _ADDRX:  # resolved once the unit's bases are known
        die.attrs[attr] = None
        pending.append((die, attr, form, info.value(pos, size)))
    elif form == 0x01:
        place = info.place(pos, size)
        if place is not None and attr in _CODE_ADDRESSES:
            die.attrs[attr] = place
        elif place is None:
            die.attrs[attr] = info.value(pos, size)
    elif size in (1, 2, 4, 8):
        die.attrs[attr] = info.value(pos, size)


def _keep_block(s: _Sections, unit: _Unit, die: Die, attr: int, pos: int, length: int,
                pending: list[tuple[Die, int, int, int]]) -> None:
    """A location expression: kept when it is one address (DW_OP_addr, DW_OP_addrx) or, for a
    member's offset, DW_OP_plus_uconst; other expressions are not a fixed place."""
    if length == 0:
        return
    data = s.info.data
    op = data[pos]
    if attr == AT_DATA_MEMBER_LOCATION and op == _OP_PLUS_UCONST:
        die.attrs[attr] = _uleb(data, pos + 1)[0]
    elif attr == AT_LOCATION and op == _OP_ADDR and length == 1 + unit.address_size:
        place = s.info.place(pos + 1, unit.address_size)
        if place is not None:
            die.attrs[attr] = place
    elif attr == AT_LOCATION and op in (_OP_ADDRX, _OP_GNU_ADDR_INDEX):
        index, after = _uleb(data, pos + 1)
        if after == pos + length:
            die.attrs[attr] = None  # resolved once the unit's address table base is known
            pending.append((die, attr, 0x1B, index))


def _resolve(s: _Sections, unit: _Unit, die: Die, attr: int, form: int, raw: int) -> None:
    """An index form, once the unit's bases are known: a string from the string offsets table, an
    address from the address table."""
    if form in _STRX:
        at = unit.str_offsets_base + raw * unit.offset_size
        die.attrs[attr] = c_string(s.str, s.str_offsets.value(at, unit.offset_size))
    else:
        place = s.addr.place(unit.addr_base + raw * unit.address_size, unit.address_size)
        if place is not None:
            die.attrs[attr] = place


def _index_place(die: Die, out: DebugInfo) -> None:
    """Index a function by its `DW_AT_low_pc`, a variable by its one-address `DW_AT_location`."""
    low_pc, location = die.attrs.get(AT_LOW_PC), die.attrs.get(AT_LOCATION)
    if isinstance(low_pc, tuple) and die.tag == TAG_SUBPROGRAM:
        out.functions.setdefault(low_pc, []).append(die.offset)
    if isinstance(location, tuple):
        out.variables.setdefault(location, []).append(die.offset)
    if die.tag in _CALL_SITES:
        for attr in _CODE_ADDRESSES:
            pc = die.attrs.get(attr)
            if isinstance(pc, tuple):
                out.calls.add(pc)

