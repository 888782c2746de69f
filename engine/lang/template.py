"""Instruction templates: match machine code and write a replacement, as ISA manuals spell encodings.

A template is a space-separated list of byte tokens:

- `48`: a byte in hex;
- `??`: any byte (in a replacement: the byte at the same place in the matched code);
- `02/1f`: a byte under a bit mask, both in hex: the bits the mask sets must be those of the value,
  the others are any (in a replacement: those of the matched code);
- `0100100b`: eight bits, most significant first, each `0`, `1`, `.` (any bit; in a replacement:
  the bit at the same place in the matched code) or a letter. A letter captures bits: all bits with
  the same letter, in order, form one value. In a replacement a letter writes that value back,
  so `0100100b 10111rrr` → `01001b00 8b 00rrr101` moves the register number of a `movabs` into the
  ModRM byte of a `mov`. An uppercase letter is a back-reference: in a match, its bits must equal
  those its lowercase letter captured (`c0 rrrr1000 ... c0 RRRR1001`: both instructions name the
  same register); in a replacement it writes the lowercase letter's value.

In: template text. Out: a `Template` that can `match` bytes (giving the captured values) and
`render` a replacement from captured values. Rule files use these wherever they describe machine
code: `rewrite:` (special-sections), `branches`, `line_loads`, and the `insn`/`unless_next` of call
forms and relocation refusals.
"""

from __future__ import annotations

import re

from ..core.records import record

_HEX = re.compile(r"^[0-9a-fA-F]{2}$")
_MASKED = re.compile(r"^[0-9a-fA-F]{2}/[0-9a-fA-F]{2}$")
_BITS = re.compile(r"^[01.a-zA-Z]{8}$")


class TemplateError(ValueError):
    """A template that cannot be parsed; the message names the token."""


@record
class _Byte:
    """One byte of an instruction template: its fixed bits and the letters' bits."""

    value: int       # fixed bits
    mask: int        # which bits are fixed
    fields: tuple[tuple[str, int], ...]  # (letter, bit position) from most significant down


@record
class Template:
    """An instruction template (the syntax: this module's docstring): fixed bits and named fields."""

    text: str
    bytes_: tuple[_Byte, ...]

    def __len__(self) -> int:
        return len(self.bytes_)

    @property
    def letters(self) -> dict[str, int]:
        """Each captured letter and how many bits it has."""
        out: dict[str, int] = {}
        for b in self.bytes_:
            for letter, _bit in b.fields:
                out[letter] = out.get(letter, 0) + 1
        return out

    def fits(self, data: bytes, offset: int) -> bool:
        """Does `data[offset:]` match?"""
        return self.match(data, offset) is not None

    def match(self, data: bytes, offset: int) -> dict[str, int] | None:
        """The captured values (lowercase letters) when `data[offset:]` matches, else None."""
        if offset < 0 or offset + len(self.bytes_) > len(data):
            return None
        captured: dict[str, int] = {}
        for i, b in enumerate(self.bytes_):
            actual = data[offset + i]
            if actual & b.mask != b.value:
                return None
            for letter, bit in b.fields:
                captured[letter] = (captured.get(letter, 0) << 1) | ((actual >> bit) & 1)
        backrefs = {letter for letter in captured if letter.isupper()}
        if any(captured[letter] != captured.get(letter.lower()) for letter in backrefs):
            return None
        return {letter: value for letter, value in captured.items() if letter not in backrefs}

    def number(self, data: bytes, offset: int, letter: str, little_endian: bool) -> int | None:
        """The value of `letter`'s bits when `data[offset:]` matches, read as the instruction holds
        it: in a little-endian object the last byte is the most significant."""
        if self.match(data, offset) is None:
            return None
        order = reversed(range(len(self.bytes_))) if little_endian else range(len(self.bytes_))
        value = 0
        for i in order:
            for name, bit in self.bytes_[i].fields:
                if name == letter:
                    value = (value << 1) | ((data[offset + i] >> bit) & 1)
        return value

    def field_mask(self, letter: str) -> bytes:
        """Per byte, the bits that belong to `letter`."""
        return bytes(sum(1 << bit for name, bit in b.fields if name == letter) for b in self.bytes_)

    def render(self, captured: dict[str, int], original: bytes) -> bytes:
        """The replacement bytes: fixed bits, captured letters, and `original` where the template
        leaves a bit open (`??`, `.`)."""
        remaining = dict(self.letters)
        out = bytearray()
        for i, b in enumerate(self.bytes_):
            value = (original[i] if i < len(original) else 0) & ~b.mask & 0xFF | b.value
            for letter, bit in b.fields:
                remaining[letter] -= 1
                field_value = captured[letter.lower()]
                value = value & ~(1 << bit) | (((field_value >> remaining[letter]) & 1) << bit)
            out.append(value)
        return bytes(out)


def parse_template(text: str) -> Template:
    tokens = text.split()
    if not tokens:
        raise TemplateError("empty instruction template")
    out = []
    for token in tokens:
        if token == "??":
            out.append(_Byte(0, 0, ()))
        elif _HEX.match(token):
            out.append(_Byte(int(token, 16), 0xFF, ()))
        elif _MASKED.match(token):
            value, mask = (int(part, 16) for part in token.split("/"))
            out.append(_Byte(value & mask, mask, ()))
        elif _BITS.match(token):
            value = mask = 0
            fields = []
            for pos, ch in enumerate(token):
                bit = 7 - pos
                if ch in "01":
                    mask |= 1 << bit
                    value |= int(ch) << bit
                elif ch != ".":  # a letter: captured, free when matching
                    fields.append((ch, bit))
            out.append(_Byte(value, mask, tuple(fields)))
        else:
            raise TemplateError(f"bad template token '{token}' (use two hex digits, ??, value/mask in hex, or "
                                f"eight of 0 1 . and letters)")
    template = Template(text, tuple(out))
    letters = template.letters
    for letter, bits in letters.items():
        if letter.isupper() and letters.get(letter.lower()) != bits:
            raise TemplateError(f"back-reference '{letter}' needs '{letter.lower()}' with the same {bits} bit(s)")
    return template


def check_replacement(match: Template, replace: Template) -> None:
    """A replacement must be as long as the code it replaces and use only letters the match captures,
    with the same number of bits."""
    if len(match) != len(replace):
        raise TemplateError(f"the replacement is {len(replace)} bytes but the match is {len(match)}: a "
                            f"rewrite keeps every other instruction where it is")
    captured = {letter: bits for letter, bits in match.letters.items() if letter.islower()}
    for letter, bits in replace.letters.items():
        if letter.lower() not in captured:
            raise TemplateError(f"the replacement uses '{letter}', which the match does not capture")
        if bits != captured[letter.lower()]:
            raise TemplateError(f"'{letter}' has {captured[letter]} bit(s) in the match but {bits} in the "
                                f"replacement")
