"""What comparing one pair of objects needs, shared by the compare stage (compare.py) and its
`__LINE__` decisions (linenoise.py).

In: both objects, their `Roles`, the `Correlation`, the `Ruleset`, their relocation indexes and
line tables. Out: `Pair`, which carries them with what is found once per pair and reused (line
moves, places, moved sections, call sites), and `SymbolDiff`, how one symbol differs from its twin.
"""

from __future__ import annotations

from dataclasses import field

from ..core.records import record
from ..elf.dwarf import Place
from ..elf.linetables import LineTable
from ..elf.model import ElfObject, RelocIndex
from ..ruleset.compiled import Ruleset
from .classify import Roles
from .correlate import Correlation


@record(frozen=False)
class Pair:
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


@record(frozen=False)
class SymbolDiff:
    """How a symbol differs from its twin: the first difference (None: identical), and the
    differences that may be line numbers — differing bytes (relocated fields masked) and the
    strings two relocations reach, as offsets in the symbol."""

    reason: str | None = None
    byte_offsets: list[int] = field(default_factory=list)
    strings: list[tuple[int, bytes, bytes]] = field(default_factory=list)  # (offset, patched, orig)
    final: bool = False  # a difference no line number explains
