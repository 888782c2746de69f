"""The differ's sites stage (the stages: pipeline.py): code that only vmlinux's boot code patches, made safe
for a module.

Some tables list code sites that the kernel rewrites once, at boot, in vmlinux
only; the module loader never reads them (x86's runtime_ptr_* / runtime_shift_*
runtime constants are one family). A copy of such code in a livepatch module
would run the unpatched placeholder. The rules mark those tables
`applied_by: vmlinux-boot` and give `rewrite:` templates: the instruction at a
site becomes module-safe code of the same length (for a runtime pointer, a load
of the symbol). A kept site that no template matches is refused.

In: the patched object and the `Inclusion` (its `boot_sites` plans, with the
entries kept for included functions and what their rules saw). Out: `Sites` —
the code edits emit applies (bytes plus new relocations), one note per rewrite
for the report, and the refusals for sites that cannot be rewritten.
"""

from __future__ import annotations

from dataclasses import field

from ..core.errors import Origin, Refusal
from ..core.records import record
from ..elf.model import STT_FILE, STT_SECTION, ElfObject, RelocIndex
from ..lang.views import EntryEnv
from ..ruleset.compiled import CompiledRewrite
from .include import Inclusion, SpecialPlan


@record
class NewReloc:
    """A relocation the rewritten code needs. `symbol` is a patched symbol index, or None when the
    object has no symbol of that `name` (emit then adds an undefined one)."""

    offset: int  # in the section
    type: int
    symbol: int | None
    name: str
    addend: int


@record
class CodeEdit:
    """Bytes to write over a code site of the output, with the relocations they need."""

    section: int
    offset: int
    data: bytes
    relocs: tuple[NewReloc, ...]


@record(frozen=False)
class Sites:
    """The rewritten boot-only code sites: edits, report notes, refusals and per-entry outcomes."""

    edits: list[CodeEdit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    outcome: dict[tuple[int, int], str] = field(default_factory=dict)  # (table, entry) -> what became of it

    def refuse(self, table: int, entry: int, reason: str, about: frozenset[int] = frozenset(),
               origin: Origin | None = None) -> None:
        self.refusals.append(Refusal(reason, origin, about))
        self.outcome[(table, entry)] = f"refused: {self.refusals[-1]}"

    def rewrote(self, table: int, entry: int, edit: CodeEdit, note: str) -> None:
        self.edits.append(edit)
        self.notes.append(note)
        self.outcome[(table, entry)] = f"rewritten: {note}"


def rewrite_sites(obj: ElfObject, inc: Inclusion) -> Sites:
    out = Sites()
    rel = obj.relocs()
    by_name = _symbols_by_name(obj)
    taken: dict[int, list[tuple[int, int]]] = {}  # section -> rewritten byte ranges
    for plan in inc.boot_sites:
        for index in plan.kept:
            _one_site(obj, plan, index, plan.envs[index], rel, by_name, taken, out)
    return out


def _one_site(obj: ElfObject, plan: SpecialPlan, index: int, env: EntryEnv, rel: RelocIndex,
              by_name: dict[str, int], taken: dict[int, list[tuple[int, int]]], out: Sites) -> None:
    table = obj.sections[plan.section].name
    about = frozenset(v.s.index for v in env.fields.values() if v.s.index)
    tried: list[str] = []
    for rw in plan.spec.rewrites:
        view = env.fields.get(rw.site)
        if view is None or not view.s.is_defined:
            continue
        sym = view.s
        shndx = sym.shndx
        site = (0 if sym.type == STT_SECTION else sym.value) + view.addend
        start = site + rw.at
        where = f"{view.name}+{site - (0 if sym.type == STT_SECTION else sym.value):#x}"
        code = obj.sections[shndx].data
        captured = rw.match.match(code, start)
        if captured is None:
            tried.append(f"{rw.origin}")
            continue
        end = start + len(rw.match)
        if rel.in_range(shndx, start, end):
            out.refuse(plan.section, index, f"{table}[{index}] at {where}: the code to rewrite carries a "
                                            f"relocation, so {rw.origin} cannot replace it", about)
            return
        if any(lo < end and start < hi for lo, hi in taken.get(shndx, [])):
            out.refuse(plan.section, index, f"{table}[{index}] at {where}: overlaps another rewritten site", about)
            return
        taken.setdefault(shndx, []).append((start, end))
        edit = CodeEdit(shndx, start, rw.replace.render(captured, code[start:end]), _relocs(rw, env, start, by_name))
        out.rewrote(plan.section, index, edit, f"{rw.message(env)} ({table} site at {where}) [{rw.origin}]")
        return
    view = next((env.fields[rw.site] for rw in plan.spec.rewrites if rw.site in env.fields), None)
    target = f" at {view.name}{view.addend:+#x}" if view is not None else ""
    patterns = f"; no rewrite matches ({', '.join(tried)})" if tried else "; no rule rewrites it"
    out.refuse(plan.section, index, f"{table}[{index}]{target}: vmlinux patches this code site at boot and "
                                    f"the module loader never does{patterns}", about, plan.spec.origin)


def _relocs(rw: CompiledRewrite, env: EntryEnv, start: int, by_name: dict[str, int]) -> tuple[NewReloc, ...]:
    out = []
    for sr in rw.relocs:
        name = sr.symbol(env)
        out.append(NewReloc(start + sr.offset, sr.type, by_name.get(name), name, sr.addend))
    return tuple(out)


def _symbols_by_name(obj: ElfObject) -> dict[str, int]:
    """Named symbols, a defined one preferred over an undefined one of the same name."""
    out: dict[str, int] = {}
    for sym in obj.symbols:
        if not sym.name or sym.type in (STT_FILE, STT_SECTION):
            continue
        if sym.name not in out or (sym.is_defined and not obj.symbols[out[sym.name]].is_defined):
            out[sym.name] = sym.index
    return out
