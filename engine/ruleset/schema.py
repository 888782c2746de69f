"""The rule files' schema: one record class (a dataclass, records.py) per rule kind (`kind:` picks it).

In: the plain data of a YAML rule file, which `source.validate_doc` checks against these classes
with pydantic. Out: instances of them, which the compiled rule set keeps. The classes import only
the standard library, so a cached rule set loads without pydantic. Each field's description
(`about`) is what docs/rules.md explains; checks across fields are `__post_init__`s, which pydantic
reports at the value's path.
"""

from __future__ import annotations

import itertools
from dataclasses import field
from enum import StrEnum
from functools import cache
from typing import Any, ClassVar, Literal, get_args, get_type_hints

from ..core.records import record


def about(text: str) -> dict[str, str]:
    """A field's description, as dataclass field metadata."""
    return {"description": text}


class Strict:
    """Base of every rule model: pydantic rejects keys the model does not have. (Rule models are
    immutable records compared by identity, `eq=False`: a loaded rule is one object, and the
    generated __eq__/__hash__ of 25 classes would cost every run 4 ms of start-up.)"""

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}  # pydantic's ConfigDict


@record(eq=False)
class FtraceRule(Strict):
    """How the arch's ftrace call sites look: what they call, where they sit, where they are recorded."""

    calls: list[str] = field(default_factory=list, metadata=about("symbols an ftrace call site targets"))
    within: int = field(default=32, metadata=about("bytes from the function start where the call must sit"))
    records: list[str] = field(default_factory=list, metadata=about("sections listing ftrace call sites"))
    regenerate: str | None = field(default=None, metadata=about("record section rebuilt for the included "
                                                                "functions"))
    site_offset: int = field(default=0, metadata=about("recorded address minus the call's relocation offset"))


@record(eq=False)
class ToolchainRule(Strict):
    """The cross toolchain rule cases compile with."""

    prefix: str = field(metadata=about("Debian cross toolchain prefix, e.g. s390x-linux-gnu-"))
    cflags: list[str] = field(default_factory=list, metadata=about("kernel-style flags for rule cases"))


@record(eq=False)
class KbuildRule(Strict):
    """What `klpdiff build` tells the kernel's build about this machine."""

    arch: str | None = field(default=None, metadata=about("the kernel's ARCH= for this machine (arch/<name>)"))
    cflags: list[str] = field(default_factory=list, metadata=about("klpdiff build adds these to the kernel's "
                                                                   "own compile command, for both builds"))


@record(eq=False)
class ArchRule(Strict):
    """kind: arch. One machine: ELF identity, byte order, pointer relocation, ftrace and toolchains."""

    kind: Literal["arch"]
    name: str
    machine: int
    endian: Literal["little", "big"]
    abs64: str = field(metadata=about("relocation type used for generated 64-bit pointers"))
    toolchain: ToolchainRule
    elfclass: Literal[64] = 64
    ftrace: FtraceRule = field(default_factory=FtraceRule)
    linker_symbols: list[str] = field(default_factory=list,
                                      metadata=about("regular expressions: symbols the linker or module loader "
                                                     "provides (never livepatch relocations)"))
    kbuild: KbuildRule = field(default_factory=KbuildRule)
    distributions: dict[str, str] = field(default_factory=dict,
                                          metadata=about("the name each distribution's packages give this "
                                                         "machine, e.g. debian: amd64 (klpdiff build --kernel)"))


@record(eq=False)
class LivepatchForm(Strict):
    """A relocation's livepatch form (RISC-V: an auipc pair written as an absolute lui pair)."""

    type: str = field(metadata=about("the relocation type written instead"))
    match: str | None = field(default=None, metadata=about("instruction template the code at the relocation "
                                                           "must match"))
    replace: str | None = field(default=None, metadata=about("instruction template written over it (as long)"))


@record(eq=False)
class RelocType(Strict):
    """One relocation type of the arch: its field, its bias in code, and how to compare it."""

    name: str
    number: int
    width: int = field(metadata=about("bytes of the relocated field (masked when comparing code)"))
    bits: int | None = field(default=None, metadata=about("the bits of that field the relocation writes, as an "
                                                          "integer in the object's byte order (default: all)"))
    pcrel: bool = False
    text_bias: int = field(default=0, metadata=about("added to the addend in code to get the target offset"))
    slack: int = field(default=0, metadata=about("further bytes an immediate may add after the field (x86)"))
    field_offset: int = field(default=0, metadata=about("where the field starts relative to r_offset"))
    subtracts: bool = field(default=False, metadata=about(
        "the relocation subtracts its target from the value the relocation before it at the same offset "
        "computes (RISC-V's SUB32 after ADD32 for `.long sym - .`): the two are one reference, to the first "
        "one's target, and this one's target is a place the output writes as it moves"))
    names_partner: bool = field(default=False, metadata=about(
        "the relocation's symbol is the place of a partner relocation, not its target (RISC-V's PCREL_LO12 "
        "names the auipc that carries the PCREL_HI20): compared and followed as the target it resolves to, "
        "but written against a symbol at exactly that place (a loader finds the partner by the symbol's "
        "value)"))
    as_livepatch: LivepatchForm | None = field(default=None, metadata=about(
        "how the relocation is written when the livepatch core resolves its target (a .klp.sym symbol) and "
        "the loader could not apply it as it is: another type, and the instruction rewritten. For a "
        "names_partner type: written so, against its partner's target, when its partner is"))
    via: str | None = field(default=None, metadata=about("the section of pointer-table entries (ppc64 .toc): a "
                                                         "target in it is compared and followed through the "
                                                         "entry's own relocation; a target elsewhere is compared "
                                                         "as itself"))


@record(eq=False)
class CallFormRule(Strict):
    """A direct call or jump to a function, as a relocation in code (the call graph's edges)."""

    type: str | list[str] = field(metadata=about("relocation type name (or a list: any of them)"))
    insn: str | None = field(default=None, metadata=about("instruction template of the instruction (default: any)"))
    insn_at: int = field(default=0, metadata=about("where `insn` starts, relative to the relocation offset (an "
                                                   "opcode just before a 4-byte displacement is at -1)"))


@record(eq=False)
class RelocMatchRule(Strict):
    """One kind of relocation in code: its type, the instruction it sits in, and a predicate."""

    type: str | list[str] = field(metadata=about("relocation type name, from relocations.yaml (or a list: any "
                                                 "of them)"))
    when: str = field(metadata=about("predicate over sym (the function the relocation is in), section, status, "
                                     "target"))
    message: str
    insn: str | None = field(default=None, metadata=about("instruction template the instruction at the relocation must "
                                                          "match"))
    unless_next: str | None = field(default=None, metadata=about("instruction template: the rule does not apply "
                                                                 "when the next instruction (after `insn`) matches "
                                                                 "it"))


@record(eq=False)
class BranchRule(Strict):
    """A PC-relative branch or call that the assembler resolves itself, with no relocation, when its
    target is in the same section (functions that share one section, as attribute-named sections make them)."""

    insn: str = field(metadata=about("instruction template (engine/lang/template.py); the letter d names the "
                                     "displacement's bits, a signed number"))
    scale: int = field(default=1, metadata=about("bytes per unit of the displacement (4 when it counts "
                                                 "instruction words)"))
    relative_to: Literal["start", "end"] = field(default="start", metadata=about(
        "whether the displacement counts from the instruction's first byte or from the byte after it"))
    align: int = field(default=1, metadata=about("instructions start at multiples of this many bytes of the "
                                                 "function (4 for fixed-width words)"))


@record(eq=False)
class RelocationsRule(Strict):
    """kind: relocations. The arch's relocation types, its call forms and its module-local calls."""

    kind: Literal["relocations"]
    types: list[RelocType]
    calls: list[CallFormRule] = field(
        default_factory=list, metadata=about("direct calls and jumps: any other reference to a function in "
                                             "code takes its address (used to patch a function with no ftrace "
                                             "site through its callers)"))
    local_calls: list[RelocMatchRule] = field(
        default_factory=list, metadata=about("calls that work only between functions of one module: a function "
                                             "of the object they reach is copied along as an unchanged helper "
                                             "(message: why, for the report)"))
    branches: list[BranchRule] = field(
        default_factory=list, metadata=about("branches and calls with no relocation between functions of one "
                                             "section: compared by the function and offset they reach"))


@record(eq=False)
class FieldRule(Strict):
    """One field of a special-section entry: where it is and whether a relocation fills it."""

    name: str
    offset: int
    size: int
    reloc: Literal["required", "optional", "none"] = "none"
    line_number: bool = field(default=False, metadata=about("the field holds a __LINE__ (bug_entry.line): a "
                                                            "difference in it is decided as __LINE__ noise"))


@record(eq=False)
class LayoutRule(Strict):
    """One layout of a special-section entry (a struct may have several, by kernel version)."""

    size: int
    fields: list[FieldRule]
    note: str = ""

    def __post_init__(self) -> None:
        spans = sorted((f.offset, f.offset + f.size, f.name) for f in self.fields)
        for (_a0, a1, an), (b0, _b1, bn) in itertools.pairwise(spans):
            if b0 < a1:
                raise ValueError(f"fields {an} and {bn} overlap in the {self.size}-byte layout")
        if spans and spans[-1][1] > self.size:
            raise ValueError(f"field {spans[-1][2]} runs past the end of the {self.size}-byte entry")

    def reloc_offsets(self, kind: str) -> set[int]:
        return {f.offset for f in self.fields if f.reloc == kind}


@record(eq=False)
class WhenRule(Strict):
    """A predicate with the message given when it holds."""

    when: str
    message: str = ""


@record(eq=False)
class CompanionRule(Strict):
    """A parallel array that goes with a special section, entry for entry (its rule names it)."""

    section: str
    struct: str
    sizes: list[int]


@record(eq=False)
class SiteReloc(Strict):
    """A relocation the rewritten code of a boot-only site needs."""

    offset: int = field(metadata=about("where the relocation goes, from the start of the rewritten code"))
    type: str = field(metadata=about("relocation type name, from relocations.yaml"))
    symbol: str = field(metadata=about("the symbol referenced, as a message template (e.g. '{table.constant}')"))
    addend: int = 0


@record(eq=False)
class SiteRewrite(Strict):
    """A module-safe form of a code site that only vmlinux's boot code would patch."""

    site: str = field(metadata=about("the entry field that points at the code site"))
    match: str = field(metadata=about("instruction template the code must match (engine/lang/template.py)"))
    replace: str = field(metadata=about("instruction template written instead, of the same length"))
    at: int = field(default=0, metadata=about("where the code to match starts, relative to the site"))
    relocs: list[SiteReloc] = field(default_factory=list, metadata=about("relocations the replacement needs"))
    message: str = field(default="", metadata=about("what the rewrite did, for the report"))


@record(eq=False)
class SpecialSectionRule(Strict):
    """One special section: the kernel struct of its entries and which entries go with included code."""

    name: str = field(metadata=about("section name, or a regular expression when it starts with ^"))
    struct: str = field(metadata=about("kernel struct behind one entry (the --struct-size key)"))
    layouts: list[LayoutRule]
    keep: str | None = field(default=None, metadata=about("predicate; default: any field targets an included "
                                                          "function"))
    drop: list[WhenRule] = field(default_factory=list)
    refuse: list[WhenRule] = field(default_factory=list)
    companion: CompanionRule | None = None
    applied_by: Literal["module-loader", "vmlinux-boot"] = field(
        default="module-loader", metadata=about("who applies the table: the module loader (kept entries are "
                                                "copied), or only vmlinux's boot code (kept entries are "
                                                "rewritten or refused)"))
    rewrite: list[SiteRewrite] = field(default_factory=list,
                                       metadata=about("module-safe forms of a vmlinux-boot table's code sites"))
    output_name: str | None = field(default=None, metadata=about("the name the module loader looks for, when "
                                                                 "vmlinux's linker script gives the table another "
                                                                 "name than objects"))
    derived_from_code: bool = field(default=False, metadata=about(
        "a tool makes the entries from the code they point at: a function's entries are not compared, its "
        "code decides"))

    def __post_init__(self) -> None:
        if self.rewrite and self.applied_by != "vmlinux-boot":
            raise ValueError("rewrite: is only for tables applied_by: vmlinux-boot")
        if self.output_name is not None and self.applied_by != "module-loader":
            raise ValueError("output_name: is only for tables the module loader applies")
        for rw in self.rewrite:
            missing = [lay.size for lay in self.layouts if rw.site not in {f.name for f in lay.fields}]
            if missing:
                raise ValueError(f"rewrite site '{rw.site}' is not a field of the {missing[0]}-byte layout")


@record(eq=False)
class SpecialSectionsRule(Strict):
    """kind: special-sections. A list of special sections."""

    kind: Literal["special-sections"]
    sections: list[SpecialSectionRule]


@record(eq=False)
class LineLoadsRule(Strict):
    """The arch's instructions that load an immediate which may be a __LINE__."""

    instructions: list[str] = field(metadata=about("instruction templates of loads whose immediate may be "
                                                   "__LINE__; the letter n marks the immediate's bits"))
    insn_align: int = field(default=1, metadata=about("instructions start at multiples of this (fixed-width "
                                                      "ISAs)"))
    split: list[SplitLoadRule] = field(default_factory=list, metadata=about(
        "loads of a value too wide for one immediate: a high part, then a signed low part added to it, "
        "possibly with other instructions between"))


@record(eq=False)
class SplitLoadRule(Strict):
    """A line load in two instructions that need not be adjacent (RISC-V's lui, then addi)."""

    high: list[str] = field(metadata=about("instruction templates of the high part: n marks its bits, r the "
                                           "register it sets"))
    low: list[str] = field(metadata=about("instruction templates of the low part, added sign-extended: s marks "
                                          "its bits, r the register of the high part it adds to"))
    shift: int = field(metadata=about("the value is the high part shifted left by this, plus the low part"))
    apart: int = field(metadata=about("look this many bytes at most beyond one part for the other"))


@record(eq=False)
class LineCallsRule(Strict):
    """Without line tables: the calls a __LINE__ load must lead to."""

    sinks: list[str] = field(metadata=about("regular expressions: the call that must follow the load"))
    skip: list[str] = field(default_factory=list, metadata=about("relocation targets passed over on the way"))
    companions: list[str] = field(default_factory=list, metadata=about(
        "a reference of the same call that marks the load as a line argument (the function name passed with it)"))
    reach: int = field(default=1, metadata=about("how many references after the load may come before the sink "
                                                 "(code of another path that the compiler scheduled between)"))

    def __post_init__(self) -> None:
        if self.reach < 1:
            raise ValueError(f"reach is at least 1 (got {self.reach})")


@record(eq=False)
class NoiseRule(Strict):
    """kind: noise. What __LINE__ noise looks like in code and strings."""

    kind: Literal["noise"]
    line_loads: LineLoadsRule | None = field(default=None, metadata=about("the arch's loads of an immediate "
                                                                          "argument"))
    line_calls: LineCallsRule | None = field(default=None, metadata=about("without line tables: the calls a "
                                                                          "__LINE__ load must precede"))
    line_strings: list[str] = field(default_factory=list, metadata=about(
        "without line tables: regular expressions whose (?P<line>) group is a __LINE__ in a string literal"))


@record(eq=False)
class RefusalsRule(Strict):
    """kind: refusals. Changes that cannot be livepatched, and relocations included code may not have."""

    kind: Literal["refusals"]
    refuse: list[WhenRule] = field(default_factory=list)
    relocations: list[RelocMatchRule] = field(
        default_factory=list, metadata=about("refuse an included function for one of its relocations"))


@record(eq=False)
class Normalize(Strict):
    """A rewrite of a name (a regular expression and its replacement)."""

    pattern: str
    replace: str = ""


@record(eq=False)
class CorrelationRule(Strict):
    """kind: correlation. How names are paired between the two objects."""

    kind: Literal["correlation"]
    normalize: list[Normalize] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list, metadata=about("symbols never correlated (always new)"))
    static_local: str | None = field(default=None, metadata=about("symbols correlated through their referrers"))
    child: list[str] = field(default_factory=list, metadata=about("regexes with a (?P<parent>) group"))
    prefix: list[str] = field(default_factory=list, metadata=about("regexes with a (?P<function>) group: padding "
                                                                   "symbols in front of that function"))
    anonymous: list[str] = field(default_factory=list,
                                 metadata=about("symbols referenced through their section, never by name"))


class MarkerEffect(StrEnum):
    """What a patch-author marker section means (the rule key `effect:`)."""

    INCLUDE = "include"                            # copy the marked symbol into the livepatch
    FORCE = "force"                                # patch the marked function even if unchanged
    IGNORE_FUNCTION = "ignore-function"            # never patch the marked function
    IGNORE_SECTION = "ignore-section"              # leave the marked section out of the diff
    CALLBACK = "callback"                          # a pre/post (un)patch callback
    ALLOW_LAYOUT_CHANGE = "allow-layout-change"    # the author vouches for a struct's new layout
    UNSUPPORTED = "unsupported"                    # a macro klpdiff does not carry out: refuse


@record(eq=False)
class MarkerRule(Strict):
    """A section a patch-author macro writes, and what it means."""

    section: str
    effect: MarkerEffect
    entry_size: int | None = field(default=None, metadata=about("callback: the section is an array of entries "
                                                                "of this size, each with a pointer to the "
                                                                "callback"))
    function_offset: int = field(default=0, metadata=about("callback entries: where the pointer sits in an "
                                                           "entry"))
    symbol: str | None = field(default=None, metadata=about("callback: each symbol of the section matching this "
                                                            "regex (groups kind, object) holds a pointer to the "
                                                            "callback"))

    def __post_init__(self) -> None:
        if self.effect is MarkerEffect.CALLBACK and (self.entry_size is None) == (self.symbol is None):
            raise ValueError("a callback marker names exactly one of entry_size and symbol")
        if self.effect is not MarkerEffect.CALLBACK and (self.entry_size is not None or self.symbol is not None):
            raise ValueError("entry_size and symbol are only for effect: callback")


@record(eq=False)
class StringFilterRule(Strict):
    """A string section whose strings are kept one by one, by a predicate."""

    section: str
    keep: str
    rewrite: Normalize | None = field(default=None, metadata=about("applied to each kept string"))


@record(eq=False)
class SectionsRule(Strict):
    """kind: sections. What every other section is: compared, ignored, carried, or a marker."""

    kind: Literal["sections"]
    plain: list[str] = field(default_factory=list, metadata=about("ordinary code and data: compared and copied "
                                                                  "symbol by symbol"))
    ignore: list[str] = field(default_factory=list, metadata=about("sections never compared nor copied"))
    carry: list[str] = field(default_factory=list, metadata=about("sections always copied whole"))
    offset_free: list[str] = field(default_factory=list,
                                   metadata=about("sections whose references compare equal at any offset"))
    by_object: list[str] = field(default_factory=list,
                                 metadata=about("plain data sections of independent objects: an included object "
                                                "is copied alone, without its neighbours"))
    markers: list[MarkerRule] = field(default_factory=list)
    strings: list[StringFilterRule] = field(default_factory=list)


# A rule file is one document of one of these kinds (its `kind:` value picks the class).
RuleDoc = (ArchRule | RelocationsRule | SpecialSectionsRule | NoiseRule | RefusalsRule | CorrelationRule
           | SectionsRule)
DOC_CLASSES: tuple[type, ...] = get_args(RuleDoc)



@cache
def kinds() -> frozenset[str]:
    """Every kind a rule file may name, from the classes themselves."""
    return frozenset(get_args(get_type_hints(cls)["kind"])[0] for cls in DOC_CLASSES)
