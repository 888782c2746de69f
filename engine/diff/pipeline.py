"""The differ, stage by stage. This is the one list of its stages (the README and docs/rules.md point here);
each stage owns the facts it computes, and no stage rewrites another's:

  1. read       ../elf/read.py  each object, checked against the ELF spec; ../elf/linetables.py: its line
                                tables
  2. classify   classify.py     each section's and symbol's role under the rules (ignored, carried, special)
  3. correlate  correlate.py    every patched symbol and section paired with its original
  4. compare    compare.py      same / changed / new per function and data object, over a `Pair`
                                (pair.py); entrytables.py: the special-section entries each function owns;
                                linenoise.py: differences that are line numbers only; ftrace.py: which
                                functions have an ftrace call site
  5. include    include.py      the sections, symbols and special-section entries to copy; redirect.py:
                                changed functions with no ftrace site, patched through their callers
  6. sites      bootsites.py    code that only vmlinux's boot code patches, rewritten or refused
  7. refuse     refuse.py       every reason the change cannot be livepatched; layoutcheck.py: the data
                                layouts that changed under the included code
  8. emit       emit.py         the output object (written by ../elf/write.py)
  9. report     report.py       the text summary and the JSON document

In: two object paths and options. Out: an `Analysis` (`analyse`: everything the
stages found), or an `Outcome` (`run`: the analysis, its typed `Verdict` and the
output written only when the verdict is ok). Bad input raises a `KlpdiffError`
(exit 1); the verdict maps to its exit code itself (`Verdict.exit_code`).
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import field
from pathlib import Path

from ..core.errors import InputError, Refusal, Verdict
from ..core.records import record
from ..elf.linetables import line_table
from ..elf.model import STB_LOCAL, STT_FUNC, STT_OBJECT, ElfObject, Symbol
from ..elf.read import read_elf, resolve_targets, validate_relocation_types
from ..elf.write import write_elf
from ..klp.symbols import KlpContext, PatchTables, klp_owner, klp_symbol, read_symtab, read_symvers, sympos
from ..lang.views import EntryContext
from ..ruleset.compiled import Ruleset
from ..ruleset.load import arch_for_machine, known_arches, load_ruleset, rule_dirs
from .bootsites import Sites, rewrite_sites
from .classify import Roles, Seen, classify
from .compare import CHANGED, Comparison, Status, compare
from .correlate import Correlation, correlate
from .emit import Found, KlpNamer, OutputPlan, lay_out
from .include import Inclusion, include
from .layoutcheck import LayoutCheck, LayoutStatus, allowed_by_markers, check_layouts
from .refuse import refusals


@record(frozen=False)
class Options:
    """What a diff is asked to do besides its two inputs (the command line's options)."""

    arch: str | None = None
    rules_dirs: Sequence[Path] = ()
    struct_sizes: Mapping[str, int] = field(default_factory=dict)
    patching_module: bool = False
    symtab: Path | None = None    # the running kernel's symbol table: turns on livepatch relocations
    symvers: Path | None = None   # its Module.symvers
    objname: str = "vmlinux"      # what the patched object belongs to
    allow_layout_changes: Sequence[str] = ()  # types whose layout change the author allows (`struct foo`)


@record(frozen=False)
class Analysis:
    """Everything the stages found, before anything is written."""

    orig: ElfObject
    patched: ElfObject
    rules: Ruleset
    roles_o: Roles
    roles_p: Roles
    corr: Correlation
    cmp: Comparison
    inc: Inclusion
    sites: Sites
    refused: list[Refusal]
    layout: LayoutCheck
    klp: KlpContext | None = None  # the running kernel's symbols, with --symtab
    objname: str = "vmlinux"       # the kernel object the patched object belongs to

    def names(self, status: Status, stype: int) -> list[str]:
        out = []
        for index, st in self.cmp.status.items():
            sym = self.patched.symbols[index]
            if st == status and sym.type == stype:
                out.append(self.corr.name_of(self.orig, self.patched, index))
        return sorted(out)

    def included_functions(self) -> list[str]:
        out = []
        for index in self.inc.defined_included(self.patched):
            sym = self.patched.symbols[index]
            if sym.type == STT_FUNC:
                out.append(self.corr.name_of(self.orig, self.patched, index))
        return sorted(out)


def _check_pair(orig: ElfObject, patched: ElfObject) -> None:
    if orig.machine != patched.machine:
        raise InputError(f"{patched.path}: machine {patched.machine} does not match {orig.path} "
                         f"(machine {orig.machine}); the two objects must come from the same build setup")
    if orig.little_endian != patched.little_endian or orig.elfclass != patched.elfclass:
        raise InputError(f"{patched.path}: byte order or class differs from {orig.path}")
    if orig.e_flags != patched.e_flags:  # the output carries the patched object's flags (some ABIs version them)
        raise InputError(f"{patched.path}: ELF flags {patched.e_flags:#x} differ from {orig.path}'s "
                         f"({orig.e_flags:#x}); the two objects must come from the same build setup")


def analyse(orig_path: Path, patched_path: Path, opts: Options) -> Analysis:
    orig = read_elf(orig_path)
    patched = read_elf(patched_path)
    _check_pair(orig, patched)
    dirs = rule_dirs(opts.rules_dirs)
    arch = arch_for_machine(dirs, orig.machine)
    if opts.arch is not None and opts.arch != arch:
        if opts.arch not in known_arches(dirs):
            raise InputError(f"--arch {opts.arch}: no rules for that architecture "
                             f"(known: {', '.join(known_arches(dirs))})")
        raise InputError(f"{orig_path}: ELF machine {orig.machine} is not {opts.arch}"
                         + (f" (it is {arch})" if arch else ""))
    if arch is None:
        raise InputError(f"{orig_path}: no rules for ELF machine {orig.machine} "
                         f"(known: {', '.join(known_arches(dirs))})")
    rs = load_ruleset(dirs, arch)
    expected_little = rs.arch.endian == "little"
    widths = {n: rt.field_offset + rt.width for n, rt in rs.reloc_types.items()}
    for obj in (orig, patched):
        validate_relocation_types(obj, widths, arch)
        if obj.little_endian != expected_little:
            raise InputError(f"{obj.path}: {'little' if obj.little_endian else 'big'}-endian object, "
                             f"but {arch} rules describe a {rs.arch.endian}-endian machine")
    seen = Seen()
    roles_o, roles_p = classify(orig, rs, seen), classify(patched, rs, seen)
    for obj, roles in ((orig, roles_o), (patched, roles_p)):  # a reference to an anonymous label means its place
        resolve_targets(obj, rs.place_bias, lambda s, a=roles.anonymous: s.index in a)  # type: ignore[misc]
    corr = correlate(orig, patched, roles_o, roles_p, rs)
    cmp = compare(orig, patched, roles_o, roles_p, corr, rs, line_table(orig, rs.subtracting),
                  line_table(patched, rs.subtracting), opts.struct_sizes)
    klp = _klp_context(orig, roles_o, rs, opts)

    def running_name(sym: Symbol) -> tuple[str, int]:  # the name and binding the running kernel knows it by
        twin = corr.sym_twin.get(sym.index)
        return corr.name_of(orig, patched, sym.index), (orig.symbols[twin] if twin is not None else sym).bind

    def owner_of(sym: Symbol) -> str:  # what a reference from the livepatch to `sym` reaches
        return klp_owner(klp, *running_name(sym), sym.is_defined, opts.objname)

    def resolved_by_klp(sym: Symbol) -> bool:  # would the reference be a livepatch relocation (emit's namer)?
        return klp is not None and klp_symbol(klp, *running_name(sym)) is not None

    context = EntryContext(opts.patching_module, owner_of, resolved_by_klp)
    inc = include(patched, roles_p, cmp, lambda i: i in corr.sym_twin, rs, opts.struct_sizes, context)
    sites = rewrite_sites(patched, inc)
    refused = refusals(patched, roles_p, cmp, inc, sites, rs, context)
    layout = LayoutCheck(LayoutStatus.NOT_NEEDED)
    if inc.defined_included(patched):
        allowed = [*opts.allow_layout_changes, *allowed_by_markers(patched, roles_p)]
        layout = check_layouts(orig, patched, corr, inc, allowed)
    return Analysis(orig, patched, rs, roles_o, roles_p, corr, cmp, inc, sites, refused + layout.refusals, layout,
                    klp, opts.objname)


@record(frozen=False)
class Outcome:
    """A diff's analysis, its verdict, and the output it wrote (None unless OK)."""

    analysis: Analysis
    verdict: Verdict
    output: Path | None


@contextmanager
def _without_cycle_collection() -> Iterator[None]:
    """A diff allocates hundreds of thousands of small objects and frees them by reference count;
    Python's cycle collector, triggered by the allocations alone, would rescan them all again and
    again (a fifth of a large diff's time). Afterwards they join the oldest generation unscanned
    (freeze, then unfreeze): a later full collection still finds any cycles among them."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def run(orig_path: Path, patched_path: Path, out_path: Path, opts: Options) -> Outcome:
    """Analyse the pair and, when the change is patchable, write the output object."""
    with _without_cycle_collection():
        return _run(orig_path, patched_path, out_path, opts)


def _run(orig_path: Path, patched_path: Path, out_path: Path, opts: Options) -> Outcome:
    result = analyse(orig_path, patched_path, opts)
    if result.refused:
        return Outcome(result, Verdict.ERROR, None)
    if not result.included_functions():
        return Outcome(result, Verdict.NO_CHANGE, None)
    namer, funcs = _klp_plan(result, opts)
    callbacks = [(cb.object or result.objname, cb.kind, result.corr.name_of(result.orig, result.patched, cb.function))
                 for cb in result.inc.callbacks]
    found = Found(result.patched, result.orig, result.corr, result.cmp, result.inc, result.sites)
    rules = result.rules
    output = OutputPlan(rules.arch.ftrace.regenerate, rules.abs64_type, namer, PatchTables(funcs, callbacks),
                        lambda rtype, in_text: rules.place_bias(rtype, in_text)[0], rules.partnered,
                        rules.livepatch_forms)
    sections, symbols = lay_out(found, output)
    write_elf(out_path, result.patched, sections, symbols)
    return Outcome(result, Verdict.OK, out_path)


def _klp_context(orig: ElfObject, roles_o: Roles, rs: Ruleset, opts: Options) -> KlpContext | None:
    """The running kernel's symbols (with --symtab): who owns what, and livepatch symbol names."""
    if opts.symtab is None:
        return None
    exports = read_symvers(opts.symvers) if opts.symvers is not None else {}
    locals_ = {s.name for s in orig.symbols if s.bind == STB_LOCAL and s.type in (STT_FUNC, STT_OBJECT)
               and s.index not in roles_o.fresh and s.index not in roles_o.anonymous}
    return KlpContext(read_symtab(opts.symtab), exports, opts.objname, locals_,
                      [re.compile(p) for p in rs.arch.linker_symbols])


def _klp_plan(a: Analysis, opts: Options) -> tuple[KlpNamer | None, list[tuple[str, str, int]]]:
    """The livepatch symbol namer (with --symtab) and the functions to patch with their sympos."""
    ctx = a.klp
    funcs = []
    changed = {i for i, status in a.cmp.status.items() if status == CHANGED}
    for index in sorted((changed - set(a.inc.through_callers)) | a.inc.patched_callers):
        sym = a.patched.symbols[index]
        if sym.type != STT_FUNC or index in a.corr.parent or index in a.cmp.aliases:
            continue
        twin = a.orig.symbols[a.corr.sym_twin[index]]
        funcs.append((opts.objname, twin.name, sympos(ctx, twin.name, twin.bind) if ctx is not None else 0))
    if ctx is None:
        return None, funcs
    context = ctx
    return (lambda name, bind: klp_symbol(context, name, bind)), funcs
