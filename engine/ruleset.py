"""Load, validate and compile rule files into one `Ruleset` for an architecture.

In: the shared rule files in `rules/*.yaml`, the files of one architecture folder
`rules/<arch>/*.yaml`, and any extra `--rules` folders (laid out the same way).
Out: a `Ruleset` whose expressions are compiled (engine/expr.py) and whose every
rule remembers the `file:line` it came from. Any problem raises `RuleError` with
`file:line:col: message`.

Each YAML document has a `kind:` naming its pydantic model below.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import Origin, RuleError
from .expr import Compiled, ExprError, Schema, compile_expr, compile_message
from .rulemodels import (
    ArchRule,
    CorrelationRule,
    NoiseRule,
    RefusalsRule,
    RelocationsRule,
    RelocMatchRule,
    RelocType,
    RuleFile,
    SectionsRule,
    SiteRewrite,
    SpecialSectionRule,
    SpecialSectionsRule,
    WhenRule,
)
from .ruleyaml import Position, position, read_yaml, validation_messages
from .template import Template, TemplateError, check_replacement, parse_template
from .views import CHANGE_SCHEMA, RELOC_SCHEMA, SECTION_SCHEMA, STRING_SCHEMA, SYMBOL_SCHEMA, entry_schema

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
    """A compiled `RelocMatchRule` (a relocation refusal or a local call) or `CallFormRule` (a call
    form: its test always holds). `types` are the relocation types' numbers once the whole rule set
    is loaded."""

    type_names: tuple[str, ...]
    pattern: tuple[bytes, bytes] | None
    unless_next: tuple[bytes, bytes] | None
    test: Compiled
    message: Callable[[Any], str]
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


# --------------------------------------------------------------------------------------------
# Loading.

@dataclass
class LoadedDoc:
    path: Path
    doc: Any
    where: dict[tuple[Any, ...], Position]
    errors: list[str] | None = None  # lint mode: collect problems instead of raising the first

    def fail(self, message: str, cause: Exception | None = None) -> None:
        if self.errors is None:
            raise RuleError(message) from cause
        self.errors.append(message)


_DOC_CACHE: dict[tuple[str, int, int], LoadedDoc] = {}


def _load_doc(path: Path) -> LoadedDoc:
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


def _load_doc_uncached(path: Path) -> LoadedDoc:
    data, where = read_yaml(path)
    if not isinstance(data, dict):
        raise RuleError(f"{path}:1:1: a rule file is a mapping with 'kind:' at the top")
    try:
        doc = RuleFile.model_validate({"doc": data}).doc
    except ValidationError as err:
        raise RuleError(validation_messages(path, err, where)[0]) from err
    return LoadedDoc(path, doc, where)


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


def _always(_: Any) -> bool:
    return True


def _no_message(_: Any) -> str:
    return ""


def _never(_: Any) -> bool:
    return False


def _compile(loaded: LoadedDoc, loc: tuple[Any, ...], text: str, schema: Schema) -> Compiled:
    try:
        return compile_expr(text, schema)
    except ExprError as err:
        line, col = position(loaded.where, loc)
        loaded.fail(f"{loaded.path}:{line}:{col + err.column}: {err} in '{text}'", err)
        return _never


def _compile_message(loaded: LoadedDoc, loc: tuple[Any, ...], text: str, schema: Schema) -> Callable[[Any], str]:
    try:
        return compile_message(text, schema)
    except ExprError as err:
        line, col = position(loaded.where, loc)
        loaded.fail(f"{loaded.path}:{line}:{col + err.column}: {err} in message '{text}'", err)
        return lambda _env: text


def _regex(loaded: LoadedDoc, loc: tuple[Any, ...], text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as err:
        line, col = position(loaded.where, loc)
        loaded.fail(f"{loaded.path}:{line}:{col}: bad regular expression '{text}': {err}", err)
        return re.compile(r"(?!)")


def _name_pattern(loaded: LoadedDoc, loc: tuple[Any, ...], text: str) -> re.Pattern[str]:
    """A rule's name for a section or symbol, as a pattern: the exact name, or a regular expression when
    it starts with ^ (the one convention for `name:`, `section:` and `symbol:` values)."""
    return _regex(loaded, loc, text) if text.startswith("^") else re.compile(f"^{re.escape(text)}$")


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


_RULESET_CACHE: dict[tuple[Any, ...], Ruleset] = {}


def load_ruleset(dirs: list[Path], arch: str) -> Ruleset:
    """Load every rule file that applies to `arch` and compile it, once per process for the same files
    (a compiled rule set is never changed once loaded: many diffs in one process share it)."""
    files = rule_files(dirs, arch)
    key = (arch, tuple(_file_key(p) for p in files))
    cached = _RULESET_CACHE.get(key)
    if cached is None:
        cached = _RULESET_CACHE[key] = _compile_ruleset(dirs, arch, files)
    return cached


def _file_key(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
        return str(path), st.st_mtime_ns, st.st_size
    except OSError:
        return str(path), -1, -1


def _compile_ruleset(dirs: list[Path], arch: str, files: list[Path]) -> Ruleset:
    docs = [_load_doc(p) for p in files]
    arch_docs = [d for d in docs if isinstance(d.doc, ArchRule)]
    if not arch_docs:
        raise RuleError(f"no arch.yaml for '{arch}' in {', '.join(str(d) for d in dirs)}")
    arch_doc = arch_docs[-1]
    assert isinstance(arch_doc.doc, ArchRule)
    rs = Ruleset(arch=arch_doc.doc, arch_origin=Origin(str(arch_doc.path), 1), files=[str(p) for p in files])
    for loaded in docs:
        add_doc(rs, loaded)
    rs.abs64_type  # noqa: B018 - validates that abs64 names a known type
    known = {rt.name for rt in rs.reloc_types.values()}
    numbers = {rt.name: n for n, rt in rs.reloc_types.items()}
    def type_numbers(names: tuple[str, ...], origin: Origin) -> frozenset[int]:
        for name in names:
            if name not in known:
                raise RuleError(f"{origin}: relocation type {name} is not in the {arch} relocation rules")
        return frozenset(numbers[name] for name in names)

    for rr in rs.reloc_refusals + rs.local_calls + rs.call_forms:
        rr.types = type_numbers(rr.type_names, rr.origin)
    for spec in rs.special:
        for rw in spec.rewrites:
            for sr in rw.relocs:
                if sr.type_name not in numbers:
                    raise RuleError(f"{sr.origin}: relocation type {sr.type_name} is not in the {arch} "
                                    f"relocation rules")
                sr.type = numbers[sr.type_name]
    return rs


def _reloc_rule(loaded: LoadedDoc, base: tuple[Any, ...], rule: RelocMatchRule) -> RelocRule:
    pattern = _byte_pattern(loaded, (*base, "insn"), rule.insn)
    unless_next = _byte_pattern(loaded, (*base, "unless_next"), rule.unless_next)
    if unless_next is not None and pattern is None:
        line, col = position(loaded.where, (*base, "unless_next"))
        loaded.fail(f"{loaded.path}:{line}:{col}: unless_next needs insn (it follows that instruction)")
    names = (rule.type,) if isinstance(rule.type, str) else tuple(rule.type)
    return RelocRule(names, pattern, unless_next, _compile(loaded, (*base, "when"), rule.when, RELOC_SCHEMA),
                     _compile_message(loaded, (*base, "message"), rule.message, RELOC_SCHEMA), _origin(loaded, base))


def _origin(loaded: LoadedDoc, loc: tuple[Any, ...]) -> Origin:
    return Origin(str(loaded.path), position(loaded.where, loc)[0])


def _when_list(loaded: LoadedDoc, base: tuple[Any, ...], items: list[WhenRule], schema: Schema,
               default_message: str) -> list[CompiledWhen]:
    out = []
    for i, item in enumerate(items):
        test = _compile(loaded, (*base, i, "when"), item.when, schema)
        message = _compile_message(loaded, (*base, i, "message"), item.message or default_message, schema)
        out.append(CompiledWhen(test, message, _origin(loaded, (*base, i))))
    return out


def _byte_pattern(loaded: LoadedDoc, loc: tuple[Any, ...], text: str | None) -> tuple[bytes, bytes] | None:
    if text is None:
        return None
    try:
        return parse_byte_pattern(text)
    except ValueError as err:
        line, col = position(loaded.where, loc)
        loaded.fail(f"{loaded.path}:{line}:{col}: {err}", err)
        return None


def _group_reader(pattern: re.Pattern[str] | None) -> Callable[[str], dict[str, str]]:
    if pattern is None:
        return lambda _name: {}

    def groups(name: str) -> dict[str, str]:
        m = pattern.search(name)
        return {k: v for k, v in m.groupdict().items() if v is not None} if m else {}

    return groups


def _template(loaded: LoadedDoc, loc: tuple[Any, ...], text: str) -> Template:
    try:
        return parse_template(text)
    except TemplateError as err:
        line, col = position(loaded.where, loc)
        loaded.fail(f"{loaded.path}:{line}:{col}: {err}", err)
        return parse_template("??")


def _rewrite(loaded: LoadedDoc, base: tuple[Any, ...], rw: SiteRewrite,
             schema: Schema) -> CompiledRewrite:
    match = _template(loaded, (*base, "match"), rw.match)
    replace = _template(loaded, (*base, "replace"), rw.replace)
    try:
        check_replacement(match, replace)
    except TemplateError as err:
        line, col = position(loaded.where, (*base, "replace"))
        loaded.fail(f"{loaded.path}:{line}:{col}: {err}", err)
    relocs = []
    for k, rr in enumerate(rw.relocs):
        loc = (*base, "relocs", k)
        if not 0 <= rr.offset < len(replace):
            line, col = position(loaded.where, (*loc, "offset"))
            loaded.fail(f"{loaded.path}:{line}:{col}: relocation offset {rr.offset} is outside the "
                        f"{len(replace)}-byte replacement")
        relocs.append(CompiledSiteReloc(rr.offset, rr.type,
                                        _compile_message(loaded, (*loc, "symbol"), rr.symbol, schema),
                                        rr.addend, _origin(loaded, (*loc, "type"))))
    message = _compile_message(loaded, (*base, "message"), rw.message or "code site rewritten", schema)
    return CompiledRewrite(rw.site, rw.at, match, replace, relocs, message, _origin(loaded, base))


def _add_noise(noise: LineNoise, loaded: LoadedDoc, doc: NoiseRule) -> None:
    if doc.line_loads is not None:
        for i, text in enumerate(doc.line_loads.instructions):
            template = _template(loaded, ("line_loads", "instructions", i), text)
            if template.text == text and "n" not in template.letters:  # (a bad template is reported already)
                line, col = position(loaded.where, ("line_loads", "instructions", i))
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
            line, col = position(loaded.where, ("line_strings", i))
            loaded.fail(f"{loaded.path}:{line}:{col}: a line_strings pattern needs a (?P<line>...) group")
            continue
        noise.strings.append(pattern)
        noise.strings_origin = _origin(loaded, ("line_strings",))


def add_doc(rs: Ruleset, loaded: LoadedDoc) -> None:
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
            rs.call_forms.append(RelocRule(call_types, pattern, None, _always, _no_message,
                                           _origin(loaded, ("calls", i)), insn_at=cf.insn_at))
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
                line, col = position(loaded.where, ("prefix", i))
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
            section = _name_pattern(loaded, ("markers", i, "section"), m.section)
            symbol = _name_pattern(loaded, ("markers", i, "symbol"), m.symbol) if m.symbol is not None else None
            if m.effect == "callback" and "kind" not in section.groupindex \
                    and (symbol is None or "kind" not in symbol.groupindex):
                line, col = position(loaded.where, ("markers", i))
                loaded.fail(f"{loaded.path}:{line}:{col}: a callback marker needs a (?P<kind>...) group in "
                            f"section or symbol")
            rs.markers.append(Marker(section, m.effect, _origin(loaded, ("markers", i)), m.entry_size,
                                     m.function_offset, symbol))
        for i, s in enumerate(doc.strings):
            rewrite = None if s.rewrite is None else \
                (_regex(loaded, ("strings", i, "rewrite", "pattern"), s.rewrite.pattern), s.rewrite.replace)
            rs.string_filters.append(StringFilter(
                _name_pattern(loaded, ("strings", i, "section"), s.section),
                _compile(loaded, ("strings", i, "keep"), s.keep, STRING_SCHEMA), rewrite,
                _origin(loaded, ("strings", i))))
