"""Rule-driven classification of sections and symbols, shared by the stages.

In: an `ElfObject` and a `Ruleset`. Out: `Roles` — which sections are ignored,
special (split per entry), markers, string-filtered, carried whole, plain or unknown
(no rule claims it), and the
symbol predicates (fresh, anonymous, static local, child → parent) the rules
define. Nothing here names a section: every answer comes from a rule.
"""

from __future__ import annotations

from dataclasses import field
from enum import Enum

from ..core.records import record
from ..elf.model import (
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
from ..lang.views import SectionEnv, SectionView, section_key, symbol_env, symbol_key
from ..ruleset.compiled import Marker, Ruleset, SpecialSection, StringFilter

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


@record
class SectionClaim:
    """The role a rule gave a section, and that rule."""

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


@record(frozen=False)
class Roles:
    """Each section's role and each symbol's correlation class in one object."""

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


@record(frozen=False)
class Seen:
    """What classification found for sections and symbols by everything its rules can ask of them, to
    classify the other object of a pair: most of its sections and symbols are the same."""

    sections: dict[tuple[str, int, int, int], tuple[bool, bool, SectionClaim]] = field(default_factory=dict)
    symbols: dict[tuple[object, ...], tuple[bool, bool, bool]] = field(default_factory=dict)


def classify(obj: ElfObject, rs: Ruleset, seen: Seen | None = None) -> Roles:
    """The role of each section and the correlation classes of each symbol (`seen`: what the other
    object of the pair showed, shared: a section or symbol the rules see alike gets the same answer)."""
    seen = seen if seen is not None else Seen()
    roles = Roles()
    for sec in obj.sections:
        if not classifiable(sec):
            continue
        key = section_key(sec)
        known = seen.sections.get(key)
        if known is None:
            env = SectionEnv(SectionView(sec))
            known = seen.sections[key] = (rs.offset_free.any(env), not sec.is_text and rs.by_object.any(env),
                                          section_role(rs, sec, env))
        offset_free, by_object, claim = known
        if offset_free:
            roles.offset_free.add(sec.index)
        if by_object:
            roles.by_object.add(sec.index)
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
    for sym in obj.symbols:
        if not sym.index or sym.type == STT_SECTION:
            continue
        sym_key = symbol_key(obj, sym)
        known_sym = seen.symbols.get(sym_key)
        if known_sym is None:
            sym_env = symbol_env(obj, sym)
            anonymous = rs.anonymous.any(sym_env)
            named = not anonymous and sym.type != STT_FILE  # what correlation classes apply to
            fresh = named and rs.fresh.any(sym_env)
            static_local = named and not fresh and rs.static_local is not None and bool(rs.static_local(sym_env))
            known_sym = seen.symbols[sym_key] = (anonymous, fresh, static_local)
        anonymous, fresh, static_local = known_sym
        if anonymous:
            roles.anonymous.add(sym.index)
        elif fresh:
            roles.fresh.add(sym.index)
        elif static_local:
            roles.static_local.add(sym.index)
    return roles
