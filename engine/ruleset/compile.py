"""Read, validate and compile rule files into one `Ruleset` for an architecture.

In: the rule files that apply to one architecture (load.rule_files: the shared files of each
rule folder, then its `<arch>/` files). Out: a `Ruleset` (compiled.py) whose expressions are
compiled (expr.py) and whose every rule remembers the `file:line` it came from. Any problem raises
`RuleError` with `file:line:col: message`; in lint mode (`LoadedDoc.errors`) problems are collected.
Each YAML document has a `kind:` naming its model in schema.py.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..core.errors import Origin, RuleError
from ..core.inputs import read_once
from ..core.records import record
from ..lang.expr import Compiled, ExprError, Message, Schema, compile_expr, compile_first, compile_message
from ..lang.template import Template, TemplateError, check_replacement, parse_template
from ..lang.views import CHANGE_SCHEMA, RELOC_SCHEMA, SECTION_SCHEMA, STRING_SCHEMA, SYMBOL_SCHEMA, entry_schema
from .compiled import (
    Branch,
    CompiledRewrite,
    CompiledSiteReloc,
    CompiledWhen,
    GroupReader,
    LineNoise,
    LivepatchRewrite,
    Marker,
    NameMatcher,
    Predicate,
    PredicateList,
    RelocRule,
    Ruleset,
    SpecialSection,
    SplitLoad,
    StringFilter,
    always,
    never,
)
from .schema import (
    ArchRule,
    BranchRule,
    CorrelationRule,
    MarkerEffect,
    NoiseRule,
    RefusalsRule,
    RelocationsRule,
    RelocMatchRule,
    SectionsRule,
    SiteRewrite,
    SpecialSectionsRule,
    SplitLoadRule,
    WhenRule,
)
from .source import Position, position, read_yaml, validate_doc, validation_messages


@record(frozen=False)
class LoadedDoc:
    path: Path
    doc: Any
    where: dict[tuple[Any, ...], Position]
    errors: list[str] | None = None  # lint mode: collect problems instead of raising the first

    def fail(self, message: str, cause: Exception | None = None) -> None:
        if self.errors is None:
            raise RuleError(message) from cause
        self.errors.append(message)


def load_doc(path: Path) -> LoadedDoc:
    """Read and validate one rule file (once per process for the file as it is: core/inputs.read_once)."""
    return read_once("rule file", path, _load_doc_uncached)


def _load_doc_uncached(path: Path) -> LoadedDoc:
    data, where = read_yaml(path)
    if not isinstance(data, dict):
        raise RuleError(f"{path}:1:1: a rule file is a mapping with 'kind:' at the top")
    try:
        doc = validate_doc(data)
    except ValidationError as err:
        raise RuleError(validation_messages(path, err, where)[0]) from err
    return LoadedDoc(path, doc, where)


def _compile(loaded: LoadedDoc, loc: tuple[Any, ...], text: str, schema: Schema) -> Compiled:
    try:
        return compile_expr(text, schema)
    except ExprError as err:
        _expr_failed(loaded, loc, err, f"'{text}'")
        return never


def _compile_message(loaded: LoadedDoc, loc: tuple[Any, ...], text: str, schema: Schema) -> Message:
    try:
        return compile_message(text, schema)
    except ExprError as err:
        _expr_failed(loaded, loc, err, f"message '{text}'")
        return Message(text, {})


def _expr_failed(loaded: LoadedDoc, loc: tuple[Any, ...], err: ExprError, what: str) -> None:
    """Report an expression's error at its file:line:column."""
    line, col = position(loaded.where, loc)
    loaded.fail(f"{loaded.path}:{line}:{col + err.column}: {err} in {what}", err)


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


def compile_ruleset(dirs: list[Path], arch: str, files: list[Path]) -> Ruleset:
    """Read, validate and compile `files` (the rule files of `arch` from `dirs`) into one Ruleset."""
    docs = [load_doc(p) for p in files]
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

    rs.normalize_any = any_of([pattern for pattern, _replace in rs.normalize])
    for predicates, schema in _predicate_lists(rs):  # each list as one function (every text compiled above)
        predicates.first = compile_first([p.text for p in predicates.items], schema)
    for rr in rs.reloc_refusals + rs.local_calls + rs.call_forms:
        rr.types = type_numbers(rr.type_names, rr.origin)
    for number, lp in list(rs.livepatch_forms.items()):
        form = rs.reloc_types[number].as_livepatch
        assert form is not None
        (written,) = type_numbers((form.type,), lp.origin)
        rs.livepatch_forms[number] = dataclasses.replace(lp, type=written)
    for spec in rs.special:
        for rw in spec.rewrites:
            for sr in rw.relocs:
                if sr.type_name not in numbers:
                    raise RuleError(f"{sr.origin}: relocation type {sr.type_name} is not in the {arch} "
                                    f"relocation rules")
                sr.type = numbers[sr.type_name]
    return rs


_REFERS_BACK = re.compile(r"\\[1-9]|\(\?P=|\(\?\(")


def any_of(patterns: list[re.Pattern[str]]) -> re.Pattern[str] | None:
    """One pattern that matches wherever any of `patterns` does, or None when their alternation would
    not mean that (a pattern that refers back to a group or holds flags of its own)."""
    if not patterns or any(_REFERS_BACK.search(p.pattern) or p.flags & ~re.UNICODE for p in patterns):
        return None
    try:
        return re.compile("|".join(f"(?:{p.pattern})" for p in patterns))
    except re.error:
        return None  # e.g. a group name used twice, or a flag group inside a pattern


def _reloc_rule(loaded: LoadedDoc, base: tuple[Any, ...], rule: RelocMatchRule) -> RelocRule:
    pattern = _optional_template(loaded, (*base, "insn"), rule.insn)
    unless_next = _optional_template(loaded, (*base, "unless_next"), rule.unless_next)
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


def _optional_template(loaded: LoadedDoc, loc: tuple[Any, ...], text: str | None) -> Template | None:
    return _template(loaded, loc, text) if text is not None else None


def _template(loaded: LoadedDoc, loc: tuple[Any, ...], text: str) -> Template:
    try:
        return parse_template(text)
    except TemplateError as err:
        line, col = position(loaded.where, loc)
        loaded.fail(f"{loaded.path}:{line}:{col}: {err}", err)
        return parse_template("??")


def _branch(loaded: LoadedDoc, index: int, rule: BranchRule) -> Branch:
    template = _template(loaded, ("branches", index, "insn"), rule.insn)
    if template.text == rule.insn and "d" not in template.letters:  # (a bad template is reported already)
        line, col = position(loaded.where, ("branches", index, "insn"))
        loaded.fail(f"{loaded.path}:{line}:{col}: a branch names its displacement's bits with the letter d")
    return Branch(template, rule.scale, rule.relative_to == "end", rule.align, _origin(loaded, ("branches", index)))


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


def _split_load(loaded: LoadedDoc, index: int, rule: SplitLoadRule) -> SplitLoad:
    """A two-instruction line load: each high part's template needs n and r, each low part's s and
    r, every r as wide."""
    base = ("line_loads", "split", index)
    parts: dict[str, list[Template]] = {"high": [], "low": []}
    for key, letter, texts in (("high", "n", rule.high), ("low", "s", rule.low)):
        for i, text in enumerate(texts):
            template = _template(loaded, (*base, key, i), text)
            parts[key].append(template)
            widths = {t.letters.get("r") for t in parts["high"] + parts["low"]}
            if template.text == text and (letter not in template.letters or len(widths) != 1 or None in widths):
                line, col = position(loaded.where, (*base, key, i))
                loaded.fail(f"{loaded.path}:{line}:{col}: a split line load's {key} part names its bits with the "
                            f"letter {letter} and its register with r, as wide in every part")
    return SplitLoad(parts["high"], parts["low"], rule.shift, rule.apart)


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
        noise.split = [_split_load(loaded, i, rule) for i, rule in enumerate(doc.line_loads.split)]
        noise.loads_origin = _origin(loaded, ("line_loads",))
    if doc.line_calls is not None:
        calls = doc.line_calls
        # checked here, compiled again where first used (LineNoise keeps the text)
        noise.sinks_text = _regex(loaded, ("line_calls", "sinks"), "|".join(f"(?:{s})" for s in calls.sinks)).pattern
        noise.skip_text = _regex(loaded, ("line_calls", "skip"), "|".join(f"(?:{s})" for s in calls.skip)).pattern \
            if calls.skip else None
        noise.companions_text = _regex(loaded, ("line_calls", "companions"),
                                       "|".join(f"(?:{s})" for s in calls.companions)).pattern \
            if calls.companions else None
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


def _add_predicates(target: PredicateList, loaded: LoadedDoc, key: str, texts: list[str], schema: Schema) -> None:
    target.items.extend(Predicate(t, _compile(loaded, (key, i), t, schema), _origin(loaded, (key, i)))
                        for i, t in enumerate(texts))


def _predicate_lists(rs: Ruleset) -> list[tuple[PredicateList, Schema]]:
    return [(rs.fresh, SYMBOL_SCHEMA), (rs.anonymous, SYMBOL_SCHEMA), (rs.plain, SECTION_SCHEMA),
            (rs.ignore, SECTION_SCHEMA), (rs.carry, SECTION_SCHEMA), (rs.offset_free, SECTION_SCHEMA),
            (rs.by_object, SECTION_SCHEMA)]


def add_doc(rs: Ruleset, loaded: LoadedDoc) -> None:
    """Compile one validated rule file into `rs`, by its kind (arch rules are read apart: load.py)."""
    doc = loaded.doc
    if isinstance(doc, RelocationsRule):
        _add_relocations(rs, loaded, doc)
    elif isinstance(doc, SpecialSectionsRule):
        _add_special_sections(rs, loaded, doc)
    elif isinstance(doc, NoiseRule):
        _add_noise(rs.line_noise, loaded, doc)
    elif isinstance(doc, RefusalsRule):
        rs.refusals.extend(_when_list(loaded, ("refuse",), doc.refuse, CHANGE_SCHEMA, "refused by rule"))
        rs.reloc_refusals.extend(_reloc_rule(loaded, ("relocations", i), rr) for i, rr in enumerate(doc.relocations))
    elif isinstance(doc, CorrelationRule):
        _add_correlation(rs, loaded, doc)
    elif isinstance(doc, SectionsRule):
        _add_sections(rs, loaded, doc)


def _add_relocations(rs: Ruleset, loaded: LoadedDoc, doc: RelocationsRule) -> None:
    for i, rt in enumerate(doc.types):
        rs.reloc_types[rt.number] = rt
        form = rt.as_livepatch
        if form is not None:  # (its type name is resolved once every type is known)
            base = ("types", i, "as_livepatch")
            match = _optional_template(loaded, (*base, "match"), form.match)
            replace = _optional_template(loaded, (*base, "replace"), form.replace)
            if (match is None) != (replace is None):
                line, col = position(loaded.where, base)
                loaded.fail(f"{loaded.path}:{line}:{col}: as_livepatch rewrites an instruction with both match "
                            f"and replace, or with neither")
            elif match is not None and replace is not None:
                try:
                    check_replacement(match, replace)
                except TemplateError as err:
                    line, col = position(loaded.where, (*base, "replace"))
                    loaded.fail(f"{loaded.path}:{line}:{col}: {err}", err)
            rs.livepatch_forms[rt.number] = LivepatchRewrite(-1, match, replace, _origin(loaded, base))
    rs.local_calls.extend(_reloc_rule(loaded, ("local_calls", i), lc) for i, lc in enumerate(doc.local_calls))
    rs.branches.extend(_branch(loaded, i, br) for i, br in enumerate(doc.branches))
    for i, cf in enumerate(doc.calls):
        call_types = (cf.type,) if isinstance(cf.type, str) else tuple(cf.type)
        pattern = _optional_template(loaded, ("calls", i, "insn"), cf.insn)
        rs.call_forms.append(RelocRule(call_types, pattern, None, always, Message("", {}),
                                       _origin(loaded, ("calls", i)), insn_at=cf.insn_at))


def _add_special_sections(rs: Ruleset, loaded: LoadedDoc, doc: SpecialSectionsRule) -> None:
    for i, sec in enumerate(doc.sections):
        base = ("sections", i)
        names = sorted({f.name for layout in sec.layouts for f in layout.fields})
        name_pattern = _regex(loaded, (*base, "name"), sec.name) if sec.name.startswith("^") else None
        schema = entry_schema(names, name_pattern.groupindex if name_pattern is not None else ())
        rs.special.append(SpecialSection(
            rule=sec, origin=_origin(loaded, base),
            matches=NameMatcher(sec.name, name_pattern),
            keep=_compile(loaded, (*base, "keep"), sec.keep, schema) if sec.keep else None,
            drop=_when_list(loaded, (*base, "drop"), sec.drop, schema, f"entry of {sec.name} dropped"),
            refuse=_when_list(loaded, (*base, "refuse"), sec.refuse, schema,
                              f"entry of {sec.name} cannot be patched"),
            groups=GroupReader(name_pattern),
            rewrites=[_rewrite(loaded, (*base, "rewrite", j), rw, schema) for j, rw in enumerate(sec.rewrite)],
        ))


def _add_correlation(rs: Ruleset, loaded: LoadedDoc, doc: CorrelationRule) -> None:
    for i, n in enumerate(doc.normalize):
        rs.normalize.append((_regex(loaded, ("normalize", i, "pattern"), n.pattern), n.replace))
    _add_predicates(rs.fresh, loaded, "fresh", doc.fresh, SYMBOL_SCHEMA)
    if doc.static_local is not None:
        rs.static_local = _compile(loaded, ("static_local",), doc.static_local, SYMBOL_SCHEMA)
    rs.child.extend(_regex(loaded, ("child", i), t) for i, t in enumerate(doc.child))
    for i, t in enumerate(doc.prefix):
        prefix = _regex(loaded, ("prefix", i), t)
        if "function" not in prefix.groupindex:
            line, col = position(loaded.where, ("prefix", i))
            loaded.fail(f"{loaded.path}:{line}:{col}: a prefix pattern needs a (?P<function>...) group")
        rs.prefix.append(prefix)
    _add_predicates(rs.anonymous, loaded, "anonymous", doc.anonymous, SYMBOL_SCHEMA)


def _add_sections(rs: Ruleset, loaded: LoadedDoc, doc: SectionsRule) -> None:
    for key, items, target in (("plain", doc.plain, rs.plain), ("ignore", doc.ignore, rs.ignore),
                               ("carry", doc.carry, rs.carry), ("offset_free", doc.offset_free, rs.offset_free),
                               ("by_object", doc.by_object, rs.by_object)):
        _add_predicates(target, loaded, key, items, SECTION_SCHEMA)
    for i, m in enumerate(doc.markers):
        section = _name_pattern(loaded, ("markers", i, "section"), m.section)
        symbol = _name_pattern(loaded, ("markers", i, "symbol"), m.symbol) if m.symbol is not None else None
        if m.effect is MarkerEffect.CALLBACK and "kind" not in section.groupindex \
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
