"""Short fixed-seed runs of the three fuzz families (tests/fuzz/): corrupt objects, hostile arguments and
mutated patches never break the input/output contract. The long runs are in the README."""

from __future__ import annotations

from pathlib import Path

from .conftest import e2e_tree, need_tool
from .fuzz import arguments, patches
from .fuzz.fuzz import fuzz


def test_three_hundred_mutants_keep_the_contract(tmp_path: Path) -> None:
    need_tool("x86_64", "gcc")
    need_tool("x86_64", "readelf")
    violations = fuzz(300, 1, tmp_path, report=False)
    assert not violations, "\n".join(violations)


def test_hostile_arguments_keep_the_contract(tmp_path: Path) -> None:
    """Every command, with hostile paths, names and numbers (without a kernel tree: module and build
    are refused at their --kdir, the others run in full)."""
    need_tool("x86_64", "gcc")
    need_tool("x86_64", "readelf")
    violations = arguments.fuzz(80, 1, tmp_path, timeout=60, report=False)
    assert not violations, "\n".join(violations)


def test_mutated_patches_keep_the_contract_and_the_tree(tmp_path: Path) -> None:
    violations = patches.fuzz(16, 1, tmp_path, e2e_tree(), timeout=300, report=False)
    assert not violations, "\n".join(violations)
