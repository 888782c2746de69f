"""The names rules may use come from the view classes each kind of rule sees (views.schema_of)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from klpdiff import views
from klpdiff.expr import ExprError, compile_expr


def test_each_stage_offers_exactly_what_its_view_knows() -> None:
    classify_sym = views.SYMBOL_SCHEMA["sym"]
    assert "included" not in classify_sym and "child" not in classify_sym and "addend" not in classify_sym
    assert {"included", "child"} <= views.CHANGE_SCHEMA["sym"].keys()
    assert "addend" in views.RELOC_SCHEMA["target"] and "addend" not in views.RELOC_SCHEMA["sym"]
    assert "owner" in views.entry_schema(["key"])["key"] and "owner" not in views.RELOC_SCHEMA["target"]
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
