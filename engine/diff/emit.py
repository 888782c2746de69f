"""The differ's emit stage (the stages: pipeline.py): write the output ELF relocatable object.

In: the patched object, the `Correlation` (output names are the original
names), the `Comparison`, the `Inclusion`, and the output path. Out: an ELF64
ET_REL file of the input's machine, byte order, OS ABI and flags, holding the
included sections, the compacted special sections, the filtered string sections,
one RELA section per section with relocations, and a symbol table ordered
NULL, FILE, SECTION, other locals, then globals (sh_info = first global).
A relocation that the livepatch core must resolve, and that the loader could not
apply as it is (the rules' `as_livepatch`: RISC-V's auipc pairs), is written in its
livepatch form, its instruction rewritten, and its partners with it.
The file is written to a temporary name beside the target and renamed, so a
failure never leaves half an object behind.

The ELF file itself is written by elf/write.py.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import field

from ..core.errors import InputError
from ..core.records import record
from ..elf.model import (
    SHF_ALLOC,
    SHF_GROUP,
    SHF_INFO_LINK,
    SHF_LINK_ORDER,
    SHN_ABS,
    SHT_NOBITS,
    SHT_PROGBITS,
    SHT_RELA,
    STB_GLOBAL,
    STB_LOCAL,
    STB_WEAK,
    STT_FILE,
    STT_FUNC,
    STT_NOTYPE,
    STT_OBJECT,
    STT_SECTION,
    ElfObject,
    Reloc,
    Section,
    Target,
)
from ..elf.write import OutSection, OutSymbol
from ..klp.symbols import RELOC_ENTRY, RELOCS_SECTION, PatchTables
from ..ruleset.compiled import LivepatchRewrite
from .bootsites import CodeEdit, Sites
from .compare import CHANGED, Comparison
from .correlate import Correlation
from .include import Inclusion, SpecialPlan

KlpNamer = Callable[[str, int], "str | None"]  # (original name, original STB_ binding) -> .klp.sym name or None


@record
class Found:
    """What the earlier stages found, as emit reads it. `sites` holds the code edits of boot-only
    sites (bootsites.py): their bytes replace the copied code and their relocations are added."""

    patched: ElfObject
    orig: ElfObject
    corr: Correlation
    cmp: Comparison
    inc: Inclusion
    sites: Sites | None = None


@record
class OutputPlan:
    """How the output lists and names things. `records_name`: the ftrace record section to rebuild,
    whose pointers use relocation type `abs64`. With `klp`, references that the livepatch core must
    resolve get `.klp.sym.*` symbols and move into the linker-safe `.klpdiff.relocs` table; `tables`
    fills `.klpdiff.funcs` and `.klpdiff.callbacks`. `bias_of(type, in_text)` is where a reference
    lands relative to its addend, for references into a special section, which are moved to the
    entry's new place."""

    records_name: str | None = None
    abs64: int = 0
    klp: KlpNamer | None = None
    tables: PatchTables | None = None
    bias_of: Callable[[int, bool], int] | None = None
    exact_place: frozenset[int] = frozenset()  # relocation types written against their own symbol, as it is
    livepatch_forms: Mapping[int, LivepatchRewrite] = field(default_factory=dict)  # the rules' `as_livepatch`


@record(frozen=False)
class _Out:
    """The output object as `lay_out` makes it, step by step: what each step adds, the later ones read."""

    found: Found
    plan: OutputPlan
    edits: list[CodeEdit]
    pieces: dict[int, _Pieces]                      # by-object section -> its pieces' places
    specials: dict[int, SpecialPlan]                # compacted special section -> its plan
    companions: dict[int, SpecialPlan]              # compacted companion section -> its table's plan
    sections: list[OutSection] = field(default_factory=list)
    out_of: dict[int, int] = field(default_factory=dict)          # patched section -> output section
    entry_maps: dict[int, dict[int, int]] = field(default_factory=dict)  # special section -> old entry -> new
    records: OutSection | None = None               # the rebuilt ftrace record section
    symbols: list[OutSymbol] = field(default_factory=list)
    section_sym: dict[int, int] = field(default_factory=dict)     # output section -> its section symbol
    sym_of: dict[int, int] = field(default_factory=dict)          # patched symbol -> output symbol
    by_name: dict[str, int] = field(default_factory=dict)         # undefined output symbols by name
    klp_syms: set[int] = field(default_factory=set)               # output symbols that are livepatch symbols
    named: dict[str, int] = field(default_factory=dict)           # names only rewritten sites use -> symbol


def lay_out(found: Found, output: OutputPlan) -> tuple[list[OutSection], list[OutSymbol]]:
    """Lay out output sections and symbols (pure; `write_elf` turns them into bytes)."""
    inc = found.inc
    out = _Out(found, output, found.sites.edits if found.sites is not None else [],
               {shndx: _lay_out_pieces(ranges, found.patched.sections[shndx].addralign)
                for shndx, ranges in inc.pieces.items()},
               {plan.section: plan for plan in inc.special if plan.kept},
               {plan.companion: plan for plan in inc.special if plan.kept and plan.companion is not None})
    _copy_sections(out)
    _keep_link_order(out)
    _records_section(out)
    _local_symbols(out)
    undefined = _defined_symbols(out)
    _undefined_symbols(out, undefined)
    _site_symbols(out)
    if out.records is not None:
        out.records.relocs = [(8 * n, output.abs64, out.sym_of[index], addend)
                              for n, (index, addend) in enumerate(inc.records)]
    _relocations(out)
    _site_relocations(out)
    if out.klp_syms:
        _klp_table(out.sections, out.symbols, out.section_sym, out.klp_syms, output.abs64,
                   found.patched.little_endian)
    for name, text in output.tables.sections() if output.tables is not None else []:
        out.sections.append(OutSection(name, SHT_PROGBITS, 0, 1, 0, text, len(text)))
    return out.sections, out.symbols


def _section_data(out: _Out, idx: int) -> bytes | None:
    """What the output holds of patched section `idx` (None: nothing): the whole section with its
    boot-only sites rewritten, the kept entries of a compacted table, the kept strings, or the pieces."""
    patched, inc = out.found.patched, out.found.inc
    sec = patched.sections[idx]
    if idx in inc.sections:
        return _edited(sec.data, [e for e in out.edits if e.section == idx])
    if idx in out.specials:
        size = out.specials[idx].layout.size
        kept = out.specials[idx].kept
        out.entry_maps[idx] = {i * size: n * size for n, i in enumerate(kept)}
        return b"".join(sec.data[i * size:(i + 1) * size] for i in kept)
    if idx in out.companions:
        size = out.companions[idx].companion_size
        return b"".join(sec.data[i * size:(i + 1) * size] for i in out.companions[idx].kept)
    if idx in inc.strings:
        return b"".join(s + b"\0" for s in inc.strings[idx])
    if idx in out.pieces:
        return _pieces_data(sec.data if sec.type != SHT_NOBITS else bytes(sec.size), out.pieces[idx])
    return None


def _copy_sections(out: _Out) -> None:
    """The output's content sections, in the patched object's order, after the null section."""
    out.sections.append(OutSection("", 0, 0, 0, 0, b"", 0))
    for sec in out.found.patched.sections:
        idx = sec.index
        data = _section_data(out, idx)
        if data is None:
            continue
        if sec.type not in COPYABLE_TYPES:
            raise InputError(f"section {sec.name} is to be copied but its type {sec.type:#x} is "
                             f"{_type_kind(sec.type)}: klpdiff copies only sections of the generic ELF "
                             f"content types (a rule can drop it)")
        out.out_of[idx] = len(out.sections)
        size = sec.size if (sec.type == SHT_NOBITS and idx in out.found.inc.sections) else len(data)
        name = (out.specials[idx].spec.rule.output_name if idx in out.specials else None) or sec.name
        # content sections carry no group and no info link of their own in the output
        out.sections.append(OutSection(name, sec.type, sec.flags & ~(SHF_GROUP | SHF_INFO_LINK), sec.addralign,
                                       sec.entsize, b"" if sec.type == SHT_NOBITS else data, size, source=idx))


def _keep_link_order(out: _Out) -> None:
    """A copied SHF_LINK_ORDER section links to its code's copy."""
    patched = out.found.patched
    for section in out.sections[1:]:
        assert section.source is not None
        src = patched.sections[section.source]
        if src.flags & SHF_LINK_ORDER:
            # a compacted table whose section of code is not copied (one table for several functions)
            # follows the code of the entries it keeps: dropping SHF_LINK_ORDER would make the linker
            # refuse to mix it with the ordered tables of other objects (__patchable_function_entries)
            link = src.link if src.link in out.out_of else _kept_code_section(patched, out.specials.get(section.source))
            if link is not None and link in out.out_of:
                section.link_to = out.out_of[link]
            else:
                section.flags &= ~SHF_LINK_ORDER


def _records_section(out: _Out) -> None:
    """The ftrace record section rebuilt for the included functions (its relocations come later)."""
    inc, name = out.found.inc, out.plan.records_name
    if not inc.records or not name:
        return
    flags = out.found.patched.sections[inc.records_from].flags if inc.records_from is not None else SHF_ALLOC
    out.records = OutSection(name, SHT_PROGBITS, flags & ~(SHF_GROUP | SHF_LINK_ORDER | SHF_INFO_LINK), 8, 8,
                             bytes(8 * len(inc.records)), 8 * len(inc.records))
    out.sections.append(out.records)


def _local_symbols(out: _Out) -> None:
    """The symbol table's start: NULL, the FILE symbols, a SECTION symbol per section."""
    out.symbols.append(OutSymbol("", 0, 0, 0, 0, 0, 0))
    for sym in out.found.patched.symbols:
        if sym.type == STT_FILE:
            out.symbols.append(OutSymbol(sym.name, 0, 0, STB_LOCAL, STT_FILE, 0, SHN_ABS))
    for out_index, section in enumerate(out.sections[1:], start=1):
        if section.flags & SHF_ALLOC or section.type != SHT_NOBITS:
            out.section_sym[out_index] = len(out.symbols)
            out.symbols.append(OutSymbol("", 0, 0, STB_LOCAL, STT_SECTION, 0, out_index))


def _defined_symbols(out: _Out) -> list[int]:
    """The symbols the output defines, locals then globals; returns the referenced ones it does not."""
    patched, orig, corr, cmp, inc = out.found.patched, out.found.orig, out.found.corr, out.found.cmp, out.found.inc
    defined_local: list[tuple[int, int]] = []
    defined_global: list[tuple[int, int]] = []
    undefined: list[int] = []
    for index in sorted(inc.symbols | {r.symbol for e in out.edits for r in e.relocs if r.symbol is not None}):
        sym = patched.symbols[index]
        if sym.type in (STT_SECTION, STT_FILE) or index == 0:
            continue
        if inc.copied(sym) and index not in inc.aliases:
            bind = sym.bind
            if sym.type == STT_FUNC and (cmp.status.get(index) == CHANGED or index in inc.helpers
                                         or index in inc.patched_callers):
                bind = STB_LOCAL  # the copy must not satisfy other links (kpatch does the same)
            (defined_local if bind == STB_LOCAL else defined_global).append((index, bind))
        else:
            undefined.append(index)
    for index, bind in defined_local + defined_global:
        sym = patched.symbols[index]
        out.sym_of[index] = len(out.symbols)
        value = sym.value if sym.shndx not in out.pieces else _moved(out.pieces[sym.shndx], sym.value)
        assert value is not None  # inc.copied: inside a piece
        out.symbols.append(OutSymbol(corr.name_of(orig, patched, index), value, sym.size, bind, sym.type,
                                     sym.other, out.out_of[sym.shndx]))
    return undefined


def _undefined_symbol(out: _Out, name: str, bind: int, stype: int) -> int:
    """The output's undefined symbol for the running kernel's `name` (a livepatch symbol when the
    plan names one), made once per final name."""
    klp_name = out.plan.klp(name, bind) if out.plan.klp is not None else None
    final = klp_name or name
    if final not in out.by_name:
        out.by_name[final] = len(out.symbols)
        # livepatch symbols are weak so that modpost does not ask for them; post-link makes them SHN_LIVEPATCH
        out.symbols.append(OutSymbol(final, 0, 0, STB_WEAK if klp_name else STB_GLOBAL, stype, 0, 0))
        if klp_name is not None:
            out.klp_syms.add(out.by_name[final])
    return out.by_name[final]


def _running_kernel_symbol(out: _Out, index: int) -> int:
    """An undefined symbol for the running kernel's copy of patched symbol `index`."""
    patched, orig, corr = out.found.patched, out.found.orig, out.found.corr
    sym = patched.symbols[index]
    twin = corr.sym_twin.get(index)
    orig_bind = (orig.symbols[twin] if twin is not None else sym).bind
    stype = sym.type if sym.type in (STT_FUNC, STT_OBJECT) else STT_NOTYPE
    return _undefined_symbol(out, corr.name_of(orig, patched, index), orig_bind, stype)


def _undefined_symbols(out: _Out, undefined: list[int]) -> None:
    for index in undefined:
        primary = out.found.inc.aliases.get(index)
        if primary is not None and primary in out.sym_of:
            out.sym_of[index] = out.sym_of[primary]  # same body: reach the new copy through the function it aliases
            continue
        out.sym_of[index] = _running_kernel_symbol(out, index)


def _site_symbols(out: _Out) -> None:
    """Symbols that only rewritten sites name (the object has none of that name)."""
    for name in sorted({r.name for e in out.edits for r in e.relocs if r.symbol is None}):
        out.named[name] = _undefined_symbol(out, name, STB_GLOBAL, STT_NOTYPE)


def _relocations(out: _Out) -> None:
    """Each copied section's relocations, moved with what was compacted or cut into pieces."""
    patched, inc = out.found.patched, out.found.inc
    for section in out.sections[1:]:
        if section is out.records:
            continue
        assert section.source is not None
        src = patched.sections[section.source]
        if not src.relocs:
            continue
        keep_span = _kept_span(inc, section.source)
        emap = out.entry_maps.get(section.source)
        partners: list[tuple[int, Reloc]] = []  # relocations naming a partner's place: written after it
        rewritten: dict[int, tuple[int, int]] = {}  # place of a partner written in its livepatch form -> sym, addend
        for r, t in zip(src.relocs, patched.targets[src.index], strict=True):
            offset = _reloc_place(out, section.source, r.offset, emap, keep_span)
            if offset is None:
                continue
            if r.type in out.plan.exact_place and r.sym in out.sym_of:
                partners.append((offset, r))
                continue
            addend = _reloc_addend(out, src, r, t)
            if t.sym in inc.helpers and (src.index, r.offset) not in inc.helper_calls \
                    and section.source not in out.specials and section.source not in out.companions:
                # not a call the helper copy exists for (an address taken, a pointer in data): the kernel's own
                section.relocs.append((offset, r.type, _running_kernel_symbol(out, t.sym), addend))
                continue
            symbol = _reloc_symbol(patched, t.sym, out.sym_of, out.section_sym, out.out_of)
            form = out.plan.livepatch_forms.get(r.type)
            if form is not None and symbol in out.klp_syms:
                _rewrite_instruction(section, offset, form, patched.path)
                rewritten[r.offset] = (symbol, addend)
                section.relocs.append((offset, form.type, symbol, addend))
                continue
            section.relocs.append((offset, r.type, symbol, addend))
        if partners:
            _partner_relocations(out, section, src, partners, rewritten)


def _partner_relocations(out: _Out, section: OutSection, src: Section, partners: list[tuple[int, Reloc]],
                         rewritten: dict[int, tuple[int, int]]) -> None:
    """Relocations that name their partner's place (a PCREL_LO12 its auipc): against the symbol at that
    place, as it is, or, when the partner was written in its livepatch form, in theirs, against the
    partner's target (the loader pairs them no more: each is applied alone)."""
    for offset, r in partners:
        place = out.found.patched.symbols[r.sym]
        partner = rewritten.get(place.value) if place.shndx == src.index else None
        form = out.plan.livepatch_forms.get(r.type)
        if partner is not None and form is not None:
            section.relocs.append((offset, form.type, *partner))
        else:  # the symbol is where the partner sits, copied with it
            section.relocs.append((offset, r.type, out.sym_of[r.sym], r.addend))
    section.relocs.sort(key=lambda rel: rel[0])  # (stable: relocations at one offset keep their order)


def _rewrite_instruction(section: OutSection, offset: int, form: LivepatchRewrite, path: str) -> None:
    """The instruction at `offset` of an output section, rewritten for a relocation's livepatch form."""
    if form.match is None or form.replace is None:
        return
    captured = form.match.match(section.data, offset)
    if captured is None:
        raise InputError(f"{path}: the instruction at {section.name}+{offset:#x} is not the one "
                         f"{form.origin} rewrites")
    data = bytearray(section.data)
    data[offset:offset + len(form.replace)] = form.replace.render(captured, section.data[offset:])
    section.data = bytes(data)


def _reloc_place(out: _Out, source: int, offset: int, emap: dict[int, int] | None,
                 keep_span: int | None) -> int | None:
    """Where a relocation at `offset` of patched section `source` lands in the output (None: its
    entry, string or piece is not copied)."""
    if emap is not None and keep_span is not None:
        base = offset - offset % keep_span
        return emap[base] + offset % keep_span if base in emap else None
    if source in out.found.inc.strings:
        return None
    if source in out.pieces:
        return _moved(out.pieces[source], offset)  # None: a relocation of an object that is not copied
    return offset


def _reloc_addend(out: _Out, src: Section, r: Reloc, t: Target) -> int:
    """A relocation's addend in the output: a reference into a compacted table or a piece follows
    what it points at."""
    patched, bias_of = out.found.patched, out.plan.bias_of
    addend = t.addend
    tsym = patched.symbols[t.sym]
    if tsym.type == STT_SECTION and tsym.shndx in out.entry_maps:
        return _into_entry(patched, out.found.inc, out.entry_maps, tsym.shndx, r.type, addend,
                           bias_of(r.type, src.is_text) if bias_of else 0, src.name)
    if tsym.type == STT_SECTION and tsym.shndx in out.pieces:  # a place no symbol holds, in a piece
        bias = bias_of(r.type, src.is_text) if bias_of else 0
        moved_place = _moved(out.pieces[tsym.shndx], addend + bias)
        if moved_place is None:
            raise RuntimeError(f"{patched.path}: {src.name}+{r.offset:#x} refers to {tsym.name}+"
                               f"{addend + bias:#x}, which is not copied")
        return moved_place - bias
    return addend


def _site_relocations(out: _Out) -> None:
    """The relocations of rewritten boot-only sites (their sections have none there)."""
    for e in out.edits:
        section = out.sections[out.out_of[e.section]]
        section.relocs.extend((nr.offset, nr.type, out.sym_of[nr.symbol] if nr.symbol is not None
                               else out.named[nr.name], nr.addend) for nr in e.relocs)
        section.relocs.sort(key=lambda rel: rel[0])


# the pieces of a by-object section in the output: (start, end, new start), in order
_Pieces = list[tuple[int, int, int]]


def _lay_out_pieces(ranges: list[tuple[int, int]], align: int) -> _Pieces:
    """Overlapping pieces merged, each placed at the next multiple of the section's alignment."""
    merged: list[list[int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, at = [], 0
    for start, end in merged:
        at = -(-at // max(align, 1)) * max(align, 1)
        out.append((start, end, at))
        at += end - start
    return out


# generic content section types a copy keeps as they are: PROGBITS, NOTE, NOBITS, INIT_ARRAY,
# FINI_ARRAY, PREINIT_ARRAY (the ELF gABI); OS-, processor- and user-specific types mean things klpdiff
# does not know
COPYABLE_TYPES = frozenset({1, 7, 8, 14, 15, 16})


def _type_kind(sh_type: int) -> str:
    if 0x60000000 <= sh_type <= 0x6FFFFFFF:
        return "OS-specific"
    if 0x70000000 <= sh_type <= 0x7FFFFFFF:
        return "processor-specific"
    if 0x80000000 <= sh_type <= 0xFFFFFFFF:
        return "application-specific"
    return "not a content type"


def _pieces_data(data: bytes, pieces: _Pieces) -> bytes:
    out = bytearray()
    for start, end, new in pieces:
        out.extend(bytes(new - len(out)))
        out.extend(data[start:end])
    return bytes(out)


def _moved(pieces: _Pieces, offset: int) -> int | None:
    """Where `offset` of the input section lands in the output, None if no piece holds it."""
    for start, end, new in pieces:
        if start <= offset < end:
            return new + offset - start
    return None


def _kept_code_section(patched: ElfObject, plan: SpecialPlan | None) -> int | None:
    """The section of the code the first kept entry of a special section points at."""
    if plan is None or not plan.kept:
        return None
    size = plan.layout.size
    sec = patched.sections[plan.section]
    for r, t in zip(sec.relocs, patched.targets.get(plan.section, []), strict=True):
        if r.offset // size in plan.kept:
            sym = patched.symbols[t.sym]
            if sym.is_defined and patched.sections[sym.shndx].is_text:
                return sym.shndx
    return None


def _edited(data: bytes, edits: list[CodeEdit]) -> bytes:
    if not edits:
        return data
    out = bytearray(data)
    for e in edits:
        out[e.offset:e.offset + len(e.data)] = e.data
    return bytes(out)


def _klp_table(sections: list[OutSection], symbols: list[OutSymbol], section_sym: dict[int, int],
               klp_syms: set[int], abs64: int, little: bool) -> None:
    """List the relocations against livepatch symbols in `.klpdiff.relocs`: per entry a pointer to the
    place (section symbol + offset), a pointer to the symbol (with the original addend) and the type.
    Both pointers are ordinary relocations, so the table survives `ld -r` and modpost. The original
    relocations stay where they are, against the weak placeholder symbol, so that tools that run
    before post-link (objtool at a module's link, which writes its ORC data) see every call and
    reference; post-link removes them when it makes the `.klp.rela` sections (as objtool's own
    klp post-link does)."""
    entries: list[tuple[int, int, int, int, int]] = []  # out section, offset, type, sym, addend
    for n, out in enumerate(sections):
        if out.type == SHT_RELA:
            continue
        entries.extend((n, off, typ, sym, addend) for off, typ, sym, addend in out.relocs if sym in klp_syms)
    end = "<" if little else ">"
    data = b"".join(struct.pack(end + "QQII", 0, 0, typ, 0) for _, _, typ, _, _ in entries)
    table = OutSection(RELOCS_SECTION, SHT_PROGBITS, 0, 8, RELOC_ENTRY, data, len(data))
    for i, (n, off, _typ, sym, addend) in enumerate(entries):
        table.relocs.append((i * RELOC_ENTRY, abs64, section_sym[n], off))
        table.relocs.append((i * RELOC_ENTRY + 8, abs64, sym, addend))
    sections.append(table)


def _into_entry(patched: ElfObject, inc: Inclusion, entry_maps: dict[int, dict[int, int]], shndx: int,
                rtype: int, addend: int, bias: int, source: str) -> int:
    """A reference from copied code into a special section (e.g. to its own bug entry) follows the
    entry to its place in the compacted output section."""
    span = _kept_span(inc, shndx)
    assert span is not None
    place = addend + bias
    base = place - place % span
    new_base = entry_maps[shndx].get(base)
    if new_base is None:
        raise InputError(f"{patched.path}: {source} references entry {base // span} of "
                         f"{patched.sections[shndx].name}, which is not kept for the output")
    return addend + new_base - base


def _kept_span(inc: Inclusion, source: int) -> int | None:
    for plan in inc.special:
        if plan.section == source:
            return plan.layout.size
    return None


def _reloc_symbol(patched: ElfObject, sym_index: int, sym_of: dict[int, int], section_sym: dict[int, int],
                  out_of: dict[int, int]) -> int:
    if sym_index == 0:
        return 0  # relocations against no symbol (R_PPC64_ENTRY, R_*_NONE) stay so
    sym = patched.symbols[sym_index]
    if sym.type == STT_SECTION:
        out_sec = out_of.get(sym.shndx)
        if out_sec is None or out_sec not in section_sym:
            raise InputError(f"{patched.path}: included code references section {sym.name}, "
                             f"which no rule carries into the output")
        return section_sym[out_sec]
    return sym_of[sym_index]
