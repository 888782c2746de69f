"""The compiled rule set the engine uses: what every rule kind becomes once loaded.

In: built by rulecompile from validated rule models (rulemodels), or read back from the
rule cache (rulecache). Out: a `Ruleset` the stages read and never change; every compiled
rule keeps the `Origin` (file:line) it came from. Nothing here imports the YAML reader, the
expression parser or pydantic: a cached rule set loads with the standard library alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .errors import Origin, RuleError
from .expr import Compiled, Message
from .rulemodels import ArchRule, RelocType, SpecialSectionRule
from .template import Template


def always(_: Any) -> bool:
    return True


def never(_: Any) -> bool:
    return False


@dataclass(frozen=True)
class NameMatcher:
    """A rule's section name: the exact name, or a regular expression when it starts with ^."""

    name: str
    pattern: re.Pattern[str] | None = None

    def __call__(self, name: str) -> bool:
        return self.pattern.search(name) is not None if self.pattern is not None else name == self.name


@dataclass(frozen=True)
class GroupReader:
    """The named groups a name pattern captures from a name (none without a pattern)."""

    pattern: re.Pattern[str] | None

    def __call__(self, name: str) -> dict[str, str]:
        m = self.pattern.search(name) if self.pattern is not None else None
        return {k: v for k, v in m.groupdict().items() if v is not None} if m else {}


@dataclass
class SectionPredicate:
    """One section predicate of sections.yaml, with where it was written."""

    test: Compiled
    origin: Origin


@dataclass
class CompiledWhen:
    test: Compiled
    message: Message
    origin: Origin


@dataclass
class CompiledSiteReloc:
    offset: int
    type_name: str
    symbol: Message  # entry env -> symbol name
    addend: int
    origin: Origin
    type: int = 0  # the number, resolved once every file is loaded


@dataclass
class CompiledRewrite:
    site: str
    at: int
    match: Template
    replace: Template
    relocs: list[CompiledSiteReloc]
    message: Message
    origin: Origin


@dataclass
class SpecialSection:
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


@dataclass
class LineNoise:
    """What `__LINE__` noise looks like: the loads of an immediate (arch rules), and, for objects
    without line tables, the calls such a load must precede and the strings that carry a line."""

    loads: list[Template] = field(default_factory=list)  # letter `n`: the immediate
    insn_align: int = 1
    loads_origin: Origin | None = None
    sinks: re.Pattern[str] | None = None
    skip: re.Pattern[str] | None = None
    companions: re.Pattern[str] | None = None
    reach: int = 1
    calls_origin: Origin | None = None
    strings: list[re.Pattern[str]] = field(default_factory=list)
    strings_origin: Origin | None = None


@dataclass
class RelocRule:
    """A compiled `RelocMatchRule` (a relocation refusal or a local call) or `CallFormRule` (a call
    form: its test always holds). `types` are the relocation types' numbers once the whole rule set
    is loaded."""

    type_names: tuple[str, ...]
    pattern: tuple[bytes, bytes] | None
    unless_next: tuple[bytes, bytes] | None
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
        if not _bytes_match(self.pattern, code, start):
            return False
        return self.unless_next is None or not _bytes_match(self.unless_next, code, start + len(self.pattern[0]))


def _bytes_match(pattern: tuple[bytes, bytes], data: bytes, at: int) -> bool:
    value, mask = pattern
    if at < 0 or at + len(value) > len(data):
        return False
    return all((data[at + i] & mask[i]) == value[i] for i in range(len(value)))


@dataclass
class StringFilter:
    section: re.Pattern[str]
    keep: Compiled
    rewrite: tuple[re.Pattern[str], str] | None
    origin: Origin


@dataclass
class Marker:
    section: re.Pattern[str]
    effect: str
    origin: Origin
    entry_size: int | None = None
    function_offset: int = 0
    symbol: re.Pattern[str] | None = None


@dataclass
class Ruleset:
    arch: ArchRule
    arch_origin: Origin
    reloc_types: dict[int, RelocType] = field(default_factory=dict)
    special: list[SpecialSection] = field(default_factory=list)
    line_noise: LineNoise = field(default_factory=LineNoise)
    refusals: list[CompiledWhen] = field(default_factory=list)
    reloc_refusals: list[RelocRule] = field(default_factory=list)
    local_calls: list[RelocRule] = field(default_factory=list)
    call_forms: list[RelocRule] = field(default_factory=list)
    normalize: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    fresh: list[Compiled] = field(default_factory=list)
    static_local: Compiled | None = None
    child: list[re.Pattern[str]] = field(default_factory=list)
    prefix: list[re.Pattern[str]] = field(default_factory=list)
    anonymous: list[Compiled] = field(default_factory=list)
    plain: list[SectionPredicate] = field(default_factory=list)
    ignore: list[SectionPredicate] = field(default_factory=list)
    carry: list[SectionPredicate] = field(default_factory=list)
    offset_free: list[Compiled] = field(default_factory=list)
    by_object: list[Compiled] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    string_filters: list[StringFilter] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def abs64_type(self) -> int:
        for number, rt in self.reloc_types.items():
            if rt.name == self.arch.abs64:
                return number
        raise RuleError(f"{self.arch_origin}: abs64 relocation {self.arch.abs64} is not in the relocation table")

    def place_bias(self, rtype: int, in_text: bool) -> tuple[int, int]:
        """(bias, slack) of a relocation type: in code, a reference lands `bias` past its addend,
        possibly up to `slack` further (an immediate after a PC-relative displacement)."""
        rt = self.reloc_types.get(rtype)
        return (rt.text_bias, rt.slack) if rt is not None and in_text else (0, 0)

    def special_for(self, section_name: str) -> SpecialSection | None:
        found = None
        for spec in self.special:  # later rules (arch, then --rules) override earlier ones
            if spec.matches(section_name):
                found = spec
        return found
