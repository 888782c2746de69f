"""Rule cases (tests/rules/<arch>/*.yaml): C compiled twice by the arch's Debian toolchain, then diffed.

Each output must also read cleanly with `<cross>-readelf -aW` and link with `<cross>-ld -r`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from klpdiff.authoring.cases import load_case, run_case

from .conftest import ROOT, need_tool, readelf_clean, symbols

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
    assert readelf_clean(need_tool(arch, "readelf"), out) == ""
    # every reference resolves to a symbol a linker can find: no assembler label became an undefined symbol
    labels = [s.name for s in symbols(out) if s.shndx == "SHN_UNDEF" and s.name.startswith(".L")]
    assert not labels, labels
    ld = need_tool(arch, "ld")
    linked = subprocess.run([ld, "-r", str(out), "-o", str(tmp_path / "linked.o")], capture_output=True, text=True)
    assert linked.returncode == 0 and not linked.stderr, linked.stderr
