"""Refusals are records: what they are about is a set of symbols, not a name found in their text."""

from __future__ import annotations

import pytest

from klpdiff.core.errors import Origin, Refusal, one_per_reason

from .conftest import CORPUS


def test_one_line_per_reason_keeps_every_symbol_it_is_about() -> None:
    rule = Origin("rules/x.yaml", 3)
    merged = one_per_reason([Refusal("f calls g badly", rule, frozenset({1, 2})),
                             Refusal("f calls g badly", rule, frozenset({1, 5})),
                             Refusal("f calls g badly", Origin("rules/y.yaml", 9), frozenset({1})),
                             Refusal("engine's own", None)])
    assert [str(r) for r in merged] == ["f calls g badly [rules/x.yaml:3]", "f calls g badly [rules/y.yaml:9]",
                                        "engine's own"]
    assert merged[0].symbols == {1, 2, 5}


def test_explain_lists_the_refusals_about_the_symbol_and_no_others() -> None:
    orig, patched = CORPUS / "x86_64" / "meminfo-init.ORIG.o", CORPUS / "x86_64" / "meminfo-init.PATCHED.FAIL.o"
    if not orig.exists():
        pytest.skip(f"corpus not found at {CORPUS}")
    from klpdiff.authoring.explain import explain
    from klpdiff.diff.pipeline import Options, analyse

    a = analyse(orig, patched, Options())
    (reason,) = a.refused
    about = next(s for s in a.patched.symbols if s.name == "proc_meminfo_init")
    assert reason.symbols == {about.index}
    assert f"  refused: {reason}" in explain(a, "proc_meminfo_init")
    assert not [line for line in explain(a, "meminfo_proc_show") if line.startswith("  refused:")]
