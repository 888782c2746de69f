"""A short fixed-seed run of the mutation fuzzer (tests/fuzz/fuzz.py): corrupt objects never break the
input/output contract. The long run is `python3 tests/fuzz/fuzz.py --cases 20000` (README)."""

from __future__ import annotations

from pathlib import Path

from .conftest import need_tool
from .fuzz.fuzz import fuzz


def test_three_hundred_mutants_keep_the_contract(tmp_path: Path) -> None:
    need_tool("x86_64", "gcc")
    need_tool("x86_64", "readelf")
    violations = fuzz(300, 1, tmp_path, report=False)
    assert not violations, "\n".join(violations)
