"""Command-line parsing shared by the diff command (cli.py) and the other subcommands (tools.py)."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Any, NoReturn

from .errors import EXIT_BAD_INPUT


class Parser(argparse.ArgumentParser):
    """argparse with klpdiff's usage exit code (1, not argparse's 2, which means 'refused'), and help
    text as wide as the terminal, asked once: argparse makes a formatter for every argument it adds
    (to check the argument) and each asked the terminal again, which cost every command 1.5 ms."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", functools.partial(argparse.HelpFormatter, width=_text_width()))
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"klpdiff: {message} (see klpdiff --help)\n")


def _text_width() -> int:
    """The width argparse would use: $COLUMNS, else the terminal's, else 80; less two, as argparse."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns) - 2
    try:
        size = os.get_terminal_size(sys.__stdout__.fileno() if sys.__stdout__ else 1).columns
    except (OSError, ValueError):
        size = 0
    return (size if size > 0 else 80) - 2
