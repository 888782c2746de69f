"""Fast in-process tests of the engine's pieces on hand-built inputs (no compiler, no corpus).

As capa tests its engine with hand-built rules and features: the expression compiler, layout inference,
correlation and `__LINE__` noise matching, each on objects and rules written here.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from klpdiff.core.errors import LayoutError
from klpdiff.diff.classify import classify
from klpdiff.diff.correlate import correlate
from klpdiff.diff.entrytables import find_layout
from klpdiff.elf.linetables import LineTable, SectionLines, is_line_move, line_moves
from klpdiff.elf.model import (
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_WRITE,
    SHT_PROGBITS,
    STB_GLOBAL,
    STB_LOCAL,
    STT_FILE,
    STT_FUNC,
    STT_OBJECT,
    STT_SECTION,
    ElfObject,
    Reloc,
    Section,
    Symbol,
)
from klpdiff.elf.read import index_symbols, resolve_targets
from klpdiff.lang.expr import ExprError, compile_expr
from klpdiff.lang.views import SYMBOL_SCHEMA
from klpdiff.ruleset.load import default_rules_dir, load_ruleset

RULES = load_ruleset([default_rules_dir()], "x86_64")


# ------------------------------------------------------------------------------------------------
# the expression compiler


def _sym_env(name: str, size: int = 8, defined: bool = True) -> SimpleNamespace:
    sym = SimpleNamespace(name=name, type="FUNC", bind="LOCAL", size=size, section=".text." + name,
                          defined=defined, function=True, object=False)
    return SimpleNamespace(sym=sym, section=SimpleNamespace(name=".text." + name, text=True, alloc=True,
                                                            write=False, strings=False, nobits=False, size=size))


@pytest.mark.parametrize(("text", "name", "expected"), [
    ('sym.name =~ "^__key\\.[0-9]+$"', "__key.12", True),
    ('sym.name =~ "^__key\\.[0-9]+$"', "__keys", False),
    ('sym.size > 4 and not startswith(sym.name, "x")', "ab", True),
    ('sym.name in ["a", "b"] or len(sym.name) == 5', "hello", True),
    ("sym.size - 2 == 6", "f", True),
    ('contains(section.name, ".text") and sym.defined', "f", True),
])
def test_an_expression_means_what_it_says(text: str, name: str, expected: bool) -> None:
    assert compile_expr(text, SYMBOL_SCHEMA)(_sym_env(name)) is expected


@pytest.mark.parametrize(("text", "message", "column"), [
    ("sym.name < 3", "'<' works on a number, not on text", 10),
    ("sym.size =~ 'x'", "'=~' matches text, not a number", 1),
    ("sym.size in sym.name", "'in' text looks for text, not for a number", 1),
    ("sym.nmae == 'x'", "unknown name 'nmae' in sym", 5),
    ("sym == 'x'", "'sym' is not a value", 1),
    ("len(sym.size)", "len() takes text or a list, not a number", 5),
    ("sym.name == 3", "compares text with a number: never equal", 10),
    ("sym.name =~ '('", "bad regular expression", 13),
])
def test_type_slips_and_unknown_names_fail_at_their_column(text: str, message: str, column: int) -> None:
    with pytest.raises(ExprError, match=re.escape(message)) as err:
        compile_expr(text, SYMBOL_SCHEMA)
    assert err.value.column == column


# ------------------------------------------------------------------------------------------------
# hand-built objects

def _obj(path: str, sections: list[Section], symbols: list[tuple[str, int, int, int, int, int]]) -> ElfObject:
    """symbols: (name, section, value, size, type, bind) after the NULL symbol and one FILE symbol."""
    syms = [Symbol(0, "", 0, 0, 0, 0, 0, 0), Symbol(1, "t.c", 0, 0, STB_LOCAL, STT_FILE, 0, -0xFFF1)]
    for name, shndx, value, size, stype, bind in symbols:
        syms.append(Symbol(len(syms), name, value, size, bind, stype, 0, shndx))
    obj = ElfObject(path, 62, True, 64, 0, 0, 0, sections, syms)
    index_symbols(obj)
    return obj


def _section(index: int, name: str, data: bytes, flags: int = SHF_ALLOC | SHF_EXECINSTR,
             relocs: list[Reloc] | None = None, entsize: int = 0) -> Section:
    return Section(index, name, SHT_PROGBITS, flags, 8, entsize, 0, 0, len(data), data, relocs or [])


# ------------------------------------------------------------------------------------------------
# layout inference

def _table(size: int, entry: int, offsets: list[int], entsize: int = 0) -> tuple[ElfObject, Section]:
    """A special section of `size` bytes whose relocations sit at `offsets` of each `entry`-byte entry."""
    text = _section(1, ".text.f", bytes(64))
    relocs = [Reloc(i * entry + off, 2, 2, 0) for i in range(size // entry) for off in offsets]
    table = _section(2, "__ex_table", bytes(size), SHF_ALLOC, relocs, entsize)
    obj = _obj("t.o", [_section(0, "", b"", 0), text, table], [("f", 1, 0, 64, STT_FUNC, STB_GLOBAL)])
    resolve_targets(obj, RULES.place_bias, lambda _s: False)
    return obj, table


def test_the_layout_comes_from_the_relocation_stride() -> None:
    spec = RULES.special_for("__ex_table")
    assert spec is not None
    sizes = sorted(lay.size for lay in spec.rule.layouts)
    assert 12 in sizes
    obj, table = _table(5 * 12, 12, [0, 4])
    layout, source = find_layout(table, spec, obj.relocs(), {}, obj.path)
    assert layout.size == 12 and source == "section size and relocation stride"


def test_a_forced_size_wins_and_a_size_that_fits_nothing_is_an_error() -> None:
    spec = RULES.special_for("__ex_table")
    assert spec is not None
    obj, table = _table(5 * 12, 12, [0, 4])
    assert find_layout(table, spec, obj.relocs(), {spec.struct: 12}, obj.path)[1] == "--struct-size"
    with pytest.raises(LayoutError, match="not a multiple of --struct-size"):
        find_layout(table, spec, obj.relocs(), {spec.struct: 7}, obj.path)
    obj, table = _table(7 * 10, 10, [0])
    with pytest.raises(LayoutError, match="--struct-size"):
        find_layout(table, spec, obj.relocs(), {}, obj.path)


# ------------------------------------------------------------------------------------------------
# correlation

def _pair(names_o: list[str], names_p: list[str]) -> dict[str, str]:
    """Correlate two objects that define these data objects, one section each; patched -> original."""
    def build(path: str, names: list[str]) -> ElfObject:
        sections = [_section(0, "", b"", 0)]
        symbols = []
        for name in names:
            sections.append(_section(len(sections), ".data." + name, bytes(8), SHF_ALLOC | SHF_WRITE))
            symbols.append((name, len(sections) - 1, 0, 8, STT_OBJECT, STB_LOCAL))
        symbols += [(".data." + n, i + 1, 0, 0, STT_SECTION, STB_LOCAL) for i, n in enumerate(names)]
        return _obj(path, sections, symbols)

    orig, patched = build("o.o", names_o), build("p.o", names_p)
    for obj in (orig, patched):
        resolve_targets(obj, RULES.place_bias, lambda _s: False)
    corr = correlate(orig, patched, classify(orig, RULES), classify(patched, RULES), RULES)
    return {patched.symbols[p].name: orig.symbols[o].name for p, o in corr.sym_twin.items()
            if patched.symbols[p].type == STT_OBJECT}


def test_names_pair_exactly_and_compiler_counters_do_not_matter() -> None:
    assert _pair(["a", "__UNIQUE_ID_modinfo12", "b.llvm.123"], ["__UNIQUE_ID_modinfo40", "a", "b.llvm.77"]) == \
        {"a": "a", "__UNIQUE_ID_modinfo40": "__UNIQUE_ID_modinfo12", "b.llvm.77": "b.llvm.123"}


def test_fresh_objects_never_pair_and_new_ones_stay_unpaired() -> None:
    # lockdep keys are each build's own (correlation.yaml fresh); "b" is new in the patched object
    assert _pair(["__key.3", "a"], ["__key.3", "a", "b"]) == {"a": "a"}


# ------------------------------------------------------------------------------------------------
# __LINE__ noise matching on line tables

def _lines(rows: list[tuple[int, int]], section: int = 1) -> LineTable:
    """A line table of one code section: (address, line) rows, all in file 1."""
    return LineTable({section: SectionLines([a for a, _ in rows], [line for _, line in rows], [1] * len(rows))})


def test_a_value_that_moved_with_its_line_is_a_line_move_and_another_is_not() -> None:
    orig = _lines([(0, 10), (4, 11), (8, 12)])
    patched = _lines([(0, 12), (4, 13), (8, 14)])
    moves = line_moves(orig, (1, 0), patched, (1, 0), 12).own
    assert moves == {10: 12, 11: 13, 12: 14}
    assert is_line_move(moves, 11, 13)
    assert not is_line_move(moves, 11, 12)  # 12 is where line 10 moved, not line 11
    assert not is_line_move(moves, 5, 7)    # nothing of the function is at or below line 5


def test_a_line_without_code_of_its_own_moves_with_its_neighbours() -> None:
    # line 20 (an inlined helper's call: its code carries the helper's lines) sits between 19 and 21
    moves = line_moves(_lines([(0, 19), (4, 21)]), (1, 0), _lines([(0, 22), (4, 24)]), (1, 0), 8).own
    assert is_line_move(moves, 20, 23)
    assert not is_line_move(moves, 20, 24)


def test_the_units_above_use_the_shipped_rules() -> None:
    assert Path(RULES.files[0]).is_file()


def test_a_caller_nothing_compares_stops_patching_through_callers(tmp_path: Path) -> None:
    """Found by the fuzzer: a caller whose status is unknown (nothing compared it) was patched as if
    unchanged, and crashed the livepatch plan; it is a named reason not to patch through callers."""
    import shutil
    import subprocess

    from klpdiff.diff.pipeline import Options, analyse

    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc")
    root = Path(__file__).resolve().parent
    flags = ["-O2", "-fno-pie", "-mcmodel=kernel", "-pg", "-mfentry", "-mrecord-mcount", "-ffunction-sections",
             "-fdata-sections", "-fno-asynchronous-unwind-tables", "-c", str(root / "examples" / "notrace-body.c")]
    subprocess.run([gcc, *flags, "-o", str(tmp_path / "a.o")], check=True)
    subprocess.run([gcc, *flags, "-DPATCHED", "-o", str(tmp_path / "b.o")], check=True)
    data = bytearray((tmp_path / "b.o").read_bytes())
    name = data.find(b"\0entry\0")
    assert name > 0
    data[name + 1: name + 6] = b".Lent"  # the caller becomes an assembler label, which nothing compares
    (tmp_path / "c.o").write_bytes(bytes(data))
    a = analyse(tmp_path / "a.o", tmp_path / "c.o", Options())
    assert any("nor patched through its callers: body is called from .Lent (in .text.entry), which klpdiff does "
               "not compare" in str(r) for r in a.refused), a.refused
    from klpdiff.diff.redirect import Obstacle

    assert [why.obstacle for why in a.inc.not_through.values()] == [Obstacle.UNCOMPARED_CALLER]


def test_the_elf64_structures_have_the_sizes_the_format_gives_them() -> None:
    from klpdiff.elf.structs import elf_structs

    for little in (True, False):
        layouts = elf_structs(little)
        assert (layouts.ehdr.size, layouts.shdr.size, layouts.sym.size, layouts.rela.size, layouts.word.size) == \
            (64, 64, 24, 24, 4)
    assert elf_structs(True).rela.pack(1, 2, -3)[:8] == (1).to_bytes(8, "little")
    assert elf_structs(False).rela.pack(1, 2, -3)[:8] == (1).to_bytes(8, "big")


def test_a_string_literal_ends_at_its_nul_and_an_offset_outside_reads_as_no_string() -> None:
    from klpdiff.elf.model import Section, c_bytes

    sec = Section(1, ".rodata.str1.1", 1, 0x32, 1, 1, 0, 0, 10, b"ab\0cd\0efgh")
    assert (sec.string_at(0), sec.string_at(3), sec.string_at(6), sec.string_at(10)) == (b"ab", b"cd", b"efgh", b"")
    assert sec.string_at(11).startswith(b"\0") and sec.string_at(-1) != sec.string_at(11)
    assert c_bytes(b"name\0", 1) == b"ame"


def test_a_predicate_list_as_one_function_gives_the_first_that_holds() -> None:
    from klpdiff.lang.expr import compile_first
    from klpdiff.lang.views import SECTION_SCHEMA

    first = compile_first(['section.name =~ "^\\.text"', "section.text", 'section.name == ".data.x"'],
                          SECTION_SCHEMA)
    env = _sym_env("f")
    assert first(env) == 0
    env.section.name = ".data.x"
    assert first(env) == 1  # text as well: the earlier rule wins
    env.section.text = False
    assert first(env) == 2
    env.section.name = ".bss"
    assert first(env) == -1
    assert compile_first([], SECTION_SCHEMA)(env) == -1


def test_the_last_special_section_rule_for_a_name_wins_exact_or_pattern() -> None:
    from dataclasses import replace

    from klpdiff.ruleset.compiled import NameMatcher, Ruleset

    base = RULES.special[0]
    exact_a = replace(base, matches=NameMatcher("__t"))
    pattern = replace(base, matches=NameMatcher("^__t", re.compile("^__t")))
    exact_b = replace(base, matches=NameMatcher("__t"))
    for order, winner in (([exact_a, pattern], 1), ([pattern, exact_a], 1), ([exact_a, pattern, exact_b], 2)):
        rs = Ruleset(arch=RULES.arch, arch_origin=RULES.arch_origin, special=list(order))
        assert rs.special_for("__t") is order[winner]
        assert rs.special_for("__tx") is pattern
        assert rs.special_for("_t") is None
        rs.special.append(exact_a)  # rules added later are seen
        assert rs.special_for("__t") is exact_a


def test_a_diff_pauses_the_cycle_collector_and_leaves_it_as_it_was() -> None:
    import gc

    from klpdiff.diff.pipeline import _without_cycle_collection

    for enabled in (True, False):
        (gc.enable if enabled else gc.disable)()
        with _without_cycle_collection():
            assert not gc.isenabled()
        assert gc.isenabled() is enabled
    gc.enable()


def test_the_normalisation_prefilter_never_skips_a_name_a_rule_would_change() -> None:
    from dataclasses import replace

    from klpdiff.ruleset.compile import any_of
    from klpdiff.ruleset.compiled import Ruleset

    normalize_name = Ruleset.normalize_name

    names = ["foo.constprop.0", "foo.isra.12.cold", "__UNIQUE_ID_ddebug123", "__BTF_ID__func__bpf_x__413",
             "bar.llvm.998877", ".str1.1", ".str1.8", "plain", "a.b", "x.1.2", "__key.99", "", "."]
    assert RULES.normalize_any is not None  # the shipped patterns combine
    unfiltered = replace(RULES, normalize_any=None, normalized={})
    for name in names:
        assert normalize_name(replace(RULES, normalized={}), name) == normalize_name(unfiltered, name), name
    assert any_of([re.compile(r"(a)\1")]) is None  # a back reference: would mean something else combined
    assert any_of([re.compile(r"(?P<n>a)"), re.compile(r"(?P<n>b)")]) is None
    combined = any_of([re.compile(r"^x"), re.compile(r"\.[0-9]+$")])
    assert combined is not None and combined.search("a.12") and not combined.search("ax")
