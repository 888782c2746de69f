"""Line tables and the __LINE__ decisions built on them, in process, on small objects gcc compiles here.
The line-shift and constant-change sweeps on real kernel files are tests/kernel/line_sweep.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from klpdiff.elf.linetables import is_line_move, line_table
from klpdiff.elf.read import read_elf
from klpdiff.lang.template import parse_template

SOURCE = """\
extern void report(const char *f, unsigned int line, int v);
static inline __attribute__((always_inline)) void check(int v, unsigned int line)
{
\tif (v > 3)
\t\treport("check", line, v);
}
int first(int v)
{
\tcheck(v, __LINE__);
\treturn v * 3;
}

int second(int v)
{
\tif (v)
\t\treport(__func__, __LINE__, v);
\treturn v + 1;
}
"""

CROSS = {"x86_64": "gcc", "s390x": "s390x-linux-gnu-gcc", "ppc64le": "powerpc64le-linux-gnu-gcc",
         "aarch64": "aarch64-linux-gnu-gcc"}


def _compile(tmp_path: Path, cc: str, source: str, name: str, *flags: str) -> Path:
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    out = tmp_path / f"{name}.o"
    subprocess.run([cc, "-O2", "-ffunction-sections", *flags, "-c", str(src), "-o", str(out)], check=True)
    return out


def _objdump_lines(objdump: str, path: Path) -> dict[tuple[str, int], int]:
    """(section, address) -> line, as `objdump -dl` prints them: binutils' own reading of the table."""
    out = subprocess.run([objdump, "-d", "-l", str(path)], capture_output=True, text=True, check=True).stdout
    section, line, rows = "", None, {}
    for text in out.splitlines():
        if m := re.match(r"Disassembly of section (\S+):", text):
            section, line = m.group(1), None
        elif m := re.match(r"^\S+\.c:(\d+)", text):
            line = int(m.group(1))
        elif (m := re.match(r"^\s+([0-9a-f]+):\t", text)) and line is not None:
            rows[(section, int(m.group(1), 16))] = line
    return rows


@pytest.mark.parametrize("arch", sorted(CROSS))
def test_the_line_of_every_instruction_is_the_one_binutils_reads(tmp_path: Path, arch: str) -> None:
    cc = CROSS[arch]
    objdump = cc[: -len("gcc")] + "objdump" if arch != "x86_64" else "objdump"
    if shutil.which(cc) is None or shutil.which(objdump) is None:
        pytest.skip(f"no {cc} / {objdump} (install the Debian cross toolchain)")
    path = _compile(tmp_path, cc, SOURCE, "a", "-g")
    obj = read_elf(path)
    table = line_table(obj)
    assert table is not None
    expected = _objdump_lines(objdump, path)
    assert len({s for s, _ in expected}) >= 2  # several code sections, each at address 0
    names = {sec.name: sec.index for sec in obj.sections}
    # objdump goes on naming the last line after a sequence ends (alignment padding); klpdiff knows none
    ends = {name: table.sections[i].addresses[-1] for name, i in names.items() if i in table.sections}
    expected = {(section, address): line for (section, address), line in expected.items() if address < ends[section]}
    got = {(section, address): table.line_at(names[section], address) for section, address in expected}
    assert got == expected


def test_no_debug_information_means_no_line_table(tmp_path: Path) -> None:
    assert line_table(read_elf(_compile(tmp_path, "gcc", SOURCE, "a", "-g0"))) is None


def test_a_line_move_is_an_instruction_s_two_lines_or_bracketed_by_equal_moves() -> None:
    moves = {10: 11, 12: 13, 20: 20, 30: 31}
    assert is_line_move(moves, 10, 11)           # an instruction has line 10, then 11
    assert is_line_move(moves, 11, 12)           # no instruction of its own; 10 and 12 both moved by 1
    assert not is_line_move(moves, 11, 13)       # moved by another distance than its neighbours
    assert not is_line_move(moves, 15, 16)       # 12 moved by 1 but 20 did not: the move is not attested
    assert not is_line_move(moves, 5, 6)         # no line of the function below it
    assert not is_line_move(moves, 10, 10)       # the same value is no difference at all
    assert not is_line_move({}, 10, 11)


@pytest.mark.parametrize(("template", "data", "little_endian", "value"), [
    ("10111... nnnnnnnn nnnnnnnn nnnnnnnn nnnnnnnn", "be 39 05 00 00", True, 0x539),       # x86 mov $1337,%esi
    ("a7 ....1001 nnnnnnnn nnnnnnnn", "a7 39 05 39", False, 0x539),                        # s390x lghi %r3,1337
    ("nnnnnnnn nnnnnnnn ...00000 001110..", "39 05 a0 38", True, 0x539),                  # ppc64le li r5,1337
    ("nnn..... nnnnnnnn 100nnnnn .1010010", "21 a7 80 52", True, 0x539),                  # aarch64 mov w1,#1337
])
def test_an_immediate_is_read_in_the_object_s_byte_order(template: str, data: str, little_endian: bool,
                                                         value: int) -> None:
    assert parse_template(template).number(bytes.fromhex(data), 0, "n", little_endian) == value


def _diff(tmp_path: Path, orig: Path, patched: Path) -> tuple[int, str, dict[str, object]]:
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", str(orig), str(patched), "-o",
                           str(tmp_path / "out.o"), "--json", str(report)], capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr, json.loads(report.read_text())


CONSTANT = """\
extern int printk(const char *fmt, ...);
extern void __might_sleep(const char *file, int line);
int limit(int x)
{
\tif (x > 2)
\t\tprintk("limit %d reached\\n", LIMIT);
\t__might_sleep("a.c", 7);
\treturn x;
}
"""


def test_without_line_tables_a_masked_constant_is_named_with_a_warning(tmp_path: Path) -> None:
    orig = _compile(tmp_path, "gcc", CONSTANT, "o", "-g0", "-DLIMIT=5")
    patched = _compile(tmp_path, "gcc", CONSTANT, "p", "-g0", "-DLIMIT=6")
    rc, text, doc = _diff(tmp_path, orig, patched)
    assert rc == 3
    assert doc["line_number_heuristic"] == ["limit"] and doc["line_number_only"] == ["limit"]
    assert "warning: 1 function(s) judged __LINE__ only by heuristic" in text and "compile with -g" in text


def test_with_line_tables_the_same_constant_change_is_found(tmp_path: Path) -> None:
    orig = _compile(tmp_path, "gcc", CONSTANT, "o", "-g", "-DLIMIT=5")
    patched = _compile(tmp_path, "gcc", CONSTANT, "p", "-g", "-DLIMIT=6")
    rc, text, doc = _diff(tmp_path, orig, patched)
    assert doc["changed_functions"] == ["limit"] and doc["line_number_heuristic"] == []
    assert "warning" not in text
    assert rc != 3


def test_a_corrupt_line_table_is_bad_input_never_a_crash(tmp_path: Path) -> None:
    import dataclasses
    import random

    from klpdiff.core.errors import InputError

    obj = read_elf(_compile(tmp_path, "gcc", SOURCE, "a", "-g"))
    sec = obj.section_by_name(".debug_line")
    assert sec is not None
    rng = random.Random(5)
    outcomes = {"table": 0, "bad input": 0}
    for _ in range(300):
        data = bytearray(sec.data)
        for _flip in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.2:
            data = data[: rng.randrange(len(data))]
        obj.sections[sec.index] = dataclasses.replace(sec, data=bytes(data), size=len(data))
        try:
            line_table(obj)
            outcomes["table"] += 1
        except InputError as err:
            assert ".debug_line" in str(err)
            outcomes["bad input"] += 1
    assert outcomes["table"] and outcomes["bad input"]
