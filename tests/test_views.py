"""The names rules may use come from the view classes each kind of rule sees (views.schema_of)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from klpdiff.lang import views
from klpdiff.lang.expr import ExprError, compile_expr


def test_each_stage_offers_exactly_what_its_view_knows() -> None:
    classify_sym = views.SYMBOL_SCHEMA["sym"]
    assert "included" not in classify_sym and "child" not in classify_sym and "addend" not in classify_sym
    assert {"included", "child"} <= views.CHANGE_SCHEMA["sym"].keys()
    assert "addend" in views.RELOC_SCHEMA["target"] and "addend" not in views.RELOC_SCHEMA["sym"]
    # who owns what a reference reaches, and whether the livepatch core resolves it: known of targets
    for target in (views.entry_schema(["key"])["key"], views.RELOC_SCHEMA["target"]):
        assert {"owner", "livepatch", "status"} <= target.keys()
    assert "owner" not in views.RELOC_SCHEMA["sym"] and "livepatch" not in views.CHANGE_SCHEMA["sym"]
    assert views.CHANGE_SCHEMA["section"]["functions"] is int
    for schema in (views.SYMBOL_SCHEMA, views.CHANGE_SCHEMA, views.RELOC_SCHEMA, views.SECTION_SCHEMA):
        for root in schema.values():  # the ELF records a view wraps are not for rules
            assert not isinstance(root, dict) or not {"obj", "s", "sec", "included_set"} & root.keys()


def test_a_new_property_of_a_view_is_a_name_rules_can_use() -> None:
    @dataclass(frozen=True)
    class Probe:
        size: int
        _private: str = ""

        @property
        def name(self) -> str:
            return ".text.probe"

        @property
        def weight(self) -> int:
            return 3

    schema = {"section": views.schema_of(Probe)}
    assert schema["section"] == {"size": int, "name": str, "weight": int}
    compile_expr("section.weight > 2", schema)
    with pytest.raises(ExprError, match="matches text"):
        compile_expr("section.weight =~ 'x'", schema)


def test_the_keys_classification_shares_answers_by_cover_every_name_its_rules_see() -> None:
    """classify answers a section or symbol the rules see alike once per pair (views.section_key,
    views.symbol_key): a view property the keys do not cover would give a wrong shared answer. Adding
    one fails here until the key (and this list) say how it is covered."""
    covered_by_section_key = {"name", "text", "alloc", "write", "strings", "nobits", "size"}  # name type flags size
    covered_by_symbol_key = {"name", "type", "bind", "size", "section", "defined", "function", "object"}
    assert set(views.SECTION_SCHEMA["section"]) == covered_by_section_key
    assert set(views.SYMBOL_SCHEMA["sym"]) == covered_by_symbol_key
    assert set(views.SYMBOL_SCHEMA) == {"sym", "section"}


def test_a_pair_classified_with_shared_answers_is_classified_as_alone() -> None:
    from pathlib import Path

    from klpdiff.diff.classify import Seen, classify
    from klpdiff.elf.read import read_elf
    from klpdiff.ruleset.load import default_rules_dir, load_ruleset

    from .conftest import CORPUS

    pairs = sorted(CORPUS.glob("*/*ASSERT_RTNL*.ORIG.o"))
    if not pairs:
        pytest.skip(f"{CORPUS} not found (the public corpus: ../shared)")
    for orig_path in pairs:
        orig = read_elf(orig_path)
        patched = read_elf(Path(str(orig_path).replace(".ORIG.o", ".PATCHED.o")))
        arch = orig_path.parent.name
        rs = load_ruleset([default_rules_dir()], arch)
        seen = Seen()
        shared = (classify(orig, rs, seen), classify(patched, rs, seen))
        assert shared == (classify(orig, rs), classify(patched, rs)), arch
        assert len(seen.sections) < len(orig.sections) + len(patched.sections)  # answers were shared
