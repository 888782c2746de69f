"""`python -m klpdiff.cli`: the klpdiff command."""

from .main import entry

entry()
