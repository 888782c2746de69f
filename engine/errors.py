"""Error types and the exit codes the command line maps them to.

Exit codes (the first three are kpatch's): 0 diff written, 3 nothing changed,
2 the change cannot be livepatched, 1 bad input or usage, 4 internal error.
"""

from __future__ import annotations

from enum import StrEnum

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


class KlpdiffError(Exception):
    """Base class: `str(err)` is the one-line message shown to the user."""

    exit_code = EXIT_BAD_INPUT


class InputError(KlpdiffError):
    """An input object is missing, truncated, not ELF, or not the kind we diff."""


class RuleError(KlpdiffError):
    """A rule file is broken; the message starts with `file:line:`."""


class LayoutError(KlpdiffError):
    """A special section's entry layout cannot be determined unambiguously."""


class Refused(KlpdiffError):
    """The change cannot be livepatched; `reasons` lists every reason found."""

    exit_code = EXIT_REFUSED

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons
