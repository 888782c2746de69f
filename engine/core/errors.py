"""Error types and the exit codes the command line maps them to.

In: what went wrong, where (a file, a rule's origin). Out: typed errors (`InputError`, `RuleError`, ...),
refusals and verdicts, each mapped to one exit code here, and `one_line`, which keeps any message to one
line.

Exit codes (the first three are kpatch's): 0 diff written, 3 nothing changed,
2 the change cannot be livepatched, 1 bad input or usage, 4 internal error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import field
from enum import StrEnum

from .records import record

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_REFUSED = 2
EXIT_NO_CHANGE = 3
EXIT_INTERNAL = 4


class Verdict(StrEnum):
    """What a diff (or a `klpdiff build`) came to; its value is the word in reports and JSON."""

    OK = "ok"                # an output was written (or, with --check, would be)
    NO_CHANGE = "no-change"  # nothing to patch
    ERROR = "error"          # refused: the change cannot be livepatched

    @property
    def exit_code(self) -> int:
        return {Verdict.OK: EXIT_OK, Verdict.NO_CHANGE: EXIT_NO_CHANGE, Verdict.ERROR: EXIT_REFUSED}[self]


@record
class Origin:
    """Where a rule was written."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@record
class Refusal:
    """One reason a change cannot be livepatched: the message, the rule that gave it (None: the
    engine's own), and the symbols of the patched object it is about."""

    message: str
    origin: Origin | None = None
    symbols: frozenset[int] = field(default_factory=frozenset)

    def __str__(self) -> str:
        return f"{self.message} [{self.origin}]" if self.origin is not None else self.message


def one_per_reason(refusals: Iterable[Refusal]) -> list[Refusal]:
    """One refusal per message and rule, however many places gave it (their symbols merged)."""
    merged: dict[tuple[str, Origin | None], Refusal] = {}
    for r in refusals:
        key = (r.message, r.origin)
        known = merged.get(key)
        merged[key] = r if known is None else Refusal(r.message, r.origin, known.symbols | r.symbols)
    return list(merged.values())


# what a message must not print raw: controls (a newline would make two lines, an escape sequence would
# drive the terminal), line separators, bidirectional overrides (they reorder what is shown), and the
# surrogates that stand for the bytes of a name that are not UTF-8
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069"
                          "\ud800-\udfff]")
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return _ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def one_line(message: str) -> str:
    """A message as one printable line: whatever a user gave (a file name, an option's value) may hold
    newlines, terminal escapes or bytes that are not UTF-8; they are shown as escapes (\\n, \\x1b, \\xff)."""
    return _UNPRINTABLE.sub(lambda m: _escape(m.group()), message)


class KlpdiffError(Exception):
    """Base class: `str(err)` is the one-line message shown to the user."""

    exit_code = EXIT_BAD_INPUT


class InputError(KlpdiffError):
    """An input object is missing, truncated, not ELF, or not the kind we diff."""


class RuleError(KlpdiffError):
    """A rule file is broken; the message starts with `file:line:`."""


class LayoutError(KlpdiffError):
    """A special section's entry layout cannot be determined unambiguously."""
