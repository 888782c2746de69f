"""The compiled rule set the engine uses: what every rule kind becomes once loaded.

In: built by compile.py from validated rule models (schema.py), or read back from the
rule cache (cache.py). Out: a `Ruleset` whose rules the stages read and never change (it keeps one
memo of its own: the answers of `normalize_name`, a pure function of the rules); every compiled
rule keeps the `Origin` (file:line) it came from. Nothing here imports the YAML reader, the
expression parser or pydantic: a cached rule set loads with the standard library alone.
"""

from __future__ import annotations

import re
from dataclasses import field
from functools import cached_property
from typing import Any

from ..core.errors import Origin, RuleError
from ..core.records import record
from ..lang.expr import Compiled, Message
from ..lang.template import Template
from .schema import ArchRule, RelocType, SpecialSectionRule

# the rule records the compiled set hands on as they are: the differ's stages import them from here
from .schema import FieldRule as FieldRule
from .schema import LayoutRule as LayoutRule
from .schema import MarkerEffect as MarkerEffect


def always(_: Any) -> bool:
    return True


def never(_: Any) -> bool:
    return False


@record(eq=False)
class NameMatcher:
    """A rule's section name: the exact name, or a regular expression when it starts with ^."""

    name: str
    pattern: re.Pattern[str] | None = None

    def __call__(self, name: str) -> bool:
        return self.pattern.search(name) is not None if self.pattern is not None else name == self.name


@record(eq=False)
class GroupReader:
    """The named groups a name pattern captures from a name (none without a pattern)."""

    pattern: re.Pattern[str] | None

    def __call__(self, name: str) -> dict[str, str]:
        m = self.pattern.search(name) if self.pattern is not None else None
        return {k: v for k, v in m.groupdict().items() if v is not None} if m else {}


def no_match(_: Any) -> int:
    return -1


@record(eq=False, frozen=False)
class Predicate:
    """One predicate of a rule list (sections.yaml, correlation.yaml), with its text and origin."""

    text: str
    test: Compiled
    origin: Origin


@record(eq=False, frozen=False)
class PredicateList:
    """A rule list's predicates in load order, and `first`: one function that gives the index of the
    first predicate that holds for an environment, or -1 (compiled once every file is loaded)."""

    items: list[Predicate] = field(default_factory=list)
    first: Compiled = no_match

    def __len__(self) -> int:
        return len(self.items)

    def matching(self, env: Any) -> Predicate | None:
        index: int = self.first(env)
        return self.items[index] if index >= 0 else None

    def any(self, env: Any) -> bool:
        return bool(self.first(env) >= 0)


@record(eq=False, frozen=False)
class CompiledWhen:
    """A compiled `when:` predicate with its message and origin."""

    test: Compiled
    message: Message
    origin: Origin


@record(eq=False, frozen=False)
class CompiledSiteReloc:
    """A compiled relocation of a site rewrite (its symbol as a message template)."""

    offset: int
    type_name: str
    symbol: Message  # entry env -> symbol name
    addend: int
    origin: Origin
    type: int = 0  # the number, resolved once every file is loaded


@record(eq=False, frozen=False)
class CompiledRewrite:
    """A compiled site rewrite: templates to match and write, and its relocations."""

    site: str
    at: int
    match: Template
    replace: Template
    relocs: list[CompiledSiteReloc]
    message: Message
    origin: Origin


@record(eq=False, frozen=False)
class SpecialSection:
    """A compiled special-section rule: its name matcher and its keep/drop/refuse predicates."""

    rule: SpecialSectionRule
    origin: Origin
    matches: NameMatcher
    keep: Compiled | None
    drop: list[CompiledWhen]
    refuse: list[CompiledWhen]
    groups: GroupReader = field(default_factory=lambda: GroupReader(None))  # named groups of the name pattern
    rewrites: list[CompiledRewrite] = field(default_factory=list)

    @property
    def struct(self) -> str:
        return self.rule.struct

    @property
    def boot_only(self) -> bool:
        """Only vmlinux's boot code applies this table: its entries are never copied into a module."""
        return self.rule.applied_by == "vmlinux-boot"


@record
class LivepatchRewrite:
    """How a relocation type is written when the livepatch core resolves it (the rules' `as_livepatch`):
    as `type`, the instruction at it rewritten from `match` to `replace` (both None: left as it is)."""

    type: int
    match: Template | None
    replace: Template | None
    origin: Origin


@record
class SplitLoad:
    """A line load in two instructions, at most `apart` bytes between them: one of `highs` (letter
    `n`) sets register `r`, one of `lows` adds its signed `s` bits to the same `r`. The value is
    n << shift, plus s."""

    highs: list[Template]
    lows: list[Template]
    shift: int
    apart: int


@record(eq=False, frozen=False)
class LineNoise:
    """What `__LINE__` noise looks like: the loads of an immediate (arch rules), and, for objects
    without line tables, the calls such a load must precede and the strings that carry a line.
    The calls' regular expressions are kept as text and compiled when first used: most diffs
    never ask (compiling the sinks alone took a third of reading a rule set from the cache)."""

    loads: list[Template] = field(default_factory=list)  # letter `n`: the immediate
    insn_align: int = 1
    split: list[SplitLoad] = field(default_factory=list)
    loads_origin: Origin | None = None
    sinks_text: str | None = None
    skip_text: str | None = None
    companions_text: str | None = None
    reach: int = 1
    calls_origin: Origin | None = None
    strings: list[re.Pattern[str]] = field(default_factory=list)
    strings_origin: Origin | None = None

    @cached_property
    def sinks(self) -> re.Pattern[str] | None:
        return re.compile(self.sinks_text) if self.sinks_text is not None else None

    @cached_property
    def skip(self) -> re.Pattern[str] | None:
        return re.compile(self.skip_text) if self.skip_text is not None else None

    @cached_property
    def companions(self) -> re.Pattern[str] | None:
        return re.compile(self.companions_text) if self.companions_text is not None else None


@record(eq=False, frozen=False)
class RelocRule:
    """A compiled `RelocMatchRule` (a relocation refusal or a local call) or `CallFormRule` (a call
    form: its test always holds). `types` are the relocation types' numbers once the whole rule set
    is loaded."""

    type_names: tuple[str, ...]
    pattern: Template | None         # the instruction at the relocation (`insn`)
    unless_next: Template | None     # the instruction after it, which must not match
    test: Compiled
    message: Message
    origin: Origin
    types: frozenset[int] = frozenset()
    insn_at: int = 0  # where `pattern` starts, relative to the relocation offset

    def fits(self, code: bytes, offset: int) -> bool:
        """Does the instruction at relocation offset `offset` of `code` have the rule's form?"""
        if self.pattern is None:
            return True
        start = offset + self.insn_at
        if not self.pattern.fits(code, start):
            return False
        return self.unless_next is None or not self.unless_next.fits(code, start + len(self.pattern))


@record(eq=False)
class Branch:
    """A compiled branch form (relocations.yaml `branches`): its template (letter d: the displacement),
    the bytes per displacement unit, and whether it counts from the instruction's end."""

    template: Template
    scale: int
    from_end: bool
    align: int
    origin: Origin

    def target(self, code: bytes, at: int, little_endian: bool) -> int | None:
        """Where the branch at `code[at:]` goes, relative to `code`'s start; None unless it matches."""
        raw = self.template.number(code, at, "d", little_endian)
        if raw is None:
            return None
        bits = self.template.letters["d"]
        if raw >= 1 << (bits - 1):
            raw -= 1 << bits
        return at + (len(self.template) if self.from_end else 0) + raw * self.scale


@record(eq=False, frozen=False)
class StringFilter:
    """A compiled string filter: the section it applies to, its predicate and rewrite."""

    section: re.Pattern[str]
    keep: Compiled
    rewrite: tuple[re.Pattern[str], str] | None
    origin: Origin


@record(eq=False, frozen=False)
class Marker:
    """A compiled marker: the patch-author section it recognises and what it means."""

    section: re.Pattern[str]
    effect: MarkerEffect
    origin: Origin
    entry_size: int | None = None
    function_offset: int = 0
    symbol: re.Pattern[str] | None = None


@record(eq=False, frozen=False)
class Ruleset:
    """Every rule that applies to one architecture, compiled, in load order."""

    arch: ArchRule
    arch_origin: Origin
    reloc_types: dict[int, RelocType] = field(default_factory=dict)
    livepatch_forms: dict[int, LivepatchRewrite] = field(default_factory=dict)  # by relocation type
    special: list[SpecialSection] = field(default_factory=list)
    line_noise: LineNoise = field(default_factory=LineNoise)
    refusals: list[CompiledWhen] = field(default_factory=list)
    reloc_refusals: list[RelocRule] = field(default_factory=list)
    local_calls: list[RelocRule] = field(default_factory=list)
    call_forms: list[RelocRule] = field(default_factory=list)
    branches: list[Branch] = field(default_factory=list)
    normalize: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    # matches every name some `normalize` pattern matches (None: no such pattern could be built); most
    # names match none, and one search tells
    normalize_any: re.Pattern[str] | None = None
    fresh: PredicateList = field(default_factory=PredicateList)
    static_local: Compiled | None = None
    child: list[re.Pattern[str]] = field(default_factory=list)
    prefix: list[re.Pattern[str]] = field(default_factory=list)
    anonymous: PredicateList = field(default_factory=PredicateList)
    plain: PredicateList = field(default_factory=PredicateList)
    ignore: PredicateList = field(default_factory=PredicateList)
    carry: PredicateList = field(default_factory=PredicateList)
    offset_free: PredicateList = field(default_factory=PredicateList)
    by_object: PredicateList = field(default_factory=PredicateList)
    markers: list[Marker] = field(default_factory=list)
    string_filters: list[StringFilter] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    special_names: _SpecialNames | None = field(default=None, repr=False, compare=False)
    # memo of normalize_name, a pure function of `normalize` (the rules themselves never change)
    normalized: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def normalize_name(self, name: str) -> str:
        """The name with the rules' normalisations (correlation.yaml) applied in order, remembered: both
        objects of a pair, and every pair a process diffs, ask for the same names."""
        known = self.normalized.get(name)
        if known is None:
            known = name
            if self.normalize_any is None or self.normalize_any.search(name):
                for pattern, replace in self.normalize:
                    known = pattern.sub(replace, known)
            self.normalized[name] = known
        return known

    @property
    def abs64_type(self) -> int:
        for number, rt in self.reloc_types.items():
            if rt.name == self.arch.abs64:
                return number
        raise RuleError(f"{self.arch_origin}: abs64 relocation {self.arch.abs64} is not in the relocation table")

    @cached_property
    def subtracting(self) -> frozenset[int]:
        """The relocation types that only adjust the reference before them at the same offset."""
        return frozenset(number for number, rt in self.reloc_types.items() if rt.subtracts)

    @cached_property
    def partnered(self) -> frozenset[int]:
        """The relocation types whose symbol names a partner relocation's place (written as it is)."""
        return frozenset(number for number, rt in self.reloc_types.items() if rt.names_partner)

    @cached_property
    def completing(self) -> frozenset[int]:
        """The relocation types that complete another relocation's reference rather than make one of
        their own (a pair's second half, a partner's low bits): walks that count references skip them."""
        return self.subtracting | self.partnered

    def place_bias(self, rtype: int, in_text: bool) -> tuple[int, int]:
        """(bias, slack) of a relocation type: in code, a reference lands `bias` past its addend,
        possibly up to `slack` further (an immediate after a PC-relative displacement)."""
        rt = self.reloc_types.get(rtype)
        return (rt.text_bias, rt.slack) if rt is not None and in_text else (0, 0)

    def special_for(self, section_name: str) -> SpecialSection | None:
        """The special-section rule for a section: the last one whose name matches (arch rules and then
        --rules override earlier ones)."""
        index = self._names()
        best = index.exact.get(section_name, -1)
        for i in index.patterns:  # last first: the first that matches wins, unless an exact name is later
            if i < best:
                break
            if self.special[i].matches(section_name):
                best = i
                break
        return self.special[best] if best >= 0 else None

    def companion_owner(self, section_name: str) -> SpecialSection | None:
        """The special section whose parallel array (companion) this section is."""
        index = self._names()
        return self.special[index.companions[section_name]] if section_name in index.companions else None

    def _names(self) -> _SpecialNames:
        if self.special_names is None or self.special_names.count != len(self.special):
            self.special_names = _SpecialNames.of(self.special)
        return self.special_names


@record(eq=False, frozen=False)
class _SpecialNames:
    """Special-section rules by section name: exact names, the rules with a pattern (last first), and
    companion sections; built once from `Ruleset.special`."""

    count: int
    exact: dict[str, int]
    patterns: list[int]
    companions: dict[str, int]

    @staticmethod
    def of(special: list[SpecialSection]) -> _SpecialNames:
        exact: dict[str, int] = {}
        companions: dict[str, int] = {}
        for i, spec in enumerate(special):
            if spec.matches.pattern is None:
                exact[spec.matches.name] = i
            if spec.rule.companion is not None:
                companions.setdefault(spec.rule.companion.section, i)
        patterns = [i for i in reversed(range(len(special))) if special[i].matches.pattern is not None]
        return _SpecialNames(len(special), exact, patterns, companions)
