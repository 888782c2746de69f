"""Rule cases (tests/rules/<arch>/*.yaml): C compiled twice by the arch's Debian toolchain, then diffed.

Each output must also read cleanly with `<cross>-readelf -aW`, link with `<cross>-ld -r` and leave no assembler
label undefined (run_case checks it, so `klpdiff rules test` does too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from klpdiff.authoring.cases import load_case, run_case

from .conftest import ROOT, need_tool, symbols

CASES = ROOT / "tests" / "rules"


def _params() -> list[Any]:
    out = []
    for path in sorted(CASES.glob("*/*.yaml")):
        for arch in load_case(path).arches():
            out.append(pytest.param(path, arch, id=f"{arch}/{path.stem}"))
    return out


@pytest.mark.parametrize(("path", "arch"), _params())
def test_rule_case(path: Path, arch: str, tmp_path: Path) -> None:
    need_tool(arch, "gcc")
    result = run_case(path, arch, tmp_path, [],
                      [CASES / "include" / arch, CASES / "include" / "common"])
    assert result.skipped is None, result.skipped
    assert not result.failures, "\n".join(result.failures)
    assert result.outcome is not None
    out = result.outcome.output
    if out is None:
        assert not list(tmp_path.glob("*.out.o")), "an output was written for a refused/no-change case"
        return
    # run_case checked the written object with the arch's binutils (authoring.cases.object_failures); a second
    # reader agrees: pyelftools finds no assembler label left undefined
    labels = [s.name for s in symbols(out) if s.shndx == "SHN_UNDEF" and s.name.startswith(".L")]
    assert not labels, labels
