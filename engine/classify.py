"""Rule-driven classification of sections and symbols, shared by the stages.

In: an `ElfObject` and a `Ruleset`. Out: `Roles` — which sections are ignored,
special (split per entry), markers, string-filtered, carried whole, plain or unknown
(no rule claims it), and the
symbol predicates (fresh, anonymous, static local, child → parent) the rules
define. Nothing here names a section: every answer comes from a rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .model import (
    SHT_GROUP,
    SHT_RELA,
    SHT_STRTAB,
    SHT_SYMTAB,
    SHT_SYMTAB_SHNDX,
    STT_FILE,
    STT_SECTION,
    ElfObject,
    Section,
)
from .ruleset import Marker, Ruleset, SpecialSection, StringFilter
from .views import SectionEnv, SectionView, symbol_env

_TABLE_TYPES = {SHT_RELA, SHT_SYMTAB, SHT_STRTAB, SHT_SYMTAB_SHNDX, SHT_GROUP}


class SectionRole(Enum):
    """What the rules make of a section; the first rule that claims it wins, in this order."""

    IGNORED = "ignored"            # sections.yaml ignore: never compared nor copied
    REGENERATED = "regenerated"    # arch.yaml ftrace.regenerate: rebuilt for the included functions
    CARRIED = "carried"            # sections.yaml carry: always copied whole
    MARKER = "marker"              # sections.yaml markers: patch-author macro sections
    STRINGS = "strings"            # sections.yaml strings: filtered string by string
    SPECIAL = "special"            # special-sections.yaml: split into entries
    PLAIN = "plain"                # sections.yaml plain: ordinary code and data
    UNKNOWN = "unknown"            # no rule: refused when it touches included code


@dataclass(frozen=True)
class SectionClaim:
    role: SectionRole
    origin: str  # the rule's file:line, or "" for UNKNOWN
    rule: Marker | StringFilter | SpecialSection | None = None  # for MARKER, STRINGS and SPECIAL


def section_role(rs: Ruleset, sec: Section, env: SectionEnv | None = None) -> SectionClaim:
    """The role of one section and the rule that gave it."""
    env = env or SectionEnv(SectionView(sec))
    hit = rs.ignore.matching(env)
    if hit is not None:
        return SectionClaim(SectionRole.IGNORED, str(hit.origin))
    if sec.name == rs.arch.ftrace.regenerate:
        return SectionClaim(SectionRole.REGENERATED, str(rs.arch_origin))
    hit = rs.carry.matching(env)
    if hit is not None:
        return SectionClaim(SectionRole.CARRIED, str(hit.origin))
    marker = next((m for m in rs.markers if m.section.search(sec.name)), None)
    if marker is not None:
        return SectionClaim(SectionRole.MARKER, str(marker.origin), marker)
    string_filter = next((f for f in rs.string_filters if f.section.search(sec.name)), None)
    if string_filter is not None:
        return SectionClaim(SectionRole.STRINGS, str(string_filter.origin), string_filter)
    spec = rs.special_for(sec.name) or rs.companion_owner(sec.name)
    if spec is not None:
        return SectionClaim(SectionRole.SPECIAL, str(spec.origin), spec)
    hit = rs.plain.matching(env)
    if hit is not None:
        return SectionClaim(SectionRole.PLAIN, str(hit.origin))
    return SectionClaim(SectionRole.UNKNOWN, "")


def classifiable(sec: Section) -> bool:
    """Sections that hold content (not the ELF tables: symbols, strings, relocations, groups)."""
    return sec.index != 0 and sec.type not in _TABLE_TYPES


@dataclass
class Roles:
    ignored: set[int] = field(default_factory=set)
    special: dict[int, SpecialSection] = field(default_factory=dict)
    markers: dict[int, Marker] = field(default_factory=dict)
    string_filtered: dict[int, StringFilter] = field(default_factory=dict)
    carried: set[int] = field(default_factory=set)
    plain: set[int] = field(default_factory=set)
    unknown: set[int] = field(default_factory=set)
    offset_free: set[int] = field(default_factory=set)
    by_object: set[int] = field(default_factory=set)  # plain data copied object by object
    regenerated: set[int] = field(default_factory=set)
    fresh: set[int] = field(default_factory=set)
    anonymous: set[int] = field(default_factory=set)
    static_local: set[int] = field(default_factory=set)

    def is_plain(self, shndx: int) -> bool:
        """A section that holds ordinary code or data (compared and included by symbol)."""
        return shndx in self.plain


def classify(obj: ElfObject, rs: Ruleset) -> Roles:
    roles = Roles()
    for sec in obj.sections:
        if not classifiable(sec):
            continue
        env = SectionEnv(SectionView(sec))
        if rs.offset_free.any(env):
            roles.offset_free.add(sec.index)
        if not sec.is_text and rs.by_object.any(env):
            roles.by_object.add(sec.index)
        claim = section_role(rs, sec, env)
        role, rule = claim.role, claim.rule
        if role is SectionRole.IGNORED:
            roles.ignored.add(sec.index)
        elif role is SectionRole.REGENERATED:
            roles.regenerated.add(sec.index)
        elif role is SectionRole.CARRIED:
            roles.carried.add(sec.index)
        elif role is SectionRole.MARKER:
            assert isinstance(rule, Marker)
            roles.markers[sec.index] = rule
        elif role is SectionRole.STRINGS:
            assert isinstance(rule, StringFilter)
            roles.string_filtered[sec.index] = rule
        elif role is SectionRole.SPECIAL:
            assert isinstance(rule, SpecialSection)
            roles.special[sec.index] = rule
        elif role is SectionRole.PLAIN:
            roles.plain.add(sec.index)
        else:
            roles.unknown.add(sec.index)
    envs = {sym.index: symbol_env(obj, sym) for sym in obj.symbols if sym.index and sym.type != STT_SECTION}
    roles.anonymous = {index for index, env in envs.items() if rs.anonymous.any(env)}
    for index, sym_env in envs.items():
        if index in roles.anonymous or obj.symbols[index].type == STT_FILE:
            continue
        if rs.fresh.any(sym_env):
            roles.fresh.add(index)
        elif rs.static_local is not None and rs.static_local(sym_env):
            roles.static_local.add(index)
    return roles
