"""Command-line parsing shared by the diff command (cli.py) and the other subcommands (tools.py)."""

from __future__ import annotations

import argparse
from typing import NoReturn

from .errors import EXIT_BAD_INPUT


class Parser(argparse.ArgumentParser):
    """argparse with klpdiff's usage exit code (1, not argparse's 2, which means 'refused')."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"klpdiff: {message} (see klpdiff --help)\n")
