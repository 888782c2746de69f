"""docs/report.md lists every field of the --json reports, and nothing else (checked against the code)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from klpdiff.build.command import BuildResult
from klpdiff.build.report import build_json
from klpdiff.diff.report import SCHEMA, CallbackFacts, LayoutChangeFacts, SpecialSectionFacts

from .conftest import need_tool
from .test_cli import EXAMPLE, FLAGS

DOC = Path(__file__).resolve().parent.parent / "docs" / "report.md"


def _documented(heading: str) -> dict[str, str]:
    """field -> meaning, from the table under `heading`."""
    text = DOC.read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `([a-z_]+)` \| (.*) \|$", section, re.M)}


def _nested(meaning: str) -> set[str]:
    """The sub-fields a meaning names after 'with' (`a`, `b` and `c`)."""
    _before, sep, after = meaning.partition(" with ")
    listed = re.sub(r"\([^)]*\)", "", after.split(";")[0])  # the list itself, not what explains its items
    return set(re.findall(r"`([a-z_]+)`", listed)) if sep else set()


def test_the_differ_s_report_has_exactly_the_documented_fields(tmp_path: Path) -> None:
    gcc = need_tool("x86_64", "gcc")
    orig, patched = tmp_path / "a.o", tmp_path / "b.o"
    subprocess.run([gcc, *FLAGS, str(EXAMPLE), "-o", str(orig)], check=True)
    subprocess.run([gcc, *FLAGS, "-DPATCHED", str(EXAMPLE), "-o", str(patched)], check=True)
    report = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", str(orig), str(patched), "-o", str(tmp_path / "o.o"),
                           "--json", str(report), "-q"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(report.read_text())
    documented = _documented("The differ's report")
    assert list(doc) == list(documented)  # the same fields, in the same order
    assert doc["schema"] == SCHEMA and f"({SCHEMA})" in documented["schema"]
    for entry in doc["special_sections"]:
        assert set(entry) == _nested(documented["special_sections"])


def test_the_build_report_has_exactly_the_documented_fields() -> None:
    doc = build_json(BuildResult())
    documented = _documented("`klpdiff build`'s report")
    assert list(doc) == list(documented)
    assert doc["schema"] == SCHEMA
    assert _nested(documented["objects"]) >= {"object", "objname"}


def test_nested_fields_are_documented_as_the_records_hold_them() -> None:
    documented = _documented("The differ's report")
    for name, facts in (("callbacks", CallbackFacts), ("special_sections", SpecialSectionFacts),
                        ("layout_changes", LayoutChangeFacts)):
        assert {f.name for f in fields(facts)} == _nested(documented[name]), name
