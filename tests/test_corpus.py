"""Every case of the shared kpatch unit-test corpus, checked against expected.yaml.

Needs ../shared/corpus/kpatch-unit beside the checkout (CI has it, a user's clone
does not: then every case is skipped with that reason).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from klpdiff.core.errors import EXIT_NO_CHANGE, EXIT_OK, EXIT_REFUSED, KlpdiffError
from klpdiff.diff.pipeline import Options, run

from .conftest import CORPUS, defined_functions, readelf_clean, relocations, section_data, section_names, symbols, tool

EXPECTED = CORPUS / "expected.yaml"

def _cases() -> list[Any]:
    if not EXPECTED.exists():
        return [pytest.param(None, None, marks=pytest.mark.skip(
            reason=f"corpus not found at {CORPUS} (it lives in ../shared beside the checkout)"), id="no-corpus")]
    cases = yaml.safe_load(EXPECTED.read_text())["cases"]
    params = []
    for key, case in cases.items():
        params.append(pytest.param(key, case, id=key))
    return params


VERDICT_CODES = {"ok": EXIT_OK, "no-change": EXIT_NO_CHANGE, "error": EXIT_REFUSED}

# Where klpdiff answers otherwise than the reference differ on purpose: the case, the verdict and exact
# functions klpdiff gives instead, and why. Each is checked as strictly as the reference's own answer.
DELIBERATE: dict[str, tuple[str, list[str], str]] = {
    "ppc64le/ppc64le-sibling-call-issue-1003": (
        "ok", ["xs_reset_transport", "xs_tcp_shutdown"],
        "kpatch refuses the tail call from xs_tcp_shutdown to the static xs_reset_transport because the callee "
        "would stay in the kernel, in another TOC; klpdiff copies it along as a helper, which shares the "
        "module's TOC (rules/ppc64le/relocations.yaml local_calls; booted in tests/e2e/integration.sh ppc64le)"),
}


@pytest.mark.parametrize(("key", "case"), _cases())
def test_corpus_case(key: str, case: dict[str, Any], tmp_path: Path) -> None:
    arch, name = key.split("/")
    if key in DELIBERATE:
        verdict, functions, _why = DELIBERATE[key]
        case = {**case, "verdict": verdict, "functions": functions}
    orig = CORPUS / arch / f"{name}.ORIG.o"
    patched = CORPUS / arch / case.get("patched", f"{name}.PATCHED.o")
    out = tmp_path / "out.o"
    message = ""
    try:
        outcome = run(orig, patched, out, Options())
        code = outcome.verdict.exit_code
        message = "; ".join(map(str, outcome.analysis.refused))
    except KlpdiffError as err:
        code = err.exit_code
        message = str(err)
    expected = VERDICT_CODES[case["verdict"]]
    assert code == expected, f"exit {code}, expected {expected}" + (f": {message}" if code else "")
    if case["verdict"] != "ok":
        assert not out.exists()
        return
    assert defined_functions(out) == sorted(case["functions"])
    for check in case.get("checks", []):
        _check(out, check)
    readelf, ld = tool(arch, "readelf"), tool(arch, "ld")
    if readelf:
        assert readelf_clean(readelf, out) == ""
    if ld:
        linked = subprocess.run([ld, "-r", str(out), "-o", str(tmp_path / "linked.o")], capture_output=True,
                                text=True)
        assert linked.returncode == 0 and not linked.stderr, linked.stderr


def _check(out: Path, check: dict[str, Any]) -> None:
    (kind, value), = check.items()
    if kind == "has_section":
        assert value in section_names(out)
    elif kind == "symbol_binding":
        found = [s for s in symbols(out) if s.name == value["name"]]
        assert found and all(s.bind == f"STB_{value['bind']}" for s in found), found
    elif kind == "no_undefined_section_symbols":
        assert not [s for s in symbols(out) if s.type == "STT_SECTION" and s.shndx == "SHN_UNDEF"]
    elif kind == "modinfo_count":
        strings = [s for s in section_data(out, ".modinfo").split(b"\0") if s]
        assert sum(1 for s in strings if s.startswith(value["prefix"].encode())) == value["count"]
    elif kind == "reloc":
        want = (value["type"], value["symbol"], value["addend"])
        found_relocs = [r for r in relocations(out) if (r[1], r[2], r[3]) == want
                        and ("section" not in value or r[0] == value["section"])]
        assert found_relocs, f"no relocation {value} in {relocations(out)[:20]}"
    else:
        raise AssertionError(f"unknown check kind {kind}")


def test_refusals_name_the_function() -> None:
    """Refused corpus pairs say which function made the change unpatchable (issue #5's sibling call)."""
    if not EXPECTED.exists():
        pytest.skip(f"corpus not found at {CORPUS}")
    from klpdiff.diff.pipeline import analyse

    named = {"x86_64/meminfo-init": "proc_meminfo_init", "x86_64/meminfo-init2": "proc_meminfo_init"}
    cases = yaml.safe_load(EXPECTED.read_text())["cases"]
    for key, function in named.items():
        arch, name = key.split("/")
        a = analyse(CORPUS / arch / f"{name}.ORIG.o", CORPUS / arch / cases[key]["patched"], Options())
        assert a.refused, key
        named_function = next(s.index for s in a.patched.symbols if s.name == function)
        assert any(named_function in reason.symbols and function in str(reason) for reason in a.refused), \
            (key, a.refused)
