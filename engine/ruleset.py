"""Load, validate and compile rule files into one `Ruleset` for an architecture.

In: the shared rule files in `rules/*.yaml`, the files of one architecture folder
`rules/<arch>/*.yaml`, and any extra `--rules` folders (laid out the same way).
Out: a `Ruleset` whose expressions are compiled (engine/expr.py) and whose every
rule remembers the `file:line` it came from. Any problem raises `RuleError` with
`file:line:col: message`.

Each YAML document has a `kind:` naming its pydantic model below.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import Origin, RuleError
from .expr import Compiled, ExprError, Schema, compile_expr, compile_message
from .template import Template, TemplateError, check_replacement, parse_template
from .views import CHANGE_SCHEMA, RELOC_SCHEMA, SECTION_SCHEMA, STRING_SCHEMA, SYMBOL_SCHEMA, entry_schema

# --------------------------------------------------------------------------------------------
# Expression schemas: what each kind of predicate may name.

# They are derived from the view classes each kind of rule sees (views.py).

# --------------------------------------------------------------------------------------------
# Pydantic models, one per rule kind.

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
    insn_at: int = Field(0, description="where `insn` starts, relative to the relocation offset (x86: the "
                                        "opcode before the displacement is at -1)")


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


class _Doc(BaseModel):
    doc: RuleDoc


# --------------------------------------------------------------------------------------------
# YAML with positions.

Position = tuple[int, int]  # 1-based line, column
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10x faster


def _to_python(node: yaml.Node, path: tuple[Any, ...], where: dict[tuple[Any, ...], Position]) -> Any:
    where[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else _scalar(key_node)
            out[key] = _to_python(value_node, (*path, key), where)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(v, (*path, i), where) for i, v in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    return _scalar(node)


_CONSTRUCTOR = yaml.SafeLoader("")


def _scalar(node: yaml.Node) -> Any:
    """Resolve a scalar node with YAML's own rules (ints, bools, nulls, quoted strings)."""
    if isinstance(node, yaml.ScalarNode):
        return _CONSTRUCTOR.construct_object(node, deep=True)
    return yaml.safe_load(yaml.serialize(node))


def _read_yaml(path: Path) -> tuple[Any, dict[tuple[Any, ...], Position]]:
    try:
        text = path.read_text()
    except OSError as err:
        raise RuleError(f"{path}: cannot read rule file: {err.strerror}") from err
    except UnicodeDecodeError as err:
        before = path.read_bytes()[: err.start]
        row, column = before.count(b"\n") + 1, err.start - before.rfind(b"\n")
        raise RuleError(f"{path}:{row}:{column}: rule files are UTF-8 text; this byte is not") from err
    try:
        node = yaml.compose(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f"{mark.line + 1}:{mark.column + 1}" if mark else "1:1"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RuleError(f"{path}:{line}: YAML error: {problem}") from err
    where: dict[tuple[Any, ...], Position] = {}
    if node is None:
        raise RuleError(f"{path}:1:1: empty rule file (expected a mapping with 'kind:')")
    return _to_python(node, (), where), where


def _position(where: Mapping[tuple[Any, ...], Position], loc: tuple[Any, ...]) -> Position:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in where:
            return where[loc[:cut]]
    return (1, 1)


def validation_messages(path: Path, err: ValidationError, where: Mapping[tuple[Any, ...], Position]) -> list[str]:
    """Every schema error as `file:line:col: field.path: message`, in document terms."""
    out = []
    for e in err.errors():
        loc = _doc_path(e["loc"])
        line, col = _position(where, loc)
        field_path = ".".join(str(p) for p in loc) or "document"
        msg = e["msg"]
        if e["type"] == "union_tag_invalid":
            msg = f"unknown kind (expected one of: {', '.join(sorted(_KINDS))})"
        elif e["type"] == "union_tag_not_found":
            msg = "missing 'kind:'"
        elif e["type"] == "extra_forbidden":
            msg = "unknown key (not part of this rule kind; see docs/rules.md)"
        out.append(f"{path}:{line}:{col}: {field_path}: {msg}")
    return out


def _doc_path(loc: Any) -> tuple[Any, ...]:
    """A pydantic error location as a path in the YAML document: without the wrapper field
    and without the discriminated union's tag (the kind name) that follows it."""
    path = tuple(loc)[1:]
    return path[1:] if path and path[0] in _KINDS else path


_KINDS = {"arch", "relocations", "special-sections", "noise", "refusals", "correlation", "sections"}


# --------------------------------------------------------------------------------------------
# The compiled ruleset the engine uses.

@dataclass
class SectionPredicate:
    """One section predicate of sections.yaml, with where it was written."""

    test: Compiled
    origin: Origin


@dataclass
class CompiledWhen:
    test: Compiled
    message: Callable[[Any], str]
    origin: Origin


@dataclass
class CompiledSiteReloc:
    offset: int
    type_name: str
    symbol: Callable[[Any], str]  # entry env -> symbol name
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
    message: Callable[[Any], str]
    origin: Origin


@dataclass
class SpecialSection:
    rule: SpecialSectionRule
    origin: Origin
    matches: Callable[[str], bool]
    keep: Compiled | None
    drop: list[CompiledWhen]
    refuse: list[CompiledWhen]
    groups: Callable[[str], dict[str, str]] = lambda _name: {}  # named groups of the name pattern
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
    """A compiled `RelocMatchRule` (a relocation refusal or a local call). `type` is the relocation
    type's number once the whole rule set is loaded."""

    type_names: tuple[str, ...]
    pattern: tuple[bytes, bytes] | None
    unless_next: tuple[bytes, bytes] | None
    test: Compiled
    message: Callable[[Any], str]
    origin: Origin
    types: frozenset[int] = frozenset()

    def fits(self, code: bytes, offset: int) -> bool:
        """Does the instruction at relocation offset `offset` of `code` have the rule's form?"""
        if self.pattern is None:
            return True
        if not _bytes_match(self.pattern, code, offset):
            return False
        return self.unless_next is None or not _bytes_match(self.unless_next, code, offset + len(self.pattern[0]))


@dataclass
class CallForm:
    """A compiled `CallFormRule`; `types` is filled once the whole rule set is loaded."""

    type_names: tuple[str, ...]
    pattern: tuple[bytes, bytes] | None
    insn_at: int
    origin: Origin
    types: frozenset[int] = frozenset()

    def fits(self, rtype: int, code: bytes, offset: int) -> bool:
        """Is the relocation of type `rtype` at `offset` of `code` a call or jump of this form?"""
        return rtype in self.types and (self.pattern is None or _bytes_match(self.pattern, code, offset + self.insn_at))


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
    call_forms: list[CallForm] = field(default_factory=list)
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


# --------------------------------------------------------------------------------------------
# Loading.

@dataclass
class _LoadedDoc:
    path: Path
    doc: Any
    where: dict[tuple[Any, ...], Position]
    errors: list[str] | None = None  # lint mode: collect problems instead of raising the first

    def fail(self, message: str, cause: Exception | None = None) -> None:
        if self.errors is None:
            raise RuleError(message) from cause
        self.errors.append(message)


_DOC_CACHE: dict[tuple[str, int, int], _LoadedDoc] = {}


def _load_doc(path: Path) -> _LoadedDoc:
    """Read and validate one rule file (memoised per process on path, mtime and size)."""
    try:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
    except OSError:
        key = (str(path), -1, -1)
    cached = _DOC_CACHE.get(key)
    if cached is None:
        cached = _DOC_CACHE[key] = _load_doc_uncached(path)
    return cached


def _load_doc_uncached(path: Path) -> _LoadedDoc:
    data, where = _read_yaml(path)
    if not isinstance(data, dict):
        raise RuleError(f"{path}:1:1: a rule file is a mapping with 'kind:' at the top")
    try:
        doc = _Doc.model_validate({"doc": data}).doc
    except ValidationError as err:
        raise RuleError(validation_messages(path, err, where)[0]) from err
    return _LoadedDoc(path, doc, where)


def rule_files(dirs: Iterable[Path], arch: str | None) -> list[Path]:
    """The shared files of each folder, then (if arch is known) its arch subfolder."""
    files: list[Path] = []
    for d in dirs:
        files.extend(sorted(d.glob("*.yaml")))
        if arch is not None:
            files.extend(sorted((d / arch).glob("*.yaml")))
    return files


def default_rules_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "rules", here / "rules"):
        if candidate.is_dir():
            return candidate
    raise RuleError(f"{here}: the rules folder is missing from this installation")


def arch_for_machine(dirs: list[Path], machine: int) -> str | None:
    """Find the arch folder whose arch.yaml names this e_machine."""
    for d in dirs:
        for arch_file in sorted(d.glob("*/arch.yaml")):
            loaded = _load_doc(arch_file)
            if isinstance(loaded.doc, ArchRule) and loaded.doc.machine == machine:
                return arch_file.parent.name
    return None


def arch_for_kernel(dirs: list[Path], karch: str) -> ArchRule | None:
    """The arch rule (the last folder's wins) whose kbuild.arch is the kernel's ARCH= `karch`."""
    found = None
    for d in dirs:
        for arch_file in sorted(d.glob("*/arch.yaml")):
            loaded = _load_doc(arch_file)
            if isinstance(loaded.doc, ArchRule) and loaded.doc.kbuild.arch == karch:
                found = loaded.doc
    return found


def known_arches(dirs: list[Path]) -> list[str]:
    return sorted({p.parent.name for d in dirs for p in d.glob("*/arch.yaml")})


def _never(_: Any) -> bool:
    return False


def _compile(loaded: _LoadedDoc, loc: tuple[Any, ...], text: str, schema: Schema) -> Compiled:
    try:
        return compile_expr(text, schema)
    except ExprError as err:
        line, col = _position(loaded.where, loc)
        loaded.fail(f"{loaded.path}:{line}:{col + err.column}: {err} in '{text}'", err)
        return _never


def _compile_message(loaded: _LoadedDoc, loc: tuple[Any, ...], text: str, schema: Schema) -> Callable[[Any], str]:
    try:
        return compile_message(text, schema)
    except ExprError as err:
        line, col = _position(loaded.where, loc)
        loaded.fail(f"{loaded.path}:{line}:{col + err.column}: {err} in message '{text}'", err)
        return lambda _env: text


def _regex(loaded: _LoadedDoc, loc: tuple[Any, ...], text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as err:
        line, col = _position(loaded.where, loc)
        loaded.fail(f"{loaded.path}:{line}:{col}: bad regular expression '{text}': {err}", err)
        return re.compile(r"(?!)")


def _name_matcher(name: str, pattern: re.Pattern[str] | None) -> Callable[[str], bool]:
    """Exact name, or the compiled pattern when the rule's name starts with ^."""
    if pattern is not None:
        return lambda s: pattern.search(s) is not None
    return lambda s: s == name


_PATTERN_TOKEN = re.compile(r"^(?:\?\?|[0-9a-fA-F]{2}(?:/[0-9a-fA-F]{2})?)$")


def parse_byte_pattern(text: str) -> tuple[bytes, bytes]:
    """`"be ?? ?? ?? ??"` → (value, mask). `??` is any byte, `02/1f` a byte under a bit mask."""
    values, masks = bytearray(), bytearray()
    for token in text.split():
        if not _PATTERN_TOKEN.match(token):
            raise ValueError(f"bad byte pattern token '{token}' (use hex bytes, ??, or value/mask)")
        if token == "??":
            values.append(0)
            masks.append(0)
        elif "/" in token:
            value, mask = (int(t, 16) for t in token.split("/"))
            values.append(value & mask)
            masks.append(mask)
        else:
            values.append(int(token, 16))
            masks.append(0xFF)
    if not values:
        raise ValueError("empty byte pattern")
    return bytes(values), bytes(masks)


def load_ruleset(dirs: list[Path], arch: str) -> Ruleset:
    """Load every rule file that applies to `arch` and compile it."""
    files = rule_files(dirs, arch)
    docs = [_load_doc(p) for p in files]
    arch_docs = [d for d in docs if isinstance(d.doc, ArchRule)]
    if not arch_docs:
        raise RuleError(f"no arch.yaml for '{arch}' in {', '.join(str(d) for d in dirs)}")
    arch_doc = arch_docs[-1]
    assert isinstance(arch_doc.doc, ArchRule)
    rs = Ruleset(arch=arch_doc.doc, arch_origin=Origin(str(arch_doc.path), 1), files=[str(p) for p in files])
    for loaded in docs:
        _add_doc(rs, loaded)
    rs.abs64_type  # noqa: B018 - validates that abs64 names a known type
    known = {rt.name for rt in rs.reloc_types.values()}
    numbers = {rt.name: n for n, rt in rs.reloc_types.items()}
    def type_numbers(names: tuple[str, ...], origin: Origin) -> frozenset[int]:
        for name in names:
            if name not in known:
                raise RuleError(f"{origin}: relocation type {name} is not in the {arch} relocation rules")
        return frozenset(numbers[name] for name in names)

    for rr in rs.reloc_refusals + rs.local_calls:
        rr.types = type_numbers(rr.type_names, rr.origin)
    for cf in rs.call_forms:
        cf.types = type_numbers(cf.type_names, cf.origin)
    for spec in rs.special:
        for rw in spec.rewrites:
            for sr in rw.relocs:
                if sr.type_name not in numbers:
                    raise RuleError(f"{sr.origin}: relocation type {sr.type_name} is not in the {arch} "
                                    f"relocation rules")
                sr.type = numbers[sr.type_name]
    return rs


def _reloc_rule(loaded: _LoadedDoc, base: tuple[Any, ...], rule: RelocMatchRule) -> RelocRule:
    pattern = _byte_pattern(loaded, (*base, "insn"), rule.insn)
    unless_next = _byte_pattern(loaded, (*base, "unless_next"), rule.unless_next)
    if unless_next is not None and pattern is None:
        line, col = _position(loaded.where, (*base, "unless_next"))
        loaded.fail(f"{loaded.path}:{line}:{col}: unless_next needs insn (it follows that instruction)")
    names = (rule.type,) if isinstance(rule.type, str) else tuple(rule.type)
    return RelocRule(names, pattern, unless_next, _compile(loaded, (*base, "when"), rule.when, RELOC_SCHEMA),
                     _compile_message(loaded, (*base, "message"), rule.message, RELOC_SCHEMA), _origin(loaded, base))


def _origin(loaded: _LoadedDoc, loc: tuple[Any, ...]) -> Origin:
    return Origin(str(loaded.path), _position(loaded.where, loc)[0])


def _when_list(loaded: _LoadedDoc, base: tuple[Any, ...], items: list[WhenRule], schema: Schema,
               default_message: str) -> list[CompiledWhen]:
    out = []
    for i, item in enumerate(items):
        test = _compile(loaded, (*base, i, "when"), item.when, schema)
        message = _compile_message(loaded, (*base, i, "message"), item.message or default_message, schema)
        out.append(CompiledWhen(test, message, _origin(loaded, (*base, i))))
    return out


def _byte_pattern(loaded: _LoadedDoc, loc: tuple[Any, ...], text: str | None) -> tuple[bytes, bytes] | None:
    if text is None:
        return None
    try:
        return parse_byte_pattern(text)
    except ValueError as err:
        line, col = _position(loaded.where, loc)
        loaded.fail(f"{loaded.path}:{line}:{col}: {err}", err)
        return None


def _group_reader(pattern: re.Pattern[str] | None) -> Callable[[str], dict[str, str]]:
    if pattern is None:
        return lambda _name: {}

    def groups(name: str) -> dict[str, str]:
        m = pattern.search(name)
        return {k: v for k, v in m.groupdict().items() if v is not None} if m else {}

    return groups


def _template(loaded: _LoadedDoc, loc: tuple[Any, ...], text: str) -> Template:
    try:
        return parse_template(text)
    except TemplateError as err:
        line, col = _position(loaded.where, loc)
        loaded.fail(f"{loaded.path}:{line}:{col}: {err}", err)
        return parse_template("??")


def _rewrite(loaded: _LoadedDoc, base: tuple[Any, ...], rw: SiteRewrite,
             schema: Schema) -> CompiledRewrite:
    match = _template(loaded, (*base, "match"), rw.match)
    replace = _template(loaded, (*base, "replace"), rw.replace)
    try:
        check_replacement(match, replace)
    except TemplateError as err:
        line, col = _position(loaded.where, (*base, "replace"))
        loaded.fail(f"{loaded.path}:{line}:{col}: {err}", err)
    relocs = []
    for k, rr in enumerate(rw.relocs):
        loc = (*base, "relocs", k)
        if not 0 <= rr.offset < len(replace):
            line, col = _position(loaded.where, (*loc, "offset"))
            loaded.fail(f"{loaded.path}:{line}:{col}: relocation offset {rr.offset} is outside the "
                        f"{len(replace)}-byte replacement")
        relocs.append(CompiledSiteReloc(rr.offset, rr.type,
                                        _compile_message(loaded, (*loc, "symbol"), rr.symbol, schema),
                                        rr.addend, _origin(loaded, (*loc, "type"))))
    message = _compile_message(loaded, (*base, "message"), rw.message or "code site rewritten", schema)
    return CompiledRewrite(rw.site, rw.at, match, replace, relocs, message, _origin(loaded, base))


def _add_noise(noise: LineNoise, loaded: _LoadedDoc, doc: NoiseRule) -> None:
    if doc.line_loads is not None:
        for i, text in enumerate(doc.line_loads.instructions):
            template = _template(loaded, ("line_loads", "instructions", i), text)
            if template.text == text and "n" not in template.letters:  # (a bad template is reported already)
                line, col = _position(loaded.where, ("line_loads", "instructions", i))
                loaded.fail(f"{loaded.path}:{line}:{col}: a line load names its immediate's bits with the "
                            f"letter n")
            noise.loads.append(template)
        noise.insn_align = doc.line_loads.insn_align
        noise.loads_origin = _origin(loaded, ("line_loads",))
    if doc.line_calls is not None:
        calls = doc.line_calls
        noise.sinks = _regex(loaded, ("line_calls", "sinks"), "|".join(f"(?:{s})" for s in calls.sinks))
        noise.skip = _regex(loaded, ("line_calls", "skip"), "|".join(f"(?:{s})" for s in calls.skip)) \
            if calls.skip else None
        noise.companions = _regex(loaded, ("line_calls", "companions"),
                                  "|".join(f"(?:{s})" for s in calls.companions)) if calls.companions else None
        noise.reach = calls.reach
        noise.calls_origin = _origin(loaded, ("line_calls",))
    for i, text in enumerate(doc.line_strings):
        pattern = _regex(loaded, ("line_strings", i), text)
        if "line" not in pattern.groupindex:
            line, col = _position(loaded.where, ("line_strings", i))
            loaded.fail(f"{loaded.path}:{line}:{col}: a line_strings pattern needs a (?P<line>...) group")
            continue
        noise.strings.append(pattern)
        noise.strings_origin = _origin(loaded, ("line_strings",))


def _add_doc(rs: Ruleset, loaded: _LoadedDoc) -> None:
    doc = loaded.doc
    if isinstance(doc, ArchRule):
        return
    if isinstance(doc, RelocationsRule):
        for rt in doc.types:
            rs.reloc_types[rt.number] = rt
        rs.local_calls.extend(_reloc_rule(loaded, ("local_calls", i), lc) for i, lc in enumerate(doc.local_calls))
        for i, cf in enumerate(doc.calls):
            call_types = (cf.type,) if isinstance(cf.type, str) else tuple(cf.type)
            pattern = _byte_pattern(loaded, ("calls", i, "insn"), cf.insn)
            rs.call_forms.append(CallForm(call_types, pattern, cf.insn_at, _origin(loaded, ("calls", i))))
    elif isinstance(doc, SpecialSectionsRule):
        for i, sec in enumerate(doc.sections):
            base = ("sections", i)
            names = sorted({f.name for layout in sec.layouts for f in layout.fields})
            name_pattern = _regex(loaded, (*base, "name"), sec.name) if sec.name.startswith("^") else None
            schema = entry_schema(names, name_pattern.groupindex if name_pattern is not None else ())
            rs.special.append(SpecialSection(
                rule=sec, origin=_origin(loaded, base),
                matches=_name_matcher(sec.name, name_pattern),
                keep=_compile(loaded, (*base, "keep"), sec.keep, schema) if sec.keep else None,
                drop=_when_list(loaded, (*base, "drop"), sec.drop, schema, f"entry of {sec.name} dropped"),
                refuse=_when_list(loaded, (*base, "refuse"), sec.refuse, schema,
                                  f"entry of {sec.name} cannot be patched"),
                groups=_group_reader(name_pattern),
                rewrites=[_rewrite(loaded, (*base, "rewrite", j), rw, schema) for j, rw in enumerate(sec.rewrite)],
            ))
    elif isinstance(doc, NoiseRule):
        _add_noise(rs.line_noise, loaded, doc)
    elif isinstance(doc, RefusalsRule):
        rs.refusals.extend(_when_list(loaded, ("refuse",), doc.refuse, CHANGE_SCHEMA, "refused by rule"))
        rs.reloc_refusals.extend(_reloc_rule(loaded, ("relocations", i), rr) for i, rr in enumerate(doc.relocations))
    elif isinstance(doc, CorrelationRule):
        for i, n in enumerate(doc.normalize):
            rs.normalize.append((_regex(loaded, ("normalize", i, "pattern"), n.pattern), n.replace))
        rs.fresh.extend(_compile(loaded, ("fresh", i), t, SYMBOL_SCHEMA) for i, t in enumerate(doc.fresh))
        if doc.static_local is not None:
            rs.static_local = _compile(loaded, ("static_local",), doc.static_local, SYMBOL_SCHEMA)
        rs.child.extend(_regex(loaded, ("child", i), t) for i, t in enumerate(doc.child))
        for i, t in enumerate(doc.prefix):
            prefix = _regex(loaded, ("prefix", i), t)
            if "function" not in prefix.groupindex:
                line, col = _position(loaded.where, ("prefix", i))
                loaded.fail(f"{loaded.path}:{line}:{col}: a prefix pattern needs a (?P<function>...) group")
            rs.prefix.append(prefix)
        rs.anonymous.extend(_compile(loaded, ("anonymous", i), t, SYMBOL_SCHEMA)
                            for i, t in enumerate(doc.anonymous))
    elif isinstance(doc, SectionsRule):
        for key, items, target in (("plain", doc.plain, rs.plain), ("ignore", doc.ignore, rs.ignore),
                                   ("carry", doc.carry, rs.carry)):
            target.extend(SectionPredicate(_compile(loaded, (key, i), t, SECTION_SCHEMA), _origin(loaded, (key, i)))
                          for i, t in enumerate(items))
        rs.offset_free.extend(_compile(loaded, ("offset_free", i), t, SECTION_SCHEMA)
                              for i, t in enumerate(doc.offset_free))
        rs.by_object.extend(_compile(loaded, ("by_object", i), t, SECTION_SCHEMA)
                            for i, t in enumerate(doc.by_object))
        for i, m in enumerate(doc.markers):
            section = _regex(loaded, ("markers", i, "section"), m.section)
            symbol = _regex(loaded, ("markers", i, "symbol"), m.symbol) if m.symbol is not None else None
            if m.effect == "callback" and "kind" not in section.groupindex \
                    and (symbol is None or "kind" not in symbol.groupindex):
                line, col = _position(loaded.where, ("markers", i))
                loaded.fail(f"{loaded.path}:{line}:{col}: a callback marker needs a (?P<kind>...) group in "
                            f"section or symbol")
            rs.markers.append(Marker(section, m.effect, _origin(loaded, ("markers", i)), m.entry_size,
                                     m.function_offset, symbol))
        for i, s in enumerate(doc.strings):
            rewrite = None if s.rewrite is None else \
                (_regex(loaded, ("strings", i, "rewrite", "pattern"), s.rewrite.pattern), s.rewrite.replace)
            rs.string_filters.append(StringFilter(
                _regex(loaded, ("strings", i, "section"), s.section),
                _compile(loaded, ("strings", i, "keep"), s.keep, STRING_SCHEMA), rewrite,
                _origin(loaded, ("strings", i))))
