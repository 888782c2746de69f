"""The differ's include stage (the stages: pipeline.py): choose what goes into the output object.

In: the patched object, its `Roles`, the `Comparison`, the `Ruleset`, and any
`--struct-size` overrides. Out: an `Inclusion` — the sections copied whole, the
objects copied alone from sections that gather independent objects (`by_object`
rules: `pieces`), the symbols the output defines or references, the kept entries of each special
section (with the layout that was found for it), the kept strings of
string-filtered sections, and entry-level refusals.

What is included: changed functions, new global symbols, marker sections
(callbacks) and carried sections; then, transitively, whatever an included
section references — a section-symbol reference or a changed/new symbol brings
its section, an unchanged symbol stays a reference to the running kernel's copy.
From each special section, the entries the rule keeps (by default: entries with
a relocation to an included function); their references are followed too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import field
from enum import StrEnum

from ..core.errors import LayoutError, Refusal
from ..core.records import record
from ..elf.model import (
    SHT_NOBITS,
    STB_LOCAL,
    STT_FUNC,
    STT_SECTION,
    ElfObject,
    Reloc,
    RelocIndex,
    Section,
    Symbol,
    Target,
)
from ..lang.views import (
    EntryContext,
    EntryEnv,
    RelocEnv,
    SectionView,
    StagedSymbolView,
    StringEnv,
    TableView,
    TargetView,
)
from ..ruleset.compiled import (
    FieldRule,
    LayoutRule,
    Marker,
    MarkerEffect,
    RelocRule,
    Ruleset,
    SpecialSection,
    StringFilter,
)
from .classify import Roles
from .compare import NEW, SAME, Comparison, Status
from .correlate import child_test, function_bodies, prefix_test
from .entrytables import entry_count, find_layout
from .ftrace import call_site
from .redirect import NotThrough, Redirect, function_or_section_at, redirects

_NULL_SYMBOL = Symbol(0, "", 0, 0, 0, 0, 0, 0)


class EntryFate(StrEnum):
    """What became of a special-section entry; the value is how `explain` words it."""

    KEPT = "kept"            # its keep rule holds: copied
    LEFT_OUT = "left out"    # its keep rule does not hold: not copied
    DROPPED = "dropped"      # a drop rule removed it (the report lists why)
    REFUSED = "refused"      # a refuse rule fired: the change cannot be livepatched


class EntryDecision:
    """What was decided for one entry and why, worded when asked (explain): a table can hold
    thousands of entries, and most are only ever left out."""

    __slots__ = ("obj", "relocs", "rule_text", "verdict")

    def __init__(self, verdict: EntryFate, rule_text: str, obj: ElfObject | None = None,
                 relocs: list[tuple[Reloc, Target]] | None = None) -> None:
        self.verdict = verdict  # KEPT and LEFT_OUT name the keep rule and the entry's targets
        self.rule_text = rule_text
        self.obj = obj
        self.relocs = relocs or []

    def __str__(self) -> str:
        if self.obj is None:
            return f"{self.verdict}: {self.rule_text}"
        targets = ", ".join(f"{self.obj.symbols[t.sym].name}{t.addend:+#x}" for _r, t in self.relocs)
        holds = "holds" if self.verdict is EntryFate.KEPT else "does not hold"
        return f"{self.verdict}: {self.rule_text} {holds} (targets: {targets})"


@record(frozen=False)
class SpecialPlan:
    """The entries kept from one special section (and its companion, if any)."""

    section: int
    spec: SpecialSection
    layout: LayoutRule
    layout_source: str
    kept: list[int]
    dropped: list[str]
    total: int
    companion: int | None = None
    companion_size: int = 0
    decisions: dict[int, EntryDecision] = field(default_factory=dict)  # entry index -> what was decided
    envs: dict[int, EntryEnv] = field(default_factory=dict)  # kept entry -> what its rules saw (boot-only tables)


@record
class Callback:
    """A patch-author callback: `object` is the kernel object it is for (None: the diff's own)."""

    object: str | None
    kind: str       # pre_patch, post_patch, pre_unpatch or post_unpatch
    function: int   # the callback function's symbol in the patched object


@record(frozen=False)
class Inclusion:
    """What the output carries: sections, pieces, symbols, special-section plans, and why."""

    sections: set[int] = field(default_factory=set)
    pieces: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # by-object section -> [start, end)
    symbols: set[int] = field(default_factory=set)
    special: list[SpecialPlan] = field(default_factory=list)
    boot_sites: list[SpecialPlan] = field(default_factory=list)  # vmlinux-boot tables: rewritten, never copied
    strings: dict[int, list[bytes]] = field(default_factory=dict)
    refusals: list[Refusal] = field(default_factory=list)  # entries and macro sections that cannot be carried
    callbacks: list[Callback] = field(default_factory=list)
    # unchanged functions copied because included code reaches them with a call that works only within
    # one module (relocations.yaml local_calls); such calls (section, offset) bind to the copy, every
    # other reference to them still reaches the running kernel's function
    helpers: set[int] = field(default_factory=set)
    helper_calls: set[tuple[int, int]] = field(default_factory=set)
    # changed functions with no ftrace site, patched through their callers (`redirects`): the callers
    # with a site patched in their place, or why that cannot be done
    through_callers: dict[int, tuple[int, ...]] = field(default_factory=dict)
    not_through: dict[int, NotThrough] = field(default_factory=dict)
    patched_callers: set[int] = field(default_factory=set)  # unchanged functions patched for them
    records: list[tuple[int, int]] = field(default_factory=list)  # ftrace sites: (function, offset in it)
    records_from: int | None = None  # the input record section, for its flags

    aliases: dict[int, int] = field(default_factory=dict)  # stay references (see compare.function_aliases)
    why_symbol: dict[int, str] = field(default_factory=dict)   # first reason a symbol was taken
    why_section: dict[int, str] = field(default_factory=dict)  # first reason a section was copied

    @property
    def plans(self) -> list[SpecialPlan]:
        """Every special section's plan: copied tables, then boot-only ones."""
        return self.special + self.boot_sites

    def copied(self, sym: Symbol) -> bool:
        """Is the definition of `sym` in the bytes the output copies (a whole section or a piece)?"""
        if not sym.is_defined:
            return False
        if sym.shndx in self.sections:
            return True
        return any(lo <= sym.value < hi for lo, hi in self.pieces.get(sym.shndx, []))

    def defined_included(self, obj: ElfObject) -> set[int]:
        return {i for i in self.symbols if self.copied(obj.symbols[i]) and i not in self.aliases}


@record(frozen=False)
class _Walker:
    """The state of the walk from the changed functions through everything they reference."""

    obj: ElfObject
    roles: Roles
    cmp: Comparison
    correlated: Callable[[int], bool]
    inc: Inclusion
    bias_of: Callable[[int, bool], tuple[int, int]]  # (relocation type, in code?) -> (bias, slack)
    local_calls: Mapping[int, list[RelocRule]]  # relocation type -> local-call rules
    is_prefix: Callable[[Symbol], bool]
    field_end: Mapping[int, int]  # relocation type -> where its field ends, from the relocated offset
    context: EntryContext          # the running kernel, as the relocation rules' `target` sees it
    work: deque[int | tuple[int, int, int]] = field(default_factory=deque)  # a section, or (section, start, end)

    def status(self, sym: Symbol) -> Status:
        known = self.cmp.status.get(sym.index)
        if known is not None:
            return known
        return SAME if self.correlated(sym.index) else NEW

    def symbol(self, index: int, why: str) -> None:
        if index in self.inc.symbols:
            return
        self.inc.symbols.add(index)
        self.inc.why_symbol.setdefault(index, why)
        sym = self.obj.symbols[index]
        if not sym.is_defined:
            return
        if sym.type == STT_SECTION:
            if sym.shndx not in self.roles.by_object:  # (in a by-object section, `reference` copies pieces)
                self.section(sym.shndx, f"{why} (through its section symbol)")
        elif self.status(sym) != SAME:
            why = f"holds {self.status(sym)} {sym.type_name.lower()} {sym.name}"
            if sym.shndx in self.roles.by_object and sym.size > 0:
                self.piece(sym.shndx, sym.value, sym.value + sym.size, why)
            else:
                self.section(sym.shndx, why)

    def piece(self, shndx: int, start: int, end: int, why: str) -> None:
        """Copy bytes [start, end) of a by-object section (one object), unless it is copied whole."""
        if shndx in self.inc.sections:
            return
        ranges = self.inc.pieces.setdefault(shndx, [])
        if (start, end) in ranges:
            return
        ranges.append((start, end))
        ranges.sort()
        self.inc.why_section.setdefault(shndx, f"{why} (that object alone)")
        self.work.append((shndx, start, end))

    def section(self, shndx: int, why: str) -> None:
        if shndx in self.inc.sections:
            return
        self.inc.pieces.pop(shndx, None)  # a whole copy holds every piece
        marker = self.roles.markers.get(shndx)
        if not (self.roles.is_plain(shndx) or shndx in self.roles.carried
                or (marker is not None and marker.effect is MarkerEffect.INCLUDE)):
            return
        self.inc.sections.add(shndx)
        self.inc.why_section.setdefault(shndx, why)
        self.work.append(shndx)

    def run(self) -> None:
        while self.work:
            item = self.work.popleft()
            shndx, start, end = item if isinstance(item, tuple) else (item, 0, None)
            if isinstance(item, tuple) and shndx in self.inc.sections:
                continue  # the whole section was taken since
            sec = self.obj.sections[shndx]
            for sym_index in self.obj.symbols_in.get(shndx, []):
                if sym_index not in self.cmp.aliases and _within(self.obj.symbols[sym_index].value, start, end):
                    self.inc.symbols.add(sym_index)
                    self.inc.why_symbol.setdefault(sym_index, f"defined in copied section {sec.name}")
            for k, t in enumerate(self.obj.targets.get(shndx, [])):
                if _within(sec.relocs[k].offset, start, end):
                    self.reference(sec, sec.relocs[k], t, f"referenced from {sec.name}")
                    if sec.is_text and sec.relocs[k].type in self.local_calls:
                        self.local_call(sec, sec.relocs[k], t)

    def local_call(self, sec: Section, r: Reloc, t: Target) -> None:
        """A call from copied code that works only within one module: an unchanged callee defined
        here, alone in its section, is copied along as a helper (its own calls are followed in turn)."""
        callee = self.obj.symbols[t.sym]
        if callee.type != STT_FUNC or not callee.is_defined or self.status(callee) != SAME \
                or t.sym in self.cmp.aliases:
            return
        caller = function_or_section_at(self.obj, sec.index, r.offset)
        copied = _Copied(self.obj, self.inc)
        env = RelocEnv(StagedSymbolView(self.obj, caller, copied), SectionView(sec), self.status(caller),
                       TargetView(self.obj, callee, copied, addend=t.addend, owner_of=self.context.owner_of,
                                 resolved_by_klp=self.context.resolved_by_klp))
        rule = next((rule for rule in self.local_calls[r.type] if rule.fits(sec.data, r.offset) and rule.test(env)),
                    None)
        if rule is None:
            return
        if function_bodies(self.obj, callee.shndx, self.is_prefix) != 1:
            return  # copying it would copy its neighbours too: the refusal rules name the call instead
        if t.sym not in self.inc.helpers:
            self.section(callee.shndx, f"helper {callee.name}: {rule.message(env)} [{rule.origin}]")
            if callee.shndx not in self.inc.sections:
                return
            self.inc.helpers.add(t.sym)
            self.inc.why_symbol[t.sym] = f"copied unchanged as a helper: {rule.message(env)} [{rule.origin}]"
        self.inc.helper_calls.add((sec.index, r.offset))

    def reference(self, sec: Section, r: Reloc, t: Target, why: str) -> None:
        """Follow one relocation of copied bytes. A reference into a by-object section through its
        section symbol names a place only up to the relocation's slack (an x86 immediate after the
        displacement): every object in that window is copied, in one piece, so the place keeps its
        distance to them whichever it is."""
        self.symbol(t.sym, why)
        raw = self.obj.symbols[r.sym]
        if raw.type != STT_SECTION or raw.shndx not in self.roles.by_object:
            return
        bias, slack = self.bias_of(r.type, sec.is_text)
        low, high = r.addend + bias, r.addend + bias + slack + 1
        around = [self.obj.symbols[i] for i in self.obj.symbols_in.get(raw.shndx, [])]
        hit = [sym for sym in around if sym.size and sym.value < high and low < sym.value + sym.size]
        if hit:
            self.piece(raw.shndx, min(sym.value for sym in hit), max(sym.value + sym.size for sym in hit), why)
            return
        field = self._relocated_field(raw.shndx, low) if not around else None
        if field is not None:  # a table of anonymous entries: the entry is the relocated field there
            self.piece(raw.shndx, *field, why)
        else:
            self.section(raw.shndx, f"{why} (a place no object holds)")

    def _relocated_field(self, shndx: int, offset: int) -> tuple[int, int] | None:
        """[start, end) of the relocated field at `offset` of section `shndx`, if a relocation is there."""
        found = self.obj.relocs().at(shndx, offset)
        if found is None:
            return None
        end = self.field_end.get(found[0].type)
        return None if end is None else (offset, offset + end)


def _within(offset: int, start: int, end: int | None) -> bool:
    return end is None or start <= offset < end


@record
class _Copied:
    """`included` for relocation rules during the walk: is the symbol's definition copied so far?"""

    obj: ElfObject
    inc: Inclusion

    def __contains__(self, index: object) -> bool:
        return isinstance(index, int) and index not in self.inc.aliases and self.inc.copied(self.obj.symbols[index])


def include(patched: ElfObject, roles: Roles, cmp: Comparison, correlated: Callable[[int], bool],
            rs: Ruleset, struct_sizes: Mapping[str, int], context: EntryContext) -> Inclusion:
    """What the output carries (see the module's docstring), in the order the walk finds it."""
    inc = Inclusion(aliases=cmp.aliases)
    local_calls: dict[int, list[RelocRule]] = {}
    for rule in rs.local_calls:
        for number in rule.types:
            local_calls.setdefault(number, []).append(rule)
    is_prefix = prefix_test(patched, rs)
    field_end = {number: rt.field_offset + rt.width for number, rt in rs.reloc_types.items()}
    walker = _Walker(patched, roles, cmp, correlated, inc, rs.place_bias, local_calls, is_prefix, field_end, context)
    _through_callers(walker, redirects(patched, roles, cmp, rs, is_prefix))
    _changed_and_marked(walker)
    walker.run()
    rel = patched.relocs()
    _special_sections(walker, rel, rs, struct_sizes, context)
    walker.run()
    _ftrace_records(patched, roles, cmp, rs, rel, inc)
    for shndx, string_filter in roles.string_filtered.items():
        kept = filter_strings(patched.sections[shndx].data, string_filter)
        if kept:
            inc.strings[shndx] = kept
    return inc


def _through_callers(walker: _Walker, found: Mapping[int, Redirect | NotThrough]) -> None:
    """Changed functions with no ftrace site: their callers are patched in their place, and the
    unchanged functions on the way copied (or why not, for the refuse stage)."""
    patched, cmp, inc = walker.obj, walker.cmp, walker.inc
    for index, redirect in found.items():
        name = patched.symbols[index].name
        if isinstance(redirect, NotThrough):
            inc.not_through[index] = redirect
            continue
        inc.through_callers[index] = redirect.callers
        for caller in redirect.callers:
            if cmp.status.get(caller, SAME) == SAME:
                inc.patched_callers.add(caller)
                inc.why_symbol.setdefault(caller, f"patched in place of {name}, which has no ftrace call site")
                walker.section(patched.symbols[caller].shndx, f"patched in place of {name}")
        for via in redirect.via:
            inc.helpers.add(via)
            inc.why_symbol.setdefault(via, f"copied unchanged on the way to {name}: it calls {name}, it has no "
                                           f"ftrace call site, its callers are patched")
            walker.section(patched.symbols[via].shndx, f"on the way to {name}")
        inc.helper_calls.update(redirect.calls)


def _changed_and_marked(walker: _Walker) -> None:
    """Where the walk starts: changed and new functions, new globals, marker sections and their
    callbacks, and the sections the rules always carry."""
    patched, roles, inc = walker.obj, walker.roles, walker.inc
    for index, status in walker.cmp.status.items():
        sym = patched.symbols[index]
        if status != SAME and sym.type == STT_FUNC:
            walker.symbol(index, f"{status} function")
        elif status == NEW and sym.bind != STB_LOCAL:
            walker.symbol(index, f"new global {sym.type_name.lower()}")
    for shndx, marker in roles.markers.items():
        if marker.effect is MarkerEffect.INCLUDE:
            walker.section(shndx, "marker section (sections.yaml markers: include)")
        elif marker.effect is MarkerEffect.CALLBACK:
            inc.callbacks.extend(_callbacks(patched, shndx, marker, roles.anonymous, inc.refusals))
        elif marker.effect is MarkerEffect.UNSUPPORTED:
            inc.refusals.append(Refusal(f"patch-author macro section {patched.sections[shndx].name} is not "
                                        f"understood by any rule: its content would be lost", marker.origin))
    for cb in inc.callbacks:
        walker.symbol(cb.function, f"{cb.kind} callback")
    for shndx in roles.carried:
        walker.section(shndx, "always carried (sections.yaml carry)")


def _special_sections(walker: _Walker, rel: RelocIndex, rs: Ruleset, struct_sizes: Mapping[str, int],
                      context: EntryContext) -> None:
    """The kept entries of each special section, and what they reference."""
    patched, inc = walker.obj, walker.inc
    for shndx, spec in sorted(walker.roles.special.items()):
        sec = patched.sections[shndx]
        if spec.rule.companion is not None and spec.rule.companion.section == sec.name:
            continue  # handled with the section it is parallel to
        plan = _plan_special(patched, sec, spec, rel, walker, rs, struct_sizes, context)
        if plan is None:
            continue
        if spec.boot_only:
            inc.boot_sites.append(plan)  # the sites stage rewrites or refuses each kept entry
            continue
        if spec.rule.companion is not None:
            _attach_companion(patched, plan, spec, struct_sizes)
        inc.special.append(plan)
        for i in plan.kept:
            for r, t in rel.in_range(shndx, i * plan.layout.size, (i + 1) * plan.layout.size):
                if r.type not in rs.subtracting:  # (a pair's second half subtracts the entry's own place)
                    walker.reference(sec, r, t, f"referenced from kept entry {sec.name}[{i}]")


def _callbacks(obj: ElfObject, shndx: int, marker: Marker, anonymous: set[int],
               refusals: list[Refusal]) -> list[Callback]:
    """The callbacks a callback marker section holds: an array of entries with a function pointer, or
    symbols whose names give the kind and the object."""
    sec = obj.sections[shndx]
    section_groups = marker.section.search(sec.name)
    default_kind = section_groups.groupdict().get("kind") if section_groups else None
    pointers = {r.offset: t.sym for r, t in zip(sec.relocs, obj.targets.get(shndx, []), strict=True)}
    places: list[tuple[int, str | None, str | None, str]] = []  # offset, kind, object, what it is
    if marker.entry_size:
        places = [(off + marker.function_offset, default_kind, None, f"entry {off // marker.entry_size}")
                  for off in range(0, sec.size, marker.entry_size)]
    elif marker.symbol is not None:
        for index in obj.symbols_in.get(shndx, []):
            if index in anonymous:  # labels such as Arm's $d mapping symbols
                continue
            sym = obj.symbols[index]
            m = marker.symbol.match(sym.name)
            if m is None:
                refusals.append(Refusal(f"{sec.name}: symbol {sym.name} is not a callback this rule knows",
                                        marker.origin, frozenset({index})))
                continue
            groups = m.groupdict()
            places.append((sym.value, groups.get("kind") or default_kind, groups.get("object"), sym.name))
    out = []
    for offset, kind, objname, what in places:
        function = pointers.get(offset)
        if function is None or kind is None or obj.symbols[function].type != STT_FUNC:
            refusals.append(Refusal(f"{sec.name}: {what} does not point at a function", marker.origin,
                                    frozenset({function}) if function is not None else frozenset()))
            continue
        out.append(Callback(objname, kind, function))
    return out


def _ftrace_records(obj: ElfObject, roles: Roles, cmp: Comparison, rs: Ruleset, rel: RelocIndex,
                    inc: Inclusion) -> None:
    """Rebuild the ftrace call-site list for the included functions: the input's own record when it
    has one, else the call the rules name near the function start (kpatch does the same)."""
    ft = rs.arch.ftrace
    if ft.regenerate is None:
        return
    recorded: dict[int, int] = {}
    for shndx in sorted(roles.regenerated):
        inc.records_from = shndx
        for _r, t in rel.in_range(shndx, 0, obj.sections[shndx].size):
            recorded.setdefault(t.sym, t.addend)
    for index in sorted(inc.defined_included(obj)):
        sym = obj.symbols[index]
        if sym.type != STT_FUNC or (cmp.status.get(index, SAME) == SAME and index not in inc.helpers
                                    and index not in inc.patched_callers):
            continue  # a helper copy gets its ftrace site too: the module loader makes it a nop
        if index in recorded:
            inc.records.append((index, recorded[index]))
            continue
        site = call_site(obj, sym, rel, rs)
        if site is not None:
            inc.records.append((index, site + ft.site_offset))


def filter_strings(data: bytes, string_filter: StringFilter) -> list[bytes]:
    """The NUL-separated strings of `data` the filter keeps, rewritten, without repeats."""
    out: list[bytes] = []
    for raw in data.split(b"\0"):
        text = raw.decode("utf-8", "replace")
        if not raw or not string_filter.keep(StringEnv(text)):
            continue
        if string_filter.rewrite is not None:
            pattern, replace = string_filter.rewrite
            text = pattern.sub(replace, text)
        encoded = text.encode()
        if encoded not in out:
            out.append(encoded)
    return out


# ------------------------------------------------------------------------------------------------
# special sections

def _plan_special(obj: ElfObject, sec: Section, spec: SpecialSection, rel: RelocIndex, walker: _Walker,
                  rs: Ruleset, struct_sizes: Mapping[str, int], context: EntryContext) -> SpecialPlan | None:
    """Which entries of special section `sec` the output keeps, and why each was kept or not."""
    if sec.size == 0 or sec.type == SHT_NOBITS:
        return None
    known = walker.cmp.layouts.get(sec.index)  # found by the compare stage; not there: the error is raised here
    layout, source = known if known is not None else find_layout(sec, spec, rel, struct_sizes, obj.path)
    included = walker.inc.defined_included(obj)
    # a reference through a section symbol (code before the first symbol: patchable-entry padding)
    # belongs to that section's function
    included |= {obj.section_symbol[s] for s in walker.inc.sections if s in obj.section_symbol}
    plan = SpecialPlan(sec.index, spec, layout, source, kept=[], dropped=[],
                       total=entry_count(sec.size, layout) or 0)
    if spec.keep is not None:
        rule_text = f"keep rule '{spec.rule.keep}' [{spec.origin}]"
    else:
        rule_text = f"default keep rule: a relocation targets an included function [{spec.origin}]"
    judge = _EntryJudge(obj, walker, spec, plan, TableView(sec.name, spec.groups(sec.name)),
                        {f.offset: f for f in layout.fields},
                        sorted({f.name for lay in spec.rule.layouts for f in lay.fields}),
                        included, child_test(rs), context, rule_text, rs.subtracting)
    entries: dict[int, list[tuple[Reloc, Target]]] = {}
    for r, t in rel.in_range(sec.index, 0, sec.size):
        entries.setdefault(r.offset // layout.size, []).append((r, t))
    for index in sorted(entries):
        judge.decide(index, entries[index])
    return plan


@record(frozen=False)
class _EntryJudge:
    """Decides the entries of one special section: its keep, drop and refuse rules over each entry."""

    obj: ElfObject
    walker: _Walker
    spec: SpecialSection
    plan: SpecialPlan
    table: TableView
    by_offset: dict[int, FieldRule]       # the layout's fields by offset in an entry
    all_names: list[str]                  # every field name the section's layouts have
    included: set[int]                    # symbols the output defines so far
    is_child: Callable[[Symbol], bool]
    context: EntryContext
    rule_text: str                        # the keep rule, as decisions name it
    subtracting: frozenset[int]           # relocation types that are the second half of a pair

    def canonical(self, sym: int) -> int:
        """An alias stands for the function whose body it shares."""
        return self.walker.cmp.aliases.get(sym, sym)

    def env(self, index: int, relocs: list[tuple[Reloc, Target]]) -> EntryEnv:
        """What the rules see of entry `index`: each field's target."""
        obj, size = self.obj, self.plan.layout.size
        views: dict[str, TargetView] = {name: TargetView(obj, _NULL_SYMBOL) for name in self.all_names}
        for r, t in relocs:
            fld = self.by_offset.get(r.offset - index * size)
            if fld is not None and r.type not in self.subtracting:
                views[fld.name] = TargetView(obj, obj.symbols[self.canonical(t.sym)], self.included, self.is_child,
                                            t.addend, self.context.owner_of,
                                            lambda s: self.walker.status(s).value, self.context.resolved_by_klp)
        return EntryEnv(views, self.table, self.context)

    def decide(self, index: int, relocs: list[tuple[Reloc, Target]]) -> None:
        """Keep, leave out, drop or refuse entry `index` (with its relocations), and record why."""
        obj, spec, plan = self.obj, self.spec, self.plan
        env = None
        if spec.keep is not None:
            env = self.env(index, relocs)
            keep = bool(spec.keep(env))
        else:
            keep = any(self.canonical(t.sym) in self.included and _is_code(obj, obj.symbols[self.canonical(t.sym)])
                       for _r, t in relocs)
        if not keep:
            plan.decisions[index] = EntryDecision(EntryFate.LEFT_OUT, self.rule_text, obj, relocs)
            return
        env = env or self.env(index, relocs)
        dropped = next((w for w in spec.drop if w.test(env)), None)
        if dropped is not None:
            plan.dropped.append(dropped.message(env))
            plan.decisions[index] = EntryDecision(EntryFate.DROPPED, f"{dropped.message(env)} [{dropped.origin}]")
            return
        refused = [w for w in spec.refuse if w.test(env)]
        if refused:
            about = frozenset(self.canonical(t.sym) for _r, t in relocs)
            self.walker.inc.refusals.extend(Refusal(w.message(env), w.origin, about) for w in refused)
            plan.decisions[index] = EntryDecision(EntryFate.REFUSED, "; ".join(f"{w.message(env)} [{w.origin}]"
                                                                               for w in refused))
            return
        plan.kept.append(index)
        plan.decisions[index] = EntryDecision(EntryFate.KEPT, self.rule_text, obj, relocs)
        if spec.boot_only:
            plan.envs[index] = env


def _is_code(obj: ElfObject, sym: Symbol) -> bool:
    return sym.type == STT_FUNC or (sym.type == STT_SECTION and obj.sections[sym.shndx].is_text)


def _attach_companion(obj: ElfObject, plan: SpecialPlan, spec: SpecialSection,
                      struct_sizes: Mapping[str, int]) -> None:
    comp = spec.rule.companion
    assert comp is not None
    sec = next((s for s in obj.sections if s.name == comp.section), None)
    if sec is None:
        return
    sizes = [struct_sizes[comp.struct]] if comp.struct in struct_sizes else comp.sizes
    fitting = [s for s in sizes if s and sec.size == s * plan.total]
    if len(fitting) != 1:
        raise LayoutError(f"{obj.path}: {sec.name} ({sec.size} bytes) is not {plan.total} entries of "
                          f"struct {comp.struct} ({', '.join(map(str, sizes))} bytes) parallel to "
                          f"{obj.sections[plan.section].name}; pass --struct-size {comp.struct}=BYTES")
    plan.companion = sec.index
    plan.companion_size = fitting[0]

