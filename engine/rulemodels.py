"""The rule files' schema: one pydantic model per rule kind (`kind:` picks it).

In: the plain data of a YAML rule file. Out: a validated `RuleFile`, or pydantic's
errors, which ruleyaml.validation_messages turns into `file:line:col` lines.
Each field's description is what docs/rules.md explains.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class FtraceRule(Strict):
    calls: list[str] = Field(default_factory=list, description="symbols an ftrace call site targets")
    within: int = Field(32, description="bytes from the function start where the call must sit")
    records: list[str] = Field(default_factory=list, description="sections listing ftrace call sites")
    regenerate: str | None = Field(None, description="record section rebuilt for the included functions")
    site_offset: int = Field(0, description="recorded address minus the call's relocation offset")


class ToolchainRule(Strict):
    prefix: str = Field(description="Debian cross toolchain prefix, e.g. s390x-linux-gnu-")
    cflags: list[str] = Field(default_factory=list, description="kernel-style flags for rule cases")


class KbuildRule(Strict):
    arch: str | None = Field(None, description="the kernel's ARCH= for this machine (arch/<name>)")
    cflags: list[str] = Field(default_factory=list, description="klpdiff build adds these to the kernel's own "
                                                                "compile command, for both builds")


class ArchRule(Strict):
    kind: Literal["arch"]
    name: str
    machine: int
    elfclass: Literal[64] = 64
    endian: Literal["little", "big"]
    abs64: str = Field(description="relocation type used for generated 64-bit pointers")
    ftrace: FtraceRule = Field(default_factory=lambda: FtraceRule())
    toolchain: ToolchainRule
    linker_symbols: list[str] = Field(default_factory=list,
                                      description="regular expressions: symbols the linker or module loader "
                                                  "provides (never livepatch relocations)")
    kbuild: KbuildRule = Field(default_factory=lambda: KbuildRule())


class RelocType(Strict):
    name: str
    number: int
    width: int = Field(description="bytes of the relocated field (masked when comparing code)")
    bits: int | None = Field(None, description="the bits of that field the relocation writes, as an "
                                               "integer in the object's byte order (default: all)")
    pcrel: bool = False
    text_bias: int = Field(0, description="added to the addend in code to get the target offset")
    slack: int = Field(0, description="further bytes an immediate may add after the field (x86)")
    field_offset: int = Field(0, description="where the field starts relative to r_offset")
    via: str | None = Field(None, description="the section of pointer-table entries (ppc64 .toc): a target "
                                              "in it is compared and followed through the entry's own "
                                              "relocation; a target elsewhere is compared as itself")


class CallFormRule(Strict):
    """A direct call or jump to a function, as a relocation in code (the call graph's edges)."""

    type: str | list[str] = Field(description="relocation type name (or a list: any of them)")
    insn: str | None = Field(None, description="byte pattern of the instruction (default: any)")
    insn_at: int = Field(0, description="where `insn` starts, relative to the relocation offset (an "
                                        "opcode just before a 4-byte displacement is at -1)")


class RelocationsRule(Strict):
    kind: Literal["relocations"]
    types: list[RelocType]
    calls: list[CallFormRule] = Field(
        default_factory=list, description="direct calls and jumps: any other reference to a function in "
        "code takes its address (used to patch a function with no ftrace site through its callers)")
    local_calls: list[RelocMatchRule] = Field(
        default_factory=list, description="calls that work only between functions of one module: a function "
        "of the object they reach is copied along as an unchanged helper (message: why, for the report)")


class FieldRule(Strict):
    name: str
    offset: int
    size: int
    reloc: Literal["required", "optional", "none"] = "none"
    line_number: bool = Field(False, description="the field holds a __LINE__ (bug_entry.line): a difference "
                                                 "in it is decided as __LINE__ noise")


class LayoutRule(Strict):
    size: int
    fields: list[FieldRule]
    note: str = ""

    def reloc_offsets(self, kind: str) -> set[int]:
        return {f.offset for f in self.fields if f.reloc == kind}


class WhenRule(Strict):
    when: str
    message: str = ""


class CompanionRule(Strict):
    section: str
    struct: str
    sizes: list[int]


class SiteReloc(Strict):
    offset: int = Field(description="where the relocation goes, from the start of the rewritten code")
    type: str = Field(description="relocation type name, from relocations.yaml")
    symbol: str = Field(description="the symbol referenced, as a message template (e.g. '{table.constant}')")
    addend: int = 0


class SiteRewrite(Strict):
    site: str = Field(description="the entry field that points at the code site")
    at: int = Field(0, description="where the code to match starts, relative to the site")
    match: str = Field(description="instruction template the code must match (engine/template.py)")
    replace: str = Field(description="instruction template written instead, of the same length")
    relocs: list[SiteReloc] = Field(default_factory=list, description="relocations the replacement needs")
    message: str = Field("", description="what the rewrite did, for the report")


class SpecialSectionRule(Strict):
    name: str = Field(description="section name, or a regular expression when it starts with ^")
    struct: str = Field(description="kernel struct behind one entry (the --struct-size key)")
    layouts: list[LayoutRule]
    keep: str | None = Field(None, description="predicate; default: any field targets an included function")
    drop: list[WhenRule] = Field(default_factory=list)
    refuse: list[WhenRule] = Field(default_factory=list)
    companion: CompanionRule | None = None
    applied_by: Literal["module-loader", "vmlinux-boot"] = Field(
        "module-loader", description="who applies the table: the module loader (kept entries are copied), or "
                                     "only vmlinux's boot code (kept entries are rewritten or refused)")
    rewrite: list[SiteRewrite] = Field(default_factory=list,
                                       description="module-safe forms of a vmlinux-boot table's code sites")
    output_name: str | None = Field(None, description="the name the module loader looks for, when vmlinux's "
                                                      "linker script gives the table another name than objects")

    @field_validator("layouts")
    @classmethod
    def _layouts_fit(cls, layouts: list[LayoutRule]) -> list[LayoutRule]:
        for layout in layouts:
            spans = sorted((f.offset, f.offset + f.size, f.name) for f in layout.fields)
            for (_a0, a1, an), (b0, _b1, bn) in itertools.pairwise(spans):
                if b0 < a1:
                    raise ValueError(f"fields {an} and {bn} overlap in the {layout.size}-byte layout")
            if spans and spans[-1][1] > layout.size:
                raise ValueError(f"field {spans[-1][2]} runs past the end of the {layout.size}-byte entry")
        return layouts

    @model_validator(mode="after")
    def _rewrites_fit(self) -> SpecialSectionRule:
        if self.rewrite and self.applied_by != "vmlinux-boot":
            raise ValueError("rewrite: is only for tables applied_by: vmlinux-boot")
        if self.output_name is not None and self.applied_by != "module-loader":
            raise ValueError("output_name: is only for tables the module loader applies")
        for rw in self.rewrite:
            missing = [lay.size for lay in self.layouts if rw.site not in {f.name for f in lay.fields}]
            if missing:
                raise ValueError(f"rewrite site '{rw.site}' is not a field of the {missing[0]}-byte layout")
        return self


class SpecialSectionsRule(Strict):
    kind: Literal["special-sections"]
    sections: list[SpecialSectionRule]


class LineLoadsRule(Strict):
    instructions: list[str] = Field(description="instruction templates of loads whose immediate may be "
                                                "__LINE__; the letter n marks the immediate's bits")
    insn_align: int = Field(1, description="instructions start at multiples of this (fixed-width ISAs)")


class LineCallsRule(Strict):
    sinks: list[str] = Field(description="regular expressions: the call that must follow the load")
    skip: list[str] = Field(default_factory=list, description="relocation targets passed over on the way")
    companions: list[str] = Field(default_factory=list, description="a reference of the same call that marks "
                                  "the load as a line argument (the function name passed with it)")
    reach: int = Field(1, ge=1, description="how many references after the load may come before the sink "
                                            "(code of another path that the compiler scheduled between)")


class NoiseRule(Strict):
    kind: Literal["noise"]
    line_loads: LineLoadsRule | None = Field(None, description="the arch's loads of an immediate argument")
    line_calls: LineCallsRule | None = Field(None, description="without line tables: the calls a __LINE__ "
                                                               "load must precede")
    line_strings: list[str] = Field(default_factory=list, description="without line tables: regular "
                                    "expressions whose (?P<line>) group is a __LINE__ in a string literal")


class RelocMatchRule(Strict):
    """One kind of relocation in code: its type, the instruction it sits in, and a predicate."""

    type: str | list[str] = Field(description="relocation type name, from relocations.yaml (or a list: any "
                                              "of them)")
    insn: str | None = Field(None, description="byte pattern the instruction at the relocation must match")
    unless_next: str | None = Field(None, description="byte pattern: the rule does not apply when the next "
                                                      "instruction (after `insn`) matches it")
    when: str = Field(description="predicate over sym (the function the relocation is in), section, status, "
                                  "target")
    message: str


class RefusalsRule(Strict):
    kind: Literal["refusals"]
    refuse: list[WhenRule] = Field(default_factory=list)
    relocations: list[RelocMatchRule] = Field(
        default_factory=list, description="refuse an included function for one of its relocations")


class Normalize(Strict):
    pattern: str
    replace: str = ""


class CorrelationRule(Strict):
    kind: Literal["correlation"]
    normalize: list[Normalize] = Field(default_factory=list)
    fresh: list[str] = Field(default_factory=list, description="symbols never correlated (always new)")
    static_local: str | None = Field(None, description="symbols correlated through their referrers")
    child: list[str] = Field(default_factory=list, description="regexes with a (?P<parent>) group")
    prefix: list[str] = Field(default_factory=list, description="regexes with a (?P<function>) group: padding "
                                                                "symbols in front of that function")
    anonymous: list[str] = Field(default_factory=list,
                                 description="symbols referenced through their section, never by name")


class MarkerRule(Strict):
    section: str
    effect: Literal["include", "force", "ignore-function", "ignore-section", "callback", "unsupported"]
    entry_size: int | None = Field(None, description="callback: the section is an array of entries of this "
                                                     "size, each with a pointer to the callback")
    function_offset: int = Field(0, description="callback entries: where the pointer sits in an entry")
    symbol: str | None = Field(None, description="callback: each symbol of the section matching this regex "
                                                 "(groups kind, object) holds a pointer to the callback")

    @model_validator(mode="after")
    def _callback_form(self) -> MarkerRule:
        if self.effect == "callback" and (self.entry_size is None) == (self.symbol is None):
            raise ValueError("a callback marker names exactly one of entry_size and symbol")
        if self.effect != "callback" and (self.entry_size is not None or self.symbol is not None):
            raise ValueError("entry_size and symbol are only for effect: callback")
        return self


class StringFilterRule(Strict):
    section: str
    keep: str
    rewrite: Normalize | None = Field(None, description="applied to each kept string")


class SectionsRule(Strict):
    kind: Literal["sections"]
    plain: list[str] = Field(default_factory=list, description="ordinary code and data: compared and copied "
                                                            "symbol by symbol")
    ignore: list[str] = Field(default_factory=list, description="sections never compared nor copied")
    carry: list[str] = Field(default_factory=list, description="sections always copied whole")
    offset_free: list[str] = Field(default_factory=list,
                                   description="sections whose references compare equal at any offset")
    by_object: list[str] = Field(default_factory=list,
                                 description="plain data sections of independent objects: an included object "
                                             "is copied alone, without its neighbours")
    markers: list[MarkerRule] = Field(default_factory=list)
    strings: list[StringFilterRule] = Field(default_factory=list)


RuleDoc = Annotated[
    ArchRule | RelocationsRule | SpecialSectionsRule | NoiseRule | RefusalsRule | CorrelationRule
    | SectionsRule,
    Field(discriminator="kind"),
]


class RuleFile(BaseModel):
    """A whole rule file: one document of one of the kinds above."""

    doc: RuleDoc


# every kind a rule file may name, from the models themselves
KINDS = frozenset(get_args(m.model_fields["kind"].annotation)[0] for m in get_args(get_args(RuleDoc)[0]))
