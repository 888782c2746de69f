"""The debug-information reader and the type layouts: checked against pyelftools' reading of the
same objects, compiled here for several arches and DWARF versions, and against damaged input."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from klpdiff.core.errors import InputError
from klpdiff.elf.dwarf import debug_info
from klpdiff.elf.layout import changed_types, layouts
from klpdiff.elf.read import read_elf

SOURCE = r"""
typedef unsigned int u32;
typedef struct { int counter; } atomic_t;
struct list_head { struct list_head *next, *prev; };
enum state { IDLE, BUSY = 4, GONE };
struct inner { char tag; long value; };
struct sample {
	u32 flags;
	atomic_t users;
	struct list_head node;
	unsigned int mode:3, busy:1, :0, wide:20;
	union { long word; char bytes[6]; };
	struct { short lo, hi; } pair;
	struct inner in[2];
	enum state st;
	void (*done)(struct sample *, int);
	char name[];
};
union value { long l; double d; struct sample *s; };
int use(struct sample *s, union value *v, atomic_t *a) { return s->users.counter + s->busy + (int)v->l + a->counter; }
"""

TOOLCHAINS = {"x86_64": "gcc", "s390x": "s390x-linux-gnu-gcc", "ppc64le": "powerpc64le-linux-gnu-gcc",
              "aarch64": "aarch64-linux-gnu-gcc"}


def _compile(tmp: Path, cc: str, dwarf: str, defines: tuple[str, ...] = ()) -> Path:
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed (test.sh installs the Debian cross toolchains as root)")
    src = tmp / "sample.c"
    src.write_text(SOURCE)
    obj = tmp / f"sample-{dwarf}{''.join(defines)}.o"
    subprocess.run([cc, "-O2", f"-g{dwarf}", "-ffunction-sections", "-fdata-sections", *defines, "-c", str(src),
                    "-o", str(obj)], check=True)
    return obj


def _pyelftools_structs(path: Path) -> dict[str, tuple[int, list[tuple[str, int, int | None]]]]:
    """Every named, complete struct: its size, and each named member's offset and bit size."""
    out = {}
    with path.open("rb") as f:
        elf = ELFFile(f)
        for cu in elf.get_dwarf_info().iter_CUs():
            for die in cu.iter_DIEs():
                if die.tag != "DW_TAG_structure_type" or "DW_AT_name" not in die.attributes \
                        or "DW_AT_declaration" in die.attributes:
                    continue
                members = []
                for m in die.iter_children():
                    if m.tag != "DW_TAG_member" or "DW_AT_name" not in m.attributes:
                        continue
                    loc = m.attributes.get("DW_AT_data_member_location")
                    bit_offset = m.attributes.get("DW_AT_data_bit_offset")
                    offset = loc.value if loc is not None else bit_offset.value // 8 if bit_offset else 0
                    bits = m.attributes.get("DW_AT_bit_size")
                    members.append((m.attributes["DW_AT_name"].value.decode(), offset,
                                    bits.value if bits is not None else None))
                out["struct " + die.attributes["DW_AT_name"].value.decode()] = (
                    die.attributes["DW_AT_byte_size"].value, members)
    return out


@pytest.mark.parametrize("arch", sorted(TOOLCHAINS))
@pytest.mark.parametrize("dwarf", ["dwarf-4", "dwarf-5"])
def test_struct_layouts_agree_with_pyelftools(arch: str, dwarf: str, tmp_path: Path) -> None:
    obj = _compile(tmp_path, TOOLCHAINS[arch], dwarf)
    info = debug_info(read_elf(obj))
    assert info is not None
    lay = layouts(info)
    want = _pyelftools_structs(obj)
    assert set(want) <= set(lay.by_name)
    for name, (size, members) in want.items():
        (layout,) = lay.by_name[name]
        assert layout.size == size, name
        # klpdiff lists the members of anonymous aggregates in their place (word, bytes, pair.lo, pair.hi)
        got = [(m.name, m.offset, m.bit_size) for m in layout.members if "." not in m.name
               and m.name not in ("word", "bytes")]
        assert got == [m for m in members if m[0] != "pair"], name
    (sample,) = lay.by_name["struct sample"]
    types = {m.name: m.type for m in sample.members}
    assert types["flags"] == "unsigned int"            # typedefs resolved
    assert types["users"] == "atomic_t"                # an anonymous struct goes by its typedef's name
    assert types["done"] == "fn(struct sample *, int) -> void *"
    assert types["in"] == "struct inner[2]" and types["name"] == "char[]"
    assert types["word"] == "long int" and types["bytes"] == "char[6]" and types["pair.hi"] == "short int"
    assert "atomic_t" in lay.by_name and "enum state" in lay.by_name
    (state,) = lay.by_name["enum state"]
    assert state.enumerators == (("IDLE", 0), ("BUSY", 4), ("GONE", 5))
    assert [die for dies in info.functions.values() for die in dies], "the function's entry is placed"


def test_a_changed_member_type_of_the_same_size_is_a_change(tmp_path: Path) -> None:
    before = _compile(tmp_path, "gcc", "dwarf-5")
    src = (tmp_path / "sample.c")
    src.write_text(SOURCE.replace("enum state st;", "u32 st;"))
    after = tmp_path / "after.o"
    subprocess.run(["gcc", "-O2", "-g", "-c", str(src), "-o", str(after)], check=True)
    info_b, info_a = debug_info(read_elf(before)), debug_info(read_elf(after))
    assert info_b is not None and info_a is not None
    changes = changed_types(layouts(info_b), layouts(info_a))
    assert list(changes) == ["struct sample"]
    assert changes["struct sample"].how == ("st: enum state at 80 -> unsigned int at 80",)


def test_no_debug_info_is_none(tmp_path: Path) -> None:
    src = tmp_path / "plain.c"
    src.write_text("int f(int x) { return x + 1; }\n")
    obj = tmp_path / "plain.o"
    subprocess.run(["gcc", "-O2", "-c", str(src), "-o", str(obj)], check=True)
    assert debug_info(read_elf(obj)) is None


def test_damaged_debug_info_is_one_input_error(tmp_path: Path) -> None:
    obj = _compile(tmp_path, "gcc", "dwarf-5")
    elf = read_elf(obj)
    sec = elf.section_by_name(".debug_info")
    assert sec is not None
    whole = sec.data
    errors = 0
    for cut in range(12, len(whole), max(1, len(whole) // 40)):
        for damaged in (whole[:cut], whole[:cut] + b"\xff" * 8 + whole[cut + 8:]):
            sec.data = damaged
            try:
                info = debug_info(elf)
            except InputError as err:
                assert str(err).startswith(f"{obj}: .debug_info"), err
                errors += 1
                continue
            if info is not None:
                layouts(info)  # whatever was read, the layouts are made without another exception
    assert errors > 0


CALLS = r"""
int callee(int);
void other(void);
int caller(int x) { int y = callee(x) + 1; other(); return callee(y) * 3; }
"""


@pytest.mark.parametrize("arch", sorted(TOOLCHAINS))
@pytest.mark.parametrize("dwarf", ["dwarf-4", "dwarf-5"])
def test_call_sites_are_where_the_calls_return(arch: str, dwarf: str, tmp_path: Path) -> None:
    """DebugInfo.calls: every call the compiler emitted has its return (or call) address recorded
    (DWARF 5 call sites, DWARF 4's GNU ones), which the comparison asks about branch-like bytes."""
    cc = TOOLCHAINS[arch]
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed (test.sh installs the Debian cross toolchains as root)")
    src, obj = tmp_path / "calls.c", tmp_path / "calls.o"
    src.write_text(CALLS)
    subprocess.run([cc, "-O2", f"-g{dwarf}", "-ffunction-sections", "-c", str(src), "-o", str(obj)], check=True)
    elf = read_elf(obj)
    info = debug_info(elf)
    assert info is not None
    text = next(i for i, s in enumerate(elf.sections) if s.name == ".text.caller")
    recorded = sorted(at for shndx, at in info.calls if shndx == text)
    call_relocs = sorted(r.offset for r in elf.sections[text].relocs
                         if elf.symbols[r.sym].name in ("callee", "other"))
    assert len(call_relocs) == 3
    assert len(recorded) == 3  # one per call (the last may be a tail call)
    # each recorded address is at or just after one call's relocated field: the call's own place
    for at, field_at in zip(recorded, call_relocs, strict=True):
        assert 0 <= at - field_at <= 8, (recorded, call_relocs)
