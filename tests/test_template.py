"""Instruction templates (engine/lang/template.py), in process: parsing, matching, rendering."""

from __future__ import annotations

import pytest

from klpdiff.lang.template import TemplateError, check_replacement, parse_template

# x86-64 `movabs $0x0123456789abcdef, %reg` -> `mov 0(%rip), %reg; nopl (%rax)` (rules/x86_64)
MOVABS = parse_template("0100100b 10111rrr ef cd ab 89 67 45 23 01")
RIPLOAD = parse_template("01001b00 8b 00rrr101 00 00 00 00 0f 1f 00")
PLACEHOLDER = bytes.fromhex("efcdab8967452301")


@pytest.mark.parametrize(("rex", "opcode", "reg", "out_rex", "modrm"), [
    (0x48, 0xB8, 0, 0x48, 0x05),    # %rax
    (0x48, 0xB9, 1, 0x48, 0x0D),    # %rcx
    (0x48, 0xBF, 7, 0x48, 0x3D),    # %rdi
    (0x49, 0xB8, 8, 0x4C, 0x05),    # %r8: REX.B becomes REX.R
    (0x49, 0xBD, 13, 0x4C, 0x2D),   # %r13
    (0x49, 0xBF, 15, 0x4C, 0x3D),   # %r15
])
def test_movabs_becomes_rip_relative_load_of_the_same_register(rex: int, opcode: int, reg: int, out_rex: int,
                                                               modrm: int) -> None:
    code = b"\x90\x90" + bytes([rex, opcode]) + PLACEHOLDER + b"\xc3"
    captured = MOVABS.match(code, 2)
    assert captured == {"b": reg >> 3, "r": reg & 7}
    out = RIPLOAD.render(captured, code[2:12])
    assert out == bytes([out_rex, 0x8B, modrm, 0, 0, 0, 0, 0x0F, 0x1F, 0x00])


def test_match_needs_every_fixed_bit_and_stays_inside_the_data() -> None:
    code = bytes([0x48, 0xB8]) + PLACEHOLDER
    assert MOVABS.match(code, 0) is not None
    assert MOVABS.match(code[:-1], 0) is None                       # runs past the end
    assert MOVABS.match(code, -1) is None
    assert MOVABS.match(bytes([0x48, 0xB8]) + bytes(8), 0) is None  # not the placeholder
    assert MOVABS.match(bytes([0x44, 0xB8]) + PLACEHOLDER, 0) is None  # REX.W missing


def test_open_bits_and_bytes_copy_the_original() -> None:
    tpl = parse_template("?? 1111....")
    assert tpl.match(bytes([0x12, 0xF7]), 0) == {}
    assert tpl.render({}, bytes([0x12, 0x07])) == bytes([0x12, 0xF7])


def test_letters_span_bytes_most_significant_first() -> None:
    tpl = parse_template("0000aaaa aaaa0000")
    captured = tpl.match(bytes([0x0A, 0xB0]), 0)
    assert captured == {"a": 0xAB}
    assert parse_template("aaaaaaaa 00000000").render(captured, b"\0\0") == bytes([0xAB, 0])


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "empty"),
    ("4", "bad template token '4'"),
    ("0x48", "bad template token"),
    ("0101010", "bad template token"),
    ("01010102", "bad template token"),
])
def test_bad_templates_name_the_token(text: str, fragment: str) -> None:
    with pytest.raises(TemplateError, match=fragment):
        parse_template(text)


def test_a_replacement_must_fit_the_match() -> None:
    with pytest.raises(TemplateError, match="is 1 bytes but the match is 10"):
        check_replacement(MOVABS, parse_template("90"))
    with pytest.raises(TemplateError, match="'q', which the match does not capture"):
        check_replacement(parse_template("10111rrr"), parse_template("10111qqq"))
    with pytest.raises(TemplateError, match="'r' has 3 bit"):
        check_replacement(parse_template("10111rrr"), parse_template("101111rr"))
    check_replacement(MOVABS, RIPLOAD)


def test_uppercase_letters_are_back_references() -> None:
    # s390x runtime_const_ptr: iihf %rN / iilf %rN must name the same register
    tpl = parse_template("c0 rrrr1000 01 23 45 67 c0 RRRR1001 89 ab cd ef")
    same = bytes.fromhex("c0580123456 7c0598 9abcdef".replace(" ", ""))
    assert tpl.match(same, 0) == {"r": 5}
    assert tpl.match(bytes.fromhex("c05801234567c06989abcdef"), 0) is None  # %r5 then %r6
    lgrl = parse_template("c4 rrrr1000 00 00 00 00 c0 04 00 00 00 00")
    check_replacement(tpl, lgrl)
    assert lgrl.render({"r": 5}, same) == bytes.fromhex("c45800000000c00400000000")
    with pytest.raises(TemplateError, match="back-reference 'Q'"):
        parse_template("Q.......")


def test_a_masked_byte_fixes_only_the_bits_of_its_mask() -> None:
    """`01/03` (ppc64le's local-entry nop forms): the two low bits must be 01, the rest are free."""
    form = parse_template("01/03 ?? ?? 48/fc")
    assert form.fits(bytes([0x01, 0, 0, 0x48]), 0) and form.fits(bytes([0xFD, 9, 9, 0x4B]), 0)
    assert not form.fits(bytes([0x02, 0, 0, 0x48]), 0) and not form.fits(bytes([0x01, 0, 0, 0x4C]), 0)
    assert not form.fits(bytes([0x01, 0, 0]), 0)  # cut short
    assert parse_template("??").render({}, b"\x7f") == b"\x7f"
    assert parse_template("10/f0").render({}, b"\x3a") == b"\x1a"  # the mask's bits written, the rest kept


@pytest.mark.parametrize("token", ["1/03", "01/3", "01/", "/03", "0g/ff"])
def test_a_malformed_masked_byte_names_the_token(token: str) -> None:
    with pytest.raises(TemplateError, match=f"bad template token '{token}'"):
        parse_template(f"e8 {token}")
