"""Rule-driven classification of sections and symbols, shared by the stages.

In: an `ElfObject` and a `Ruleset`. Out: `Roles` — which sections are ignored,
special (split per entry), markers, string-filtered or carried whole, and the
symbol predicates (fresh, anonymous, static local, child → parent) the rules
define. Nothing here names a section: every answer comes from a rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .model import SHT_RELA, SHT_STRTAB, SHT_SYMTAB, SHT_SYMTAB_SHNDX, STT_FILE, STT_SECTION, ElfObject, Symbol
from .ruleset import Ruleset, SpecialSection, StringFilter
from .views import SectionEnv, SectionView, symbol_env

_TABLE_TYPES = {SHT_RELA, SHT_SYMTAB, SHT_STRTAB, SHT_SYMTAB_SHNDX}


@dataclass
class Roles:
    ignored: set[int] = field(default_factory=set)
    special: dict[int, SpecialSection] = field(default_factory=dict)
    markers: dict[int, str] = field(default_factory=dict)
    string_filtered: dict[int, StringFilter] = field(default_factory=dict)
    carried: set[int] = field(default_factory=set)
    offset_free: set[int] = field(default_factory=set)
    regenerated: set[int] = field(default_factory=set)
    fresh: set[int] = field(default_factory=set)
    anonymous: set[int] = field(default_factory=set)
    static_local: set[int] = field(default_factory=set)

    def is_plain(self, shndx: int) -> bool:
        """A section that holds ordinary code or data (compared and included by symbol)."""
        return not (shndx in self.ignored or shndx in self.special or shndx in self.markers
                    or shndx in self.string_filtered or shndx in self.regenerated)


def normalize_name(rs: Ruleset, name: str) -> str:
    for pattern, replace in rs.normalize:
        name = pattern.sub(replace, name)
    return name


def parent_name(rs: Ruleset, name: str) -> str | None:
    for pattern in rs.child:
        m = pattern.match(name)
        if m:
            return m.group("parent")
    return None


def child_test(rs: Ruleset) -> Callable[[Symbol], bool]:
    """Is a symbol a compiler-split part (.cold, .part) of another function?"""
    return lambda sym: parent_name(rs, sym.name) is not None


def classify(obj: ElfObject, rs: Ruleset) -> Roles:
    roles = Roles()
    for sec in obj.sections:
        if sec.index == 0 or sec.type in _TABLE_TYPES:
            continue
        env = SectionEnv(SectionView(sec))
        if any(pred(env) for pred in rs.offset_free):
            roles.offset_free.add(sec.index)
        if any(pred(env) for pred in rs.ignore):
            roles.ignored.add(sec.index)
            continue
        if sec.name == rs.arch.ftrace.regenerate:
            roles.regenerated.add(sec.index)
            continue
        if any(pred(env) for pred in rs.carry):
            roles.carried.add(sec.index)
            continue
        marker = next((effect for pattern, effect in rs.markers if pattern.search(sec.name)), None)
        if marker is not None:
            roles.markers[sec.index] = marker
            continue
        string_filter = next((f for f in rs.string_filters if f.section.search(sec.name)), None)
        if string_filter is not None:
            roles.string_filtered[sec.index] = string_filter
            continue
        spec = rs.special_for(sec.name)
        if spec is not None:
            roles.special[sec.index] = spec
            continue
        if rs.special and _is_companion(rs, sec.name):
            roles.special[sec.index] = _companion_owner(rs, sec.name)
    roles.anonymous = anonymous_symbols(rs, obj)
    for sym in obj.symbols:
        if sym.index == 0 or sym.type in (STT_FILE, STT_SECTION) or sym.index in roles.anonymous:
            continue
        sym_env = symbol_env(obj, sym)
        if any(pred(sym_env) for pred in rs.fresh):
            roles.fresh.add(sym.index)
        elif rs.static_local is not None and rs.static_local(sym_env):
            roles.static_local.add(sym.index)
    return roles


def _is_companion(rs: Ruleset, name: str) -> bool:
    return any(s.rule.companion is not None and s.rule.companion.section == name for s in rs.special)


def _companion_owner(rs: Ruleset, name: str) -> SpecialSection:
    return next(s for s in rs.special if s.rule.companion is not None and s.rule.companion.section == name)


def anonymous_symbols(rs: Ruleset, obj: ElfObject) -> set[int]:
    """Symbols the rules say are never the meaning of a reference (local labels and the like)."""
    out = set()
    for sym in obj.symbols:
        if sym.index and sym.type != STT_SECTION:
            env = symbol_env(obj, sym)
            if any(pred(env) for pred in rs.anonymous):
                out.add(sym.index)
    return out
