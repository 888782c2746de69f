"""Command-line parsing shared by the diff command (main.py) and the other commands (commands.py).

In: the parsers the commands declare. Out: klpdiff's conventions for all of them: usage errors in one line
with exit 1, help as wide as the terminal, and the options several commands share (`--rules`).
"""

from __future__ import annotations

import argparse
import functools
import shutil
from pathlib import Path
from typing import Any, NoReturn

from ..core.errors import EXIT_BAD_INPUT, one_line


class Parser(argparse.ArgumentParser):
    """argparse with klpdiff's usage exit code (1, not argparse's 2, which means 'refused'), and help
    text as wide as the terminal, asked once: argparse makes a formatter for every argument it adds
    (to check the argument), and each asked the terminal again."""

    def __init__(self, **kwargs: Any) -> None:
        width = shutil.get_terminal_size().columns - 2  # as argparse's formatter computes it
        kwargs.setdefault("formatter_class", functools.partial(argparse.HelpFormatter, width=width))
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, one_line(f"{self.prog}: {message} (see {self.prog} --help)") + "\n")



def add_rules_option(parser: argparse.ArgumentParser) -> None:
    """`--rules DIR`, which every command that loads rules takes."""
    parser.add_argument("--rules", type=Path, action="append", default=[], metavar="DIR",
                        help="extra rule folder (shared *.yaml and <arch>/*.yaml); may repeat")
